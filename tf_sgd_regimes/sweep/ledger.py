"""The per-cell records of a sweep: schema, exclusive atomic commits, reading.

The ledger is a directory `<workdir>/ledger/` of segments, one per pack:

  ledger/seg-00000001.jsonl   the terminal records of one pack's cells, one JSON object a
  ledger/seg-00000002.jsonl   line after a header line {"format": ..., "records": n},
                              numbered in the order they were committed

A segment is written whole to a temporary name, fsync'd, then linked to the next free
number with os.link, which fails if that name exists. A writer first reads every segment
it has not seen and drops the records of cells that already have one, so when its link
succeeds no segment before it holds its cells; when the link fails, another writer took
that number: it reads that segment, drops what it recorded, and tries the next number.
So a terminal record is created exactly once and never rewritten, with any number of
workers on one file system, and a killed process leaves whole segments only (its
temporary file is not a segment). A pack's records become durable together, with one
fsync of one file, where one file per cell cost a directory entry and a 4 KB block each
(13,530 cells: 55 MB on disk for 11 MB of records).

Work directories of earlier versions hold one file per cell, `ledger/<cell_id>.json`;
they are read as they are (and new records go to segments beside them).

A record (a dict) holds:
  cell_id       str, e.g. "momentum_b0064_lr0.125_s002"
  experiment    str
  status        "complete" | "diverged" | "failed"
  hparams       {"optimizer": "sgd"|"momentum", "momentum": float, "batch_size": int,
                 "effective_lr": float, "learning_rate": float, "seed": int,
                 "epochs": float, "steps": int}
  metrics       {name: float or None}; for a classification task "test_accuracy",
                "test_loss", "train_loss", "train_accuracy"; language model "test_perplexity",
                "train_perplexity", ...; autoencoder "test_mse", "train_mse". None where the
                run diverged.
  diverged_step int or None: the first step whose loss was non-finite or above the bound
  error         str or None (status "failed")
  steps_done    int
  wall_time_s   float: the pack's wall time divided by its members
  attempt       int: 1 for the first run of the cell, more after a crash
  config_hash   str: hash of the experiment config (sweep grid excluded) and of the data
  data          {"name", "task", "num_train", "num_test", "hash", ...}: the data set's
                fingerprint (data/base.fingerprint), None for the noisy quadratic model
  versions      {"tf_sgd_regimes", "tensorflow", "keras", "keras_tuner", "python"}
  created       ISO-8601 UTC time
  pack_id       str: which pack trained it
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
from typing import Dict, Iterable, List, Optional, Sequence

from tf_sgd_regimes.atomic import write_atomic

STATUSES = ("complete", "diverged", "failed")
FORMAT = "tf_sgd_regimes.ledger.segment/1"
SEGMENT_PREFIX, SEGMENT_SUFFIX = "seg-", ".jsonl"


class LedgerError(RuntimeError):
    """A record file that cannot be read; the message names the file."""


def ledger_dir(workdir: str) -> str:
    return os.path.join(workdir, "ledger")


def segment_name(number: int) -> str:
    return f"{SEGMENT_PREFIX}{number:08d}{SEGMENT_SUFFIX}"


def _segment_number(name: str) -> Optional[int]:
    if name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX):
        digits = name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)]
        if digits.isdigit():
            return int(digits)
    return None


def _is_cell_file(name: str) -> bool:
    """A record file of an earlier version: <cell_id>.json."""
    return name.endswith(".json") and not name.startswith(".")


def _clean(value):
    """JSON has no NaN/inf: store them as None so every file parses everywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _fsync_dir(directory: str) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _corrupt(path: str, why: str, cells: str) -> LedgerError:
    return LedgerError(
        f"ledger file {path} {why}. A record is written once and never rewritten, so it "
        f"cannot be repaired: move it aside (mv {path} {path}.corrupt) and re-run the same "
        f"command to train {cells} again")


def _parse_record(text: str, path: str, cells: str) -> dict:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise _corrupt(path, f"is corrupt ({e})", cells) from e
    if not isinstance(record, dict) or record.get("status") not in STATUSES or not \
            isinstance(record.get("cell_id"), str):
        raise _corrupt(path, "is not a valid record (each record needs a cell_id and a "
                       f"status among {STATUSES})", cells)
    return record


def _read_file(path: str) -> List[dict]:
    """The records of a segment, or the one record of an old per-cell file."""
    name = os.path.basename(path)
    is_segment = _segment_number(name) is not None
    cells = "the cells it holds" if is_segment else "that cell"
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise _corrupt(path, f"cannot be read ({e})", cells) from e
    if not is_segment:
        record = _parse_record(text, path, cells)
        if f"{record['cell_id']}.json" != name:
            raise _corrupt(path, "is not a valid record (its cell_id must match the file "
                           "name)", cells)
        return [record]
    lines = text.splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _corrupt(path, f"does not start with a segment header ({FORMAT})", cells)
    # The header's count and a newline after every line tell a cut file from a whole one.
    if not text.endswith("\n") or len(lines) - 1 != header.get("records"):
        raise _corrupt(path, f"is truncated (it holds {len(lines) - 1} of the "
                       f"{header.get('records')} records it was written with)", cells)
    return [_parse_record(line, path, cells) for line in lines[1:]]


def _segment_text(lines: Sequence[str]) -> str:
    header = json.dumps({"format": FORMAT, "records": len(lines)}, sort_keys=True)
    return "".join(line + "\n" for line in [header, *lines])


class Ledger:
    """One process's view of a work directory's ledger: which cells are recorded.

    The directory is listed once; afterwards the segments other writers commit are
    found by probing the next numbers, so checking a cell and committing a pack cost
    the same at the 100,000th cell as at the first. Records themselves are read on
    demand (record(), read()), not held in memory.
    """

    def __init__(self, workdir: str):
        self.directory = ledger_dir(workdir)
        self._where: Dict[str, str] = {}  # cell_id -> file holding its record
        self._next = 1  # the lowest segment number not yet seen
        self._cache = (None, {})  # (path, cell_id -> record) of the last file read
        names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
        numbers = sorted(n for n in map(_segment_number, names) if n is not None)
        for name in sorted(names):
            if _segment_number(name) is None and _is_cell_file(name):
                # An old per-cell file: its name is its cell (checked when read).
                self._where[name[:-len(".json")]] = name
        for number in numbers:
            self._index(number)
        self._next = numbers[-1] + 1 if numbers else 1

    def _index(self, number: int) -> List[dict]:
        name = segment_name(number)
        records = _read_file(os.path.join(self.directory, name))
        for record in records:
            self._where.setdefault(record["cell_id"], name)
        return records

    def refresh(self) -> None:
        """Reads the segments other writers committed since the last look."""
        while os.path.exists(os.path.join(self.directory, segment_name(self._next))):
            self._index(self._next)
            self._next += 1

    def is_done(self, cell_id: str) -> bool:
        """True if the cell has a terminal record (looks for new segments when not known)."""
        if cell_id in self._where:
            return True
        self.refresh()
        return cell_id in self._where

    def done_cell_ids(self) -> set:
        self.refresh()
        return set(self._where)

    def path_of(self, cell_id: str) -> Optional[str]:
        """The file holding the cell's record (None when it has none)."""
        name = self._where.get(cell_id) if self.is_done(cell_id) else None
        return None if name is None else os.path.join(self.directory, name)

    def record(self, cell_id: str) -> Optional[dict]:
        path = self.path_of(cell_id)
        if path is None:
            return None
        if self._cache[0] != path:
            self._cache = (path, {r["cell_id"]: r for r in _read_file(path)})
        return self._cache[1].get(cell_id)

    def commit(self, records: Sequence[dict], sync: bool = True) -> List[dict]:
        """Records the cells of `records` that have no record yet, as one segment.

        sync=False skips the fsyncs (a killed process still leaves whole segments; a
        power cut may lose the last ones).

        Returns:
          the records written (those of cells recorded before are left out).
        """
        for record in records:
            if record.get("status") not in STATUSES:
                raise ValueError(f"record status {record.get('status')!r} not in {STATUSES}")
        # Serialised before anything touches the disk: a bad record leaves no trace.
        lines = [(record, json.dumps(_clean(record), sort_keys=True, allow_nan=False))
                 for record in records]
        os.makedirs(self.directory, exist_ok=True)
        while True:
            self.refresh()
            seen, todo = set(), []
            for record, line in lines:
                cell_id = record["cell_id"]
                if cell_id not in self._where and cell_id not in seen:
                    seen.add(cell_id)
                    todo.append((record, line))
            if not todo:
                return []
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(_segment_text([line for _, line in todo]))
                    f.flush()
                    if sync:
                        os.fsync(f.fileno())
                name = segment_name(self._next)
                try:
                    os.link(tmp, os.path.join(self.directory, name))
                except FileExistsError:
                    continue  # another writer took this number: read it, try the next
            finally:
                os.unlink(tmp)
            if sync:
                _fsync_dir(self.directory)
            for record, _ in todo:
                self._where[record["cell_id"]] = name
            self._next += 1
            return [record for record, _ in todo]

    def read(self) -> List[dict]:
        """All records, sorted by cell_id."""
        self.refresh()
        by_file: Dict[str, List[str]] = {}
        for cell_id, name in self._where.items():
            by_file.setdefault(name, []).append(cell_id)
        records = []
        for name in sorted(by_file):
            wanted = set(by_file[name])
            records.extend(r for r in _read_file(os.path.join(self.directory, name))
                           if r["cell_id"] in wanted and self._where[r["cell_id"]] == name)
        records.sort(key=lambda r: r["cell_id"])
        return records


def commit(workdir: str, records: Sequence[dict], sync: bool = True) -> List[dict]:
    """Ledger(workdir).commit(records): one segment of the records of new cells."""
    return Ledger(workdir).commit(records, sync=sync)


def append(workdir: str, record: dict, sync: bool = True) -> bool:
    """Writes `record` as the cell's terminal record unless one exists (a segment of one:
    a sweep commits a pack's records together, see Ledger.commit).

    Returns:
      True if written, False if the cell already had a record (left untouched).
    """
    return bool(commit(workdir, [record], sync=sync))


def read(workdir: str) -> List[dict]:
    """All records, sorted by cell_id. A file that does not parse raises LedgerError."""
    return Ledger(workdir).read()


def done_cell_ids(records: Iterable[dict]) -> set:
    return {r["cell_id"] for r in records}


def retry_failed(workdir: str) -> List[str]:
    """Takes the `failed` records out of the ledger, so the next run trains those cells
    again; returns their cell ids. Run it while no sweep runs in the work directory.

    A segment holding failed records is replaced (atomically) by one without them; the
    removed records are kept in ledger/retired/ for the record.
    """
    directory = ledger_dir(workdir)
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    retried = []
    for name in names:
        if _segment_number(name) is None and not _is_cell_file(name):
            continue
        path = os.path.join(directory, name)
        records = _read_file(path)
        failed = [r for r in records if r["status"] == "failed"]
        if not failed:
            continue
        retired = os.path.join(directory, "retired", f"{name}.{time.time_ns()}")
        write_atomic(retired, "".join(json.dumps(r, sort_keys=True) + "\n" for r in failed))
        kept = [r for r in records if r["status"] != "failed"]
        if _segment_number(name) is not None:  # kept, even empty: numbers stay consecutive
            write_atomic(path, _segment_text([json.dumps(r, sort_keys=True) for r in kept]))
        else:
            os.unlink(path)
        retried.extend(r["cell_id"] for r in failed)
    return sorted(retried)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tf_sgd_regimes.sweep.ledger",
        description="Inspect a sweep's ledger, or take its failed records out to retry them.")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--retry_failed", action="store_true",
                        help="remove the failed records (kept in ledger/retired/) so that the "
                        "next run of the same command trains those cells again; only while "
                        "no sweep runs in this work directory")
    args = parser.parse_args(argv)
    try:
        if args.retry_failed:
            cells = retry_failed(args.workdir)
            print(f"{len(cells)} failed cells will train again on the next run"
                  + (f": {', '.join(cells[:5])}{' ...' if len(cells) > 5 else ''}"
                     if cells else ""))
            return 0
        records = read(args.workdir)
    except LedgerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    print(f"{len(records)} records in {ledger_dir(args.workdir)}: "
          + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
