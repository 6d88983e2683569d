"""The paper's appendix tables 2-7 (Smith, Elsen & De 2020) as package data, with lookups.

`paper_tables.json` holds, per table: its number, model, data set, budget, best k of n, a
gist of the caption, metric names and units, and rows (optimizer, batch size, test and
training metric mean and std, optimal effective LR and range). Learning rates are stored
as {"value": number, "text": as printed}, e.g. {"value": 0.0625, "text": "2^-4"}.
"""

import functools
import json
from importlib import resources

import pandas as pd

_FILE = "paper_tables.json"


@functools.lru_cache(maxsize=1)
def _load() -> dict:
    return json.loads(resources.files(__name__).joinpath(_FILE).read_text())


def source() -> str:
    return _load()["source"]


def table_ids() -> list:
    return sorted(_load()["tables"])


def get_table(table_id: str) -> dict:
    """The table's metadata and rows; unknown ids list the known ones."""
    tables = _load()["tables"]
    if table_id not in tables:
        raise ValueError(f"unknown paper table {table_id!r} (config.analysis.paper_reference); "
                         f"known: {sorted(tables)}")
    return tables[table_id]


def rows_frame(table_id: str) -> pd.DataFrame:
    """The table's rows as a DataFrame; learning rates as numbers plus *_text columns."""
    rows = []
    for row in get_table(table_id)["rows"]:
        flat = {k: v for k, v in row.items() if not isinstance(v, dict) and v is not None}
        for key in ("effective_lr", "lr_low", "lr_high"):
            entry = row.get(key)
            flat[key] = entry["value"] if entry else float("nan")
            flat[f"{key}_text"] = entry["text"] if entry else ""
        for key in ("test_std", "train_std"):
            flat[key] = float("nan") if row.get(key) is None else row[key]
        rows.append(flat)
    return pd.DataFrame(rows)
