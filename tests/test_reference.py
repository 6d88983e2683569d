"""The packaged paper tables match the appendix's printed numbers (parsed independently)."""

import math
import os
import re

import pytest

from tf_sgd_regimes import reference

# Beside the repository (../shared) or, from a git worktree, one level further up.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPENDIX = next((path for path in (
    os.path.join(_REPO, *up, "shared", "paper", "appendix.md") for up in ([".."], ["..", ".."]))
    if os.path.exists(path)), os.path.join(_REPO, "..", "shared", "paper", "appendix.md"))

# A few rows quoted verbatim from the appendix, so the check runs even without the file.
QUOTED = {
    "table3": ["16\t92.6 ± 0.2\t0.349 ± 0.004\t2 <sup>-4</sup> (2 <sup>-4</sup> to 2 <sup>-2</sup> )",  # noqa: E501
               "512\t94.1 ± 0.1\t0.043 ± 0.000\t2 <sup>-0</sup> (2 <sup>-1</sup> to 2 <sup>1</sup> )"],  # noqa: E501
    "table4": ["8192\t78.1 ± 0.4\t0.045 ± 0.001\t2 <sup>5</sup> (2 <sup>1</sup> to 2 <sup>5</sup> )"],  # noqa: E501
    "table5": ["32\t77.9 ± 0.2\t0.0512 ± 0.0611\t0.025 (0.025 to 0.050)"],
    "table6": ["128\t86.04 ± 0.49\t21.16 ± 0.06\t5.6 (5.6 to 5.6)"],
    "table7": ["1024\t$2.96 \\pm 0.01$\t$2.005 \\pm 0.011$\t0.08 (0.08 to 0.08)"],
}


def _lr(text):
    text = text.strip()
    power = re.fullmatch(r"2 <sup>(-?\d+)</sup>", text)
    return 2.0 ** int(power.group(1)) if power else float(text)


def parse_row(line):
    """(batch, test mean, test std, train mean, train std, lr, low, high) from a table line."""
    cells = [c.replace("$", "").replace("\\pm", "±").strip() for c in line.split("\t")]
    batch = int(cells[0])
    test_mean, test_std = (float(v) for v in cells[1].split("±"))
    train_mean, train_std = (float(v) for v in cells[2].split("±"))
    match = re.fullmatch(r"(.+?)\s*\((.+?) to (.+?)\s*\)", cells[3])
    return (batch, test_mean, test_std, train_mean, train_std,
            _lr(match.group(1)), _lr(match.group(2)), _lr(match.group(3)))


def _check(table_id, parsed):
    rows = {r["batch_size"]: r for r in reference.get_table(table_id)["rows"]}
    batch, tm, ts, rm, rs, lr, low, high = parsed
    row = rows[batch]
    assert (row["test_mean"], row["test_std"], row["train_mean"], row["train_std"]) == (
        tm, ts, rm, rs), (table_id, batch)
    assert math.isclose(row["effective_lr"]["value"], lr), (table_id, batch)
    assert math.isclose(row["lr_low"]["value"], low) and math.isclose(row["lr_high"]["value"],
                                                                      high), (table_id, batch)


@pytest.mark.parametrize("table_id", sorted(QUOTED))
def test_quoted_rows_match(table_id):
    for line in QUOTED[table_id]:
        _check(table_id, parse_row(line))


def _appendix_tables(text):
    """{table id: [row lines]} for tables 3-7: tab-separated lines under each caption."""
    tables, current = {}, None
    for line in text.splitlines():
        caption = re.match(r"Table (\d)\. ", line)
        if caption:
            current = f"table{caption.group(1)}"
            tables[current] = []
        elif current and re.match(r"\d+\t", line):
            tables[current].append(line)
        elif current and tables[current] and not line.strip():
            current = None
    return tables


@pytest.mark.skipif(not os.path.exists(APPENDIX), reason="paper appendix not beside the repo")
def test_every_row_of_tables_3_to_7_matches_appendix():
    with open(APPENDIX) as f:
        text = f.read()
    tables = _appendix_tables(text)
    for table_id in ("table3", "table4", "table5", "table6", "table7"):
        lines = tables[table_id]
        assert len(lines) == len(reference.get_table(table_id)["rows"]), table_id
        for line in lines:
            _check(table_id, parse_row(line))
    # table 2 has no std or range: "SGD\t256\t77.0\t2.25\t1.0" then continuation rows
    block = text[text.index("Table 2."):text.index("Figure 7.")]
    optimizer, rows = None, []
    for line in block.splitlines():
        cells = line.split("\t")
        if len(cells) == 5 and re.fullmatch(r"\d+", cells[1].strip()):
            optimizer = {"SGD": "sgd", "Momentum": "momentum"}.get(cells[0].strip(), optimizer)
            rows.append((optimizer, int(cells[1]), *(float(c) for c in cells[2:])))
    ours = [(r["optimizer"], r["batch_size"], r["test_mean"], r["train_mean"],
             r["effective_lr"]["value"]) for r in reference.get_table("table2")["rows"]]
    assert rows == ours


def test_lookup_and_frame():
    with pytest.raises(ValueError, match="known: .*table3"):
        reference.get_table("table9")
    frame = reference.rows_frame("table3")
    row = frame[frame["batch_size"] == 512].iloc[0]
    assert row["effective_lr"] == 1.0 and row["effective_lr_text"] == "2^-0"
    assert frame["lr_low"].min() == 2.0 ** -4
    assert reference.table_ids() == [f"table{i}" for i in range(2, 8)]
    assert math.isnan(reference.rows_frame("table2")["test_std"].iloc[0])
