"""The per-cell records of a sweep: schema, atomic exclusive writes, reading.

The ledger is a directory `<workdir>/ledger/` holding one JSON file per cell,
`<cell_id>.json`. A file is written to a temporary name, then linked into place with
os.link, which fails if the name exists: a terminal record is created exactly once and
never rewritten, even with several workers on one file system, and a killed process
leaves whole records only. Durability against a power cut: append() fsyncs each record
and the directory; a sweep instead appends a pack's records with sync=False and calls
sync() once per pack (one syncfs of the file system on Linux), because two fsyncs per
cell were most of a sweep's bookkeeping on a busy disk. A power cut inside that window
can leave an empty record, which read() reports by name with the fix (move it aside).

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

import ctypes
import json
import math
import os
import tempfile
from typing import Iterable, List

STATUSES = ("complete", "diverged", "failed")


class LedgerError(RuntimeError):
    """A record file that cannot be read; the message names the file."""


def ledger_dir(workdir: str) -> str:
    return os.path.join(workdir, "ledger")


def _clean(value):
    """JSON has no NaN/inf: store them as None so every file parses everywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def append(workdir: str, record: dict, sync: bool = True) -> bool:
    """Writes `record` as the cell's terminal record unless one exists.

    sync=False skips the fsyncs (see the module docstring); call sync() afterwards.

    Returns:
      True if written, False if the cell already had a record (left untouched).
    """
    if record.get("status") not in STATUSES:
        raise ValueError(f"record status {record.get('status')!r} not in {STATUSES}")
    directory = ledger_dir(workdir)
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, f"{record['cell_id']}.json")
    if os.path.exists(final):
        return False
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_clean(record), f, sort_keys=True, allow_nan=False)
            f.write("\n")
            f.flush()
            if sync:
                os.fsync(f.fileno())
        try:
            os.link(tmp, final)  # fails if another writer got there first
        except FileExistsError:
            return False
        if sync:
            _fsync_dir(directory)
        return True
    finally:
        os.unlink(tmp)


def _fsync_dir(directory: str) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _syncfs():
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # not Linux
        return None


_SYNCFS = _syncfs()


def sync(workdir: str) -> None:
    """Makes the records appended with sync=False durable: one syncfs(2) of the ledger's
    file system where there is one (Linux), else os.sync(); then the directory."""
    directory = ledger_dir(workdir)
    if not os.path.isdir(directory):
        return
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        if _SYNCFS is None or _SYNCFS(dir_fd) != 0:
            os.sync()
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read(workdir: str) -> List[dict]:
    """All records, sorted by cell_id. A file that does not parse raises LedgerError."""
    directory = ledger_dir(workdir)
    if not os.path.isdir(directory):
        return []
    records = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise LedgerError(
                f"ledger record {path} is corrupt ({e}). A record is written once and never "
                f"rewritten, so it cannot be repaired: move it aside (mv {path} "
                f"{path}.corrupt) and re-run the same command to train that cell again"
            ) from e
        if (not isinstance(record, dict) or f"{record.get('cell_id')}.json" != name
                or record.get("status") not in STATUSES):
            raise LedgerError(
                f"ledger record {path} is not a valid record (its cell_id must match the file "
                f"name and its status be one of {STATUSES}): move it aside (mv {path} "
                f"{path}.corrupt) and re-run the same command to train that cell again")
        records.append(record)
    return records


def done_cell_ids(records: Iterable[dict]) -> set:
    return {r["cell_id"] for r in records}
