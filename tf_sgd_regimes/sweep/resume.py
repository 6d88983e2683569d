"""What a restarted sweep needs to pick up where it stopped: attempts, TensorBoard marks, packs.

Three kinds of small JSON files, each replaced atomically (atomic.write_atomic):

  <workdir>/cells/<pack key>.json     {"cells": {cell_id: {"attempt": n, "tensorboard_step": s}}}
      one file per pack in flight, rewritten a few times per pack (not per cell) and
      deleted once every cell of the pack has its record, so the directory stays small
      however large the sweep. attempt: how many times the cell has started training
      (its terminal record says which attempt produced it). tensorboard_step: every
      curve scalar of the cell with a step <= s may already be on disk; it is written
      BEFORE the scalars, so a resumed or retrained cell skips those steps and
      TensorBoard never sees a step twice. (Older work directories hold one
      cells/<cell_id>.json per cell; they are read the same way.)
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

from tf_sgd_regimes import atomic
from tf_sgd_regimes import pack_checkpoint


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
            with open(os.path.join(root, name, pack_checkpoint.MANIFEST)) as f:
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
    """Attempt counters and TensorBoard high-water marks of the cells of the packs in flight.

    Every file of cells/ is read once, when the sweep starts (only packs in flight have
    one); after that the states live in memory and each pack rewrites its own file. A
    pack's cells belong to one worker (the oracle hands each cell out once and a
    restarted worker reclaims its own pack), so no other process writes them meanwhile.
    """

    def __init__(self, workdir: str, report=print):
        self.directory = cells_dir(workdir)
        self.report = report
        self._cache: Dict[str, dict] = {}
        self._key_of: Dict[str, str] = {}  # cell_id -> the pack file that holds it
        self._members: Dict[str, List[str]] = {}  # pack key -> its cells
        self._corrupt_keys = set()
        names = sorted(os.listdir(self.directory)) if os.path.isdir(self.directory) else ()
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            key, path = name[:-len(".json")], os.path.join(self.directory, name)
            value = _read_json(path, report)
            if value is None:
                if os.path.exists(path):  # corrupt: which steps are on disk is unknown
                    self._corrupt_keys.add(key)
                continue
            if "cells" in value and isinstance(value["cells"], dict):
                cells = value["cells"]
            else:  # an older work directory: one file per cell
                cells = {key: value}
            self._members[key] = list(cells)
            for cell_id, state in cells.items():
                if int(state.get("attempt", 0)) >= int(self.get(cell_id)["attempt"]):
                    self._cache[cell_id] = dict(self.get(cell_id), **state)
                    self._key_of[cell_id] = key

    def get(self, cell_id: str) -> dict:
        """{"attempt": n, "tensorboard_step": s} (zeros for a cell never started)."""
        if cell_id not in self._cache:
            if cell_id in self._corrupt_keys:
                self._mark_reset(cell_id)
            else:
                return {"attempt": 0, "tensorboard_step": 0}
        return self._cache[cell_id]

    def _mark_reset(self, cell_id: str) -> None:
        # We cannot know which scalars are on disk, so the cell's TensorBoard run is
        # started afresh rather than risk duplicated steps.
        self.report(f"[sweep] warning: restarting the TensorBoard run of {cell_id}")
        self._cache[cell_id] = {"attempt": max(1, int(self._cache.get(cell_id, {}).get(
            "attempt", 0))), "tensorboard_step": 0, "tensorboard_reset": True}

    def start(self, cell_ids: Iterable[str], key: Optional[str] = None) -> Dict[str, int]:
        """Counts a new attempt of each cell, saved in the pack file `key` (one write).

        Returns:
          cell_id -> attempt number (1-based).
        """
        cell_ids = list(cell_ids)
        key = key or cell_ids[0]
        if key in self._corrupt_keys:
            for cell_id in cell_ids:
                if cell_id not in self._cache or "tensorboard_reset" not in self._cache[cell_id]:
                    self._mark_reset(cell_id)
            self._corrupt_keys.discard(key)
        attempts = {}
        for cell_id in cell_ids:
            state = dict(self.get(cell_id))
            state["attempt"] = attempts[cell_id] = int(state["attempt"]) + 1
            self._cache[cell_id] = state
        self._members[key] = list(dict.fromkeys(self._members.get(key, []) + cell_ids))
        for cell_id in cell_ids:
            self._key_of[cell_id] = key
        self._write(key)
        return attempts

    def update(self, fields_by_cell: Dict[str, dict]) -> None:
        """Merges fields into several cells' states; one write per pack file touched."""
        keys = set()
        for cell_id, fields in fields_by_cell.items():
            state = dict(self.get(cell_id), **fields)
            state.pop("tensorboard_reset", None)
            self._cache[cell_id] = state
            if cell_id not in self._key_of:  # never started here: a file of its own
                self._key_of[cell_id] = cell_id
                self._members.setdefault(cell_id, [cell_id])
            keys.add(self._key_of[cell_id])
        for key in sorted(keys):
            self._write(key)

    def put(self, cell_id: str, **fields) -> None:
        self.update({cell_id: fields})

    def _write(self, key: str) -> None:
        cells = {}
        for cell_id in self._members[key]:
            state = dict(self.get(cell_id))
            state.pop("tensorboard_reset", None)
            cells[cell_id] = state
        atomic.write_atomic(os.path.join(self.directory, f"{key}.json"),
                            json.dumps({"cells": cells}, sort_keys=True))

    def finish(self, key: str) -> None:
        """Forgets a pack whose every cell has its record (the attempt is in the record)."""
        for cell_id in self._members.pop(key, []):
            if self._key_of.get(cell_id) == key:
                del self._key_of[cell_id]
                self._cache.pop(cell_id, None)
        try:
            os.unlink(os.path.join(self.directory, f"{key}.json"))
        except FileNotFoundError:
            pass

    def prune(self, is_done) -> None:
        """Deletes the files of packs whose every cell has a record (a kill between a
        pack's last record and finish() leaves one)."""
        for key, members in list(self._members.items()):
            if members and all(is_done(cell_id) for cell_id in members):
                self.finish(key)

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
        atomic.write_atomic(self.path, json.dumps({"cells": list(cells),
                                                   "slots": sorted(slots)}))


def is_disk_full(error: BaseException) -> bool:
    """True for "no space left on device" from Python or TensorFlow file writes."""
    if isinstance(error, OSError):
        code = error.errno if error.errno is not None else (error.args or (None,))[0]
        if code in (errno.ENOSPC, errno.EDQUOT):
            return True
    text = str(error)
    return "No space left on device" in text or "ENOSPC" in text
