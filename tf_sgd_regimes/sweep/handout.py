"""Cells from the keras-tuner oracle to packs: slots, reclaiming after a restart, pack shape.

The oracle (local, or a chief's through OracleClient) hands out one trial per cell. A
worker asks under one tuner id per slot ("<tuner_id>/<slot>", lowest free slot first):
keras-tuner answers a known tuner id with its ongoing trial, so a restarted worker that
asks for the same slots gets its unfinished trials back. Consecutive cells with the same
batch size and budget form a pack; the pack a worker was training is persisted
(resume.WorkerState) and re-formed with the same members after a restart.
"""

import dataclasses
import heapq
import json
import os
from typing import Callable, Dict, List, Optional

import keras_tuner as kt

from tf_sgd_regimes.sweep import grid
from tf_sgd_regimes.sweep import ledger
from tf_sgd_regimes.sweep import resume

RUNNING = kt.engine.trial.TrialStatus.RUNNING
STOPPED = kt.engine.trial.TrialStatus.STOPPED
IDLE = kt.engine.trial.TrialStatus.IDLE


@dataclasses.dataclass
class Pack:
    cells: List[grid.Cell]  # the members, in grid order
    trials: Dict[str, object]  # cell_id -> keras-tuner Trial, for cells still without record


def pack_shapes(cells: List[grid.Cell], pack_size: int) -> List[tuple]:
    """(members, batch size) of the packs that `cells` (without a record, in grid order)
    form, in order, as CellSource.next_pack forms them: consecutive cells of one pack key,
    at most `pack_size` (0: no limit) to a pack."""
    shapes, key, members = [], None, 0
    for cell in cells:
        if cell.pack_key != key or (pack_size and members == pack_size):
            if members:
                shapes.append((members, key[0]))
            key, members = cell.pack_key, 0
        members += 1
    if members:
        shapes.append((members, key[0]))
    return shapes


class CellSource:
    """Hands out packs of cells without a ledger record, in grid order."""

    def __init__(self, config, workdir: str, oracle, tuner_id: str, cells: List[grid.Cell],
                 steps_per_epoch: Callable[[int], float], is_worker: bool,
                 report: Callable[[str], None] = print,
                 records: Optional[ledger.Ledger] = None):
        self.config = config
        self.workdir = workdir
        self.oracle = oracle
        self.tuner_id = tuner_id
        self.cells = cells
        self.steps_per_epoch = steps_per_epoch
        self.is_worker = is_worker
        self.report = report
        self.records = records or ledger.Ledger(workdir)  # which cells are recorded
        self._index = {c.cell_id: i for i, c in enumerate(cells)}
        self._worker_state = resume.WorkerState(workdir, tuner_id, report=report)
        self._pending = []  # (trial, cell) handed out, not yet in a pack
        self._slots: Dict[int, str] = {}  # oracle slot -> trial_id held by this worker
        self._slot_of: Dict[str, int] = {}  # trial_id -> its slot
        self._freed: List[int] = []  # heap of released slots (all below _high)
        self._high = 0  # no slot at or above this was ever taken in this process
        self._first_open = 0  # cells before this index (grid order) all have records
        self._resume_cells: List[str] = []

    def save(self, pack: Pack) -> None:
        """Persists the pack about to train, so a restart re-forms the very same one."""
        self._worker_state.save([c.cell_id for c in pack.cells], list(self._slots))

    def is_done(self, cell_id: str) -> bool:
        return self.records.is_done(cell_id)

    def _request(self, slot: int):
        """The trial of oracle slot `slot`: the one this worker held there, else a new one.

        keras-tuner returns the ongoing trial of a known tuner id, so slot ids that stay
        the same across restarts give a restarted worker its trials back.
        """
        trial = self.oracle.create_trial(f"{self.tuner_id}/{slot}")
        if trial.status != RUNNING:
            return trial.status
        cell = grid.cell_from_values(self.config, trial.hyperparameters.values,
                                     self.steps_per_epoch)
        if self.is_done(cell.cell_id):  # finished earlier: tell the oracle, move on
            self.end_trial(trial, self._recorded_score(cell.cell_id))
            return None
        self._slots[slot] = trial.trial_id
        self._slot_of[trial.trial_id] = slot
        return trial, cell

    def _free_slot(self) -> int:
        """The lowest slot this worker does not hold (O(1) amortized)."""
        while self._freed and self._freed[0] in self._slots:
            heapq.heappop(self._freed)
        if self._freed:
            return self._freed[0]
        while self._high in self._slots:
            self._high += 1
        return self._high

    def _take_trial(self):
        """(trial, cell) of a cell without a record, or the oracle's status (IDLE/STOPPED)."""
        while True:
            slot = self._free_slot()
            got = self._request(slot)
            if got is not None:
                return got

    def end_trial(self, trial, score: float, status: str = "COMPLETED") -> None:
        slot = self._slot_of.pop(trial.trial_id, None)
        if slot is not None and self._slots.get(slot) == trial.trial_id:
            del self._slots[slot]
            heapq.heappush(self._freed, slot)
        try:
            self.oracle.update_trial(trial.trial_id, {"score": float(score)})
            trial.status = status
            self.oracle.end_trial(trial)
        except Exception as e:  # noqa: BLE001 - a restarted chief forgot this trial
            if not self.is_worker:
                raise
            self.report(f"[sweep] warning: the chief did not take the end of trial "
                        f"{trial.trial_id} ({type(e).__name__}); the ledger has its record")

    def worst_score(self) -> float:
        return -1e30 if self.config.analysis.selection_mode == "max" else 1e30

    def _recorded_score(self, cell_id: str) -> float:
        record = self.records.record(cell_id)
        value = (record.get("metrics") or {}).get(self.config.analysis.selection_metric)
        return self.worst_score() if value is None else float(value)

    def reclaim(self) -> None:
        """Takes back the trials and pack this worker held when it stopped."""
        state = self._worker_state.load()
        self._resume_cells = state["cells"]
        for slot in state["slots"]:
            got = self._request(slot)
            if isinstance(got, tuple):
                self._pending.append(got)

    def _resume_pack(self) -> Optional[Pack]:
        """The pack that was training when the worker stopped, with the same members.

        The same members give the same checkpoint (it resumes mid-training) and the same
        numbers (a pack's shape changes float rounding); members already recorded are
        trained again but not recorded twice.
        """
        members = sorted((self.cells[self._index[c]] for c in self._resume_cells
                          if c in self._index), key=lambda c: self._index[c.cell_id])
        self._resume_cells = []
        wanted = {c.cell_id for c in members if not self.is_done(c.cell_id)}
        if not wanted:
            return None
        in_hand = {cell.cell_id: trial for trial, cell in self._pending
                   if cell.cell_id in wanted}
        while set(in_hand) != wanted:
            got = self._take_trial()
            if not isinstance(got, tuple):
                break
            self._pending.append(got)
            if got[1].cell_id not in wanted:
                break
            in_hand[got[1].cell_id] = got[0]
        if set(in_hand) != wanted:
            return None
        self._pending = [(t, c) for t, c in self._pending if c.cell_id not in wanted]
        return Pack(members, in_hand)

    def next_pack(self):
        """The next Pack (cells sharing batch size and budget), or IDLE / STOPPED."""
        if self._resume_cells:
            pack = self._resume_pack()
            if pack is not None:
                return pack
        limit = int(self.config.sweep.pack_size) or 10**9
        self._pending.sort(key=lambda item: self._index[item[1].cell_id])
        chosen, status = [], STOPPED
        for item in list(self._pending):
            if len(chosen) < limit and item[1].pack_key == self._pending[0][1].pack_key:
                chosen.append(item)
        self._pending = [item for item in self._pending if item not in chosen]
        while len(chosen) < limit:
            got = self._take_trial()
            if not isinstance(got, tuple):
                status = got
                break
            if chosen and got[1].pack_key != chosen[0][1].pack_key:
                self._pending.append(got)
                break
            chosen.append(got)
        if not chosen:
            return status
        cells = sorted((c for _, c in chosen), key=lambda c: self._index[c.cell_id])
        return Pack(cells, {c.cell_id: t for t, c in chosen})

    def grid_done(self) -> bool:
        # Records are never removed, so the scan resumes where the last one stopped.
        while self._first_open < len(self.cells) and self.is_done(
                self.cells[self._first_open].cell_id):
            self._first_open += 1
        return self._first_open == len(self.cells)
