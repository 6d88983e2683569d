"""What a restarted sweep needs to pick up where it stopped: attempts, TensorBoard marks, packs.

Three kinds of small JSON files, each replaced atomically (ledger.write_atomic):

  <workdir>/cells/<cell_id>.json      {"attempt": n, "tensorboard_step": s}
      attempt: how many times the cell has started training (its terminal record says
      which attempt produced it). tensorboard_step: every scalar of the cell with a step
      <= s may already be on disk; it is written BEFORE the scalars, so a resumed or
      retrained cell skips those steps and TensorBoard never sees a step twice.
  <workdir>/workers/<tuner_id>.json   {"cells": [...], "slots": [...]}
      the pack a worker was training and the oracle slots it held, so that a restarted
      worker re-forms the very same pack (and its checkpoint matches) and reclaims its
      trials from a keras-tuner chief.
  <workdir>/checkpoints/<pack key>/   the engine's PackCheckpoint of a running pack.
"""

import errno
import hashlib
import json
import os
import shutil
from typing import Dict, Iterable, List, Optional, Sequence

from tf_sgd_regimes import ledger


MANIFEST = "manifest.json"  # in each pack's checkpoint directory (engine.PackCheckpoint)


class StateWarning(UserWarning):
    """A resume file that did not parse: named, then rebuilt."""


def cells_dir(workdir: str) -> str:
    return os.path.join(workdir, "cells")


def checkpoints_dir(workdir: str) -> str:
    return os.path.join(workdir, "checkpoints")


def pack_key(cell_ids: Sequence[str], batch_size: int, steps: int) -> str:
    """Directory name of a pack's checkpoint: readable prefix + hash of its members."""
    digest = hashlib.sha256("\n".join(cell_ids).encode()).hexdigest()[:12]
    return f"B{batch_size:05d}_steps{steps}_{len(cell_ids)}m_{digest}"


def prune_finished_checkpoints(workdir: str, is_done) -> List[str]:
    """Deletes the checkpoints of packs whose every cell has a record; returns their paths.

    A kill between a pack's last record and the removal of its checkpoint leaves one
    that no pack will resume. An unreadable manifest is left for its pack's own restore
    to report.
    """
    root = checkpoints_dir(workdir)
    removed = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        try:
            with open(os.path.join(root, name, MANIFEST)) as f:
                cells = json.load(f)["cells"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if cells and all(is_done(cell_id) for cell_id in cells):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(os.path.join(root, name))
    return removed


def _read_json(path: str, report) -> Optional[dict]:
    """The file's JSON object, None if missing; an unreadable file is reported, then None."""
    try:
        with open(path) as f:
            value = json.load(f)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return value
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        report(f"[sweep] warning: {path} is corrupt ({e}); rebuilding it")
        return None


class CellStates:
    """Attempt counters and TensorBoard high-water marks of the cells of a workdir."""

    def __init__(self, workdir: str, report=print):
        self.directory = cells_dir(workdir)
        self.report = report
        self._cache: Dict[str, dict] = {}

    def _path(self, cell_id: str) -> str:
        return os.path.join(self.directory, f"{cell_id}.json")

    def get(self, cell_id: str) -> dict:
        if cell_id not in self._cache:
            state = _read_json(self._path(cell_id), self.report)
            if state is None and os.path.exists(self._path(cell_id)):
                # Corrupt: we cannot know which scalars are on disk, so the cell's
                # TensorBoard run is started afresh rather than risk duplicated steps.
                self.report(f"[sweep] warning: restarting the TensorBoard run of {cell_id}")
                state = {"attempt": 1, "tensorboard_reset": True}
            self._cache[cell_id] = dict({"attempt": 0, "tensorboard_step": 0},
                                        **(state or {}))
        return self._cache[cell_id]

    def put(self, cell_id: str, **fields) -> None:
        state = dict(self.get(cell_id), **fields)
        state.pop("tensorboard_reset", None)
        ledger.write_atomic(self._path(cell_id), json.dumps(state, sort_keys=True))
        self._cache[cell_id] = state

    def start(self, cell_ids: Iterable[str]) -> Dict[str, int]:
        """Counts a new attempt of each cell; returns cell_id -> attempt number (1-based)."""
        return {cell_id: self._bump(cell_id) for cell_id in cell_ids}

    def _bump(self, cell_id: str) -> int:
        attempt = int(self.get(cell_id)["attempt"]) + 1
        self.put(cell_id, attempt=attempt)
        return attempt

    def needs_tensorboard_reset(self, cell_id: str) -> bool:
        return bool(self.get(cell_id).get("tensorboard_reset"))


class WorkerState:
    """The in-flight pack and oracle slots of one worker (one tuner id)."""

    def __init__(self, workdir: str, tuner_id: str, report=print):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in tuner_id)
        self.path = os.path.join(workdir, "workers", f"{safe}.json")
        self.report = report

    def load(self) -> dict:
        state = _read_json(self.path, self.report) or {}
        return {"cells": list(state.get("cells", [])),
                "slots": [int(s) for s in state.get("slots", [])]}

    def save(self, cells: List[str], slots: List[int]) -> None:
        ledger.write_atomic(self.path, json.dumps({"cells": list(cells),
                                                   "slots": sorted(slots)}))


def is_disk_full(error: BaseException) -> bool:
    """True for "no space left on device" from Python or TensorFlow file writes."""
    if isinstance(error, OSError):
        code = error.errno if error.errno is not None else (error.args or (None,))[0]
        if code in (errno.ENOSPC, errno.EDQUOT):
            return True
    text = str(error)
    return "No space left on device" in text or "ENOSPC" in text
