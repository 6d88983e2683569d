"""The ledger: exclusive, atomic segments of records (one per pack), and old per-cell files."""

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


def test_commit_then_read_round_trips(tmp_path):
    workdir = str(tmp_path)
    assert ledger.read(workdir) == []
    first = record("b_cell", test_accuracy=0.75)
    second = record("a_cell", status="diverged", test_accuracy=None)
    assert ledger.commit(workdir, [first, second]) == [first, second]
    assert ledger.read(workdir) == [second, first]  # sorted by cell_id
    assert ledger.done_cell_ids(ledger.read(workdir)) == {"a_cell", "b_cell"}
    assert files(workdir) == ["seg-00000001.jsonl"]  # one file for the pack
    assert ledger.append(workdir, record("c_cell"))  # a segment of one
    assert files(workdir) == ["seg-00000001.jsonl", "seg-00000002.jsonl"]
    with open(os.path.join(ledger.ledger_dir(workdir), "seg-00000001.jsonl")) as f:
        header, *lines = f.read().splitlines()
    assert json.loads(header) == {"format": ledger.FORMAT, "records": 2}
    assert [json.loads(line)["cell_id"] for line in lines] == ["b_cell", "a_cell"]


def test_a_cell_is_recorded_once_whoever_commits_it_again(tmp_path):
    workdir = str(tmp_path)
    assert ledger.append(workdir, record("x", test_accuracy=0.5)) is True
    before = open(os.path.join(ledger.ledger_dir(workdir), files(workdir)[0]), "rb").read()
    assert ledger.append(workdir, record("x", test_accuracy=0.9)) is False
    assert files(workdir) == ["seg-00000001.jsonl"]  # nothing written, no temporary left
    # A pack holding a recorded cell records only the others.
    written = ledger.commit(workdir, [record("x", test_accuracy=0.1), record("y")])
    assert [r["cell_id"] for r in written] == ["y"]
    assert open(os.path.join(ledger.ledger_dir(workdir), files(workdir)[0]), "rb").read() \
        == before
    assert [r["metrics"]["test_accuracy"] for r in ledger.read(workdir)] == [0.5, 0.5]


def test_a_writer_that_lost_the_race_for_a_number_reads_it_and_takes_the_next(tmp_path):
    workdir = str(tmp_path)
    a, b = ledger.Ledger(workdir), ledger.Ledger(workdir)  # two workers, both saw nothing
    assert [r["cell_id"] for r in a.commit([record("x"), record("y")])] == ["x", "y"]
    assert not b.is_done("z")
    written = b.commit([record("y", test_accuracy=0.9), record("z")])
    assert [r["cell_id"] for r in written] == ["z"]  # y was a's: dropped
    assert files(workdir) == ["seg-00000001.jsonl", "seg-00000002.jsonl"]
    assert a.is_done("z") and a.record("z")["cell_id"] == "z"  # a finds b's segment
    assert a.path_of("z").endswith("seg-00000002.jsonl")
    assert [r["metrics"]["test_accuracy"] for r in ledger.read(workdir)] == [0.5] * 3


def test_concurrent_commits_record_every_cell_exactly_once(tmp_path):
    import concurrent.futures

    workdir = str(tmp_path)
    # 8 writers, each with its own view, commit overlapping packs of 20 cells.
    packs = [[record(f"cell{(7 * w + i) % 40:02d}", test_accuracy=w / 10) for i in range(20)]
             for w in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        written = list(pool.map(lambda p: ledger.Ledger(workdir).commit(p), packs))
    on_disk = []
    for name in files(workdir):
        with open(os.path.join(ledger.ledger_dir(workdir), name)) as f:
            on_disk.extend(json.loads(line)["cell_id"] for line in f.read().splitlines()[1:])
    assert sorted(on_disk) == sorted({r["cell_id"] for p in packs for r in p})  # once each
    assert sum(len(w) for w in written) == len(on_disk) == 40
    assert [r["cell_id"] for r in ledger.read(workdir)] == sorted(on_disk)


def test_non_finite_numbers_are_stored_as_null(tmp_path):
    workdir = str(tmp_path)
    rec = record(train_loss=float("nan"), test_loss=float("inf"), test_accuracy=-math.inf,
                 train_accuracy=0.25)
    rec["history"] = [1.0, float("nan")]
    ledger.append(workdir, rec)
    text = open(os.path.join(ledger.ledger_dir(workdir), files(workdir)[0])).read()
    assert "NaN" not in text and "Infinity" not in text
    stored = json.loads(text.splitlines()[1])  # strict JSON everywhere
    assert stored["metrics"] == {"train_loss": None, "test_loss": None, "test_accuracy": None,
                                 "train_accuracy": 0.25}
    assert stored["history"] == [1.0, None]


def test_unknown_status_is_refused(tmp_path):
    with pytest.raises(ValueError, match="status"):
        ledger.commit(str(tmp_path), [record("ok"), record(status="running")])
    assert ledger.read(str(tmp_path)) == []


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],  # cut (e.g. a power cut before fsync)
    lambda text: text[:text.rindex("{")],  # cut right after a line: the count tells
    lambda text: text[:-1],  # the last line's newline missing
    lambda text: text[text.index("\n") + 1:],  # no header
    lambda text: text.replace('"status": "complete"', '"status": "bogus"', 1),
    lambda text: text.replace('"cell_id": "good"', '"id": "good"'),
    lambda text: "garbage\n" + text,
])
def test_damaged_segment_raises_naming_the_path_and_the_fix(tmp_path, damage):
    workdir = str(tmp_path)
    ledger.commit(workdir, [record("good"), record("other")])
    path = os.path.join(ledger.ledger_dir(workdir), "seg-00000001.jsonl")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(damage(text))
    with pytest.raises(ledger.LedgerError, match=path) as error:
        ledger.read(workdir)
    assert f"mv {path} {path}.corrupt" in str(error.value)
    os.rename(path, path + ".corrupt")  # what it says to do: those cells train again
    assert ledger.read(workdir) == []
    assert ledger.commit(workdir, [record("good")])


def test_temporary_files_never_look_like_records(tmp_path):
    workdir = str(tmp_path)
    ledger.append(workdir, record("kept"))
    directory = ledger.ledger_dir(workdir)
    # What a writer killed mid-write leaves: half a pack under a temporary name.
    with open(os.path.join(directory, ".tmp-abc123.part"), "w") as f:
        f.write('{"cell_id": "half", "sta')
    assert [r["cell_id"] for r in ledger.read(workdir)] == ["kept"]

    # A pack with a record that cannot be serialised fails without leaving anything.
    bad = record("unserialisable")
    bad["metrics"] = {"test_accuracy": object()}
    with pytest.raises(TypeError):
        ledger.commit(workdir, [record("fine"), bad])
    assert [f for f in files(workdir) if not f.startswith(".tmp-abc")] == ["seg-00000001.jsonl"]
    assert [r["cell_id"] for r in ledger.read(workdir)] == ["kept"]


def test_write_atomic_replaces_whole_files(tmp_path):
    path = str(tmp_path / "sub" / "config.json")
    atomic.write_atomic(path, "first\n")
    atomic.write_atomic(path, "second\n")
    assert open(path).read() == "second\n"
    assert os.listdir(tmp_path / "sub") == ["config.json"]


def _old_record_file(workdir, rec, text=None):
    """A record as earlier versions wrote it: ledger/<cell_id>.json."""
    os.makedirs(ledger.ledger_dir(workdir), exist_ok=True)
    path = os.path.join(ledger.ledger_dir(workdir), f"{rec['cell_id']}.json")
    with open(path, "w") as f:
        f.write(text if text is not None else json.dumps(rec, sort_keys=True) + "\n")
    return path


def test_an_old_work_directory_with_one_file_per_cell_is_read_and_extended(tmp_path):
    workdir = str(tmp_path)
    _old_record_file(workdir, record("old_a"))
    _old_record_file(workdir, record("old_b", status="diverged"))
    view = ledger.Ledger(workdir)
    assert view.is_done("old_a") and view.record("old_b")["status"] == "diverged"
    written = view.commit([record("old_a", test_accuracy=0.9), record("new_c")])
    assert [r["cell_id"] for r in written] == ["new_c"]  # old records stay the terminal ones
    assert [r["cell_id"] for r in ledger.read(workdir)] == ["new_c", "old_a", "old_b"]
    assert ledger.read(workdir)[1]["metrics"] == {"test_accuracy": 0.5}
    path = _old_record_file(workdir, record("old_d"), text='{"cell_id": "other", "status": '
                            '"complete"}')
    with pytest.raises(ledger.LedgerError, match=path):
        ledger.read(workdir)


def test_retry_failed_takes_failed_records_out_and_keeps_them_aside(tmp_path, capsys):
    workdir = str(tmp_path)
    ledger.commit(workdir, [record("a"), record("b", status="failed")])
    ledger.commit(workdir, [record("c", status="failed")])
    _old_record_file(workdir, record("d", status="failed"))
    assert ledger.main(["--workdir", workdir, "--retry_failed"]) == 0
    assert "3 failed cells will train again" in capsys.readouterr().out
    assert [r["cell_id"] for r in ledger.read(workdir)] == ["a"]
    retired = os.listdir(os.path.join(ledger.ledger_dir(workdir), "retired"))
    assert len(retired) == 3
    # Numbers stay consecutive (an emptied segment stays), so new writers find the end.
    view = ledger.Ledger(workdir)
    assert [r["cell_id"] for r in view.commit([record("b"), record("c")])] == ["b", "c"]
    assert view.path_of("b").endswith("seg-00000003.jsonl")
    assert ledger.main(["--workdir", workdir]) == 0
    assert "3 records" in capsys.readouterr().out
