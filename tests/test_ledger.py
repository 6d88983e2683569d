"""The ledger: one exclusive, atomic JSON record per cell."""

import json
import math
import os

import pytest

from tf_sgd_regimes import atomic
from tf_sgd_regimes.sweep import ledger


def record(cell_id="sgd_B00064_lr0.25_E1_s0", status="complete", **metrics):
    return {"cell_id": cell_id, "status": status, "hparams": {"batch_size": 64},
            "metrics": metrics or {"test_accuracy": 0.5}, "attempt": 1}


def files(workdir):
    return sorted(os.listdir(ledger.ledger_dir(workdir)))


def test_append_then_read_round_trips(tmp_path):
    workdir = str(tmp_path)
    assert ledger.read(workdir) == []
    first = record("b_cell", test_accuracy=0.75)
    second = record("a_cell", status="diverged", test_accuracy=None)
    assert ledger.append(workdir, first) and ledger.append(workdir, second)
    assert ledger.read(workdir) == [second, first]  # sorted by cell_id
    assert ledger.done_cell_ids(ledger.read(workdir)) == {"a_cell", "b_cell"}
    assert files(workdir) == ["a_cell.json", "b_cell.json"]


def test_append_is_exclusive(tmp_path):
    workdir = str(tmp_path)
    assert ledger.append(workdir, record(test_accuracy=0.5)) is True
    path = os.path.join(ledger.ledger_dir(workdir), files(workdir)[0])
    before = open(path, "rb").read()
    assert ledger.append(workdir, record(test_accuracy=0.9)) is False
    assert open(path, "rb").read() == before
    assert ledger.read(workdir)[0]["metrics"]["test_accuracy"] == 0.5
    assert len(files(workdir)) == 1  # and no temporary file is left behind


def test_non_finite_numbers_are_stored_as_null(tmp_path):
    workdir = str(tmp_path)
    rec = record(train_loss=float("nan"), test_loss=float("inf"), test_accuracy=-math.inf,
                 train_accuracy=0.25)
    rec["history"] = [1.0, float("nan")]
    ledger.append(workdir, rec)
    text = open(os.path.join(ledger.ledger_dir(workdir), files(workdir)[0])).read()
    assert "NaN" not in text and "Infinity" not in text
    stored = json.loads(text)  # strict JSON everywhere
    assert stored["metrics"] == {"train_loss": None, "test_loss": None, "test_accuracy": None,
                                 "train_accuracy": 0.25}
    assert stored["history"] == [1.0, None]


def test_unknown_status_is_refused(tmp_path):
    with pytest.raises(ValueError, match="status"):
        ledger.append(str(tmp_path), record(status="running"))
    assert ledger.read(str(tmp_path)) == []


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],  # truncated by a crash of another tool
    lambda text: "",
    lambda text: text.replace('"status": "complete"', '"status": "bogus"'),
    lambda text: text.replace('"cell_id": "good"', '"cell_id": "other"'),
])
def test_damaged_record_raises_naming_the_path(tmp_path, damage):
    workdir = str(tmp_path)
    ledger.append(workdir, record("good"))
    path = os.path.join(ledger.ledger_dir(workdir), "good.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(damage(text))
    with pytest.raises(ledger.LedgerError, match=path):
        ledger.read(workdir)


def test_temporary_files_never_look_like_records(tmp_path):
    workdir = str(tmp_path)
    ledger.append(workdir, record("kept"))
    directory = ledger.ledger_dir(workdir)
    # What a writer killed mid-write leaves: half a record under a temporary name.
    with open(os.path.join(directory, ".tmp-abc123.part"), "w") as f:
        f.write('{"cell_id": "half", "sta')
    assert [r["cell_id"] for r in ledger.read(workdir)] == ["kept"]

    # A record that cannot be serialised fails without leaving anything behind.
    bad = record("unserialisable")
    bad["metrics"] = {"test_accuracy": object()}
    with pytest.raises(TypeError):
        ledger.append(workdir, bad)
    assert sorted(f for f in files(workdir) if not f.startswith(".tmp-abc")) == ["kept.json"]
    assert [r["cell_id"] for r in ledger.read(workdir)] == ["kept"]


def test_write_atomic_replaces_whole_files(tmp_path):
    path = str(tmp_path / "sub" / "config.json")
    atomic.write_atomic(path, "first\n")
    atomic.write_atomic(path, "second\n")
    assert open(path).read() == "second\n"
    assert os.listdir(tmp_path / "sub") == ["config.json"]


def test_concurrent_appends_of_one_cell_write_exactly_once(tmp_path):
    import concurrent.futures

    workdir = str(tmp_path)
    candidates = [record("contested", test_accuracy=i / 10) for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda r: ledger.append(workdir, r), candidates))
    assert outcomes.count(True) == 1
    winner = candidates[outcomes.index(True)]
    assert ledger.read(workdir) == [winner]
    assert files(workdir) == ["contested.json"]
