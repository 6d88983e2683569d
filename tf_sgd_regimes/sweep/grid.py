"""Cells of a sweep and the keras-tuner grid oracle that hands them out in pack order."""

import dataclasses
import functools
import json
import math
import os
import shutil
import time
from typing import Callable, List, Optional

import keras_tuner as kt
from keras_tuner.src.engine import trial as trial_module

from tf_sgd_regimes import atomic
from tf_sgd_regimes import optimizers


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of the grid: the unit of record."""

    optimizer: str
    momentum: float
    batch_size: int
    effective_lr: float
    seed: int
    epochs: float  # the epoch budget (derived from steps under a constant step budget)
    steps: int

    @functools.cached_property
    def cell_id(self) -> str:
        # Readable and unique: also the TensorBoard run name and the ledger file name.
        # Cached: asked for many times per cell by the handout, ledger and TensorBoard.
        return (f"{self.optimizer}_B{self.batch_size:05d}_lr{self.effective_lr:.6g}"
                f"_E{self.epochs:.6g}_s{self.seed}")

    @property
    def pack_key(self) -> tuple:
        """Cells with the same key can share a pack (same batch size and budget)."""
        return (self.batch_size, self.steps)

    def hparams(self) -> dict:
        return {
            "optimizer": self.optimizer,
            "momentum": self.momentum,
            "batch_size": self.batch_size,
            "effective_lr": self.effective_lr,
            "learning_rate": optimizers.learning_rate_from_effective(
                self.effective_lr, self.momentum),
            "seed": self.seed,
            "epochs": self.epochs,
            "steps": self.steps,
        }


def budget_steps(config, batch_size: int, steps_per_epoch: float,
                 epochs: Optional[float] = None) -> tuple:
    """(steps, epochs) of a cell under the config's budget.

    Constant epoch budget: steps = round(epochs * N / B), at least 1.
    Constant step budget: the same steps at every B; epochs = steps * B / N grow with B.
    """
    if config.budget.kind == "steps":
        steps = int(config.budget.steps)
        return steps, steps / steps_per_epoch
    epochs = float(epochs if epochs is not None else config.budget.epochs)
    steps = max(1, int(math.floor(epochs * steps_per_epoch + 0.5)))
    return steps, epochs


PACK_ORDERS = ("spread", "ascending")


def spread(values: List[int]) -> List[int]:
    """`values` (batch sizes) largest first, then smallest, then bisecting: each next one
    the middle (by rank, so in log B for doubling sizes) of the widest gap left.

    The ETA prices a batch size still to come by the rates measured at the batch sizes
    already trained (eta_model): trained in ascending order, no pack before B = 32 shows
    what the large ones cost (2.5-4.3x the small ones' compute per work unit on the
    2-core machine, BENCHMARKS.md). Both ends first make every later one interpolated.
    """
    ranked = sorted(values)
    if len(ranked) <= 2:
        return ranked[::-1]
    order = [len(ranked) - 1, 0]
    gaps = [(0, len(ranked) - 1)]  # breadth first: the widest gaps are split first
    while gaps:
        low, high = gaps.pop(0)
        if high - low < 2:
            continue
        middle = (low + high) // 2
        order.append(middle)
        gaps += [(low, middle), (middle, high)]
    return [ranked[i] for i in order]


def batch_size_order(config) -> List[int]:
    """The batch sizes in the order their packs run (config.sweep.pack_order)."""
    sizes = [int(b) for b in config.sweep.batch_sizes]
    order = config.sweep.get("pack_order", "ascending")
    if order == "spread":
        return spread(sizes)
    if order == "ascending":
        return sorted(sizes)
    raise ValueError(f"config.sweep.pack_order={order!r}: use one of {PACK_ORDERS}")


def hyperparameters(config) -> kt.HyperParameters:
    """The grid as keras-tuner hyperparameters, declared in pack order.

    GridSearchOracle varies the last-declared value fastest, so consecutive cells share
    the budget and batch size and differ in optimizer, learning rate and seed: a pack.
    """
    sweep = config.sweep
    hp = kt.HyperParameters()
    if sweep.epoch_budgets:
        hp.Choice("epochs", [float(e) for e in sweep.epoch_budgets])
    hp.Choice("batch_size", batch_size_order(config))
    hp.Choice("optimizer", list(sweep.optimizers))
    hp.Choice("effective_lr", [float(lr) for lr in sweep.effective_lrs])
    hp.Choice("seed", [int(s) for s in sweep.seeds])
    return hp


def cell_from_values(config, values: dict, steps_per_epoch) -> Cell:
    """`steps_per_epoch` is a function batch_size -> float."""
    batch_size = int(values["batch_size"])
    steps, epochs = budget_steps(config, batch_size, steps_per_epoch(batch_size),
                                 values.get("epochs"))
    momentum = optimizers.momentum_for(values["optimizer"], None)
    if values["optimizer"] == "momentum":
        momentum = float(config.sweep.momentum)
    return Cell(values["optimizer"], momentum, batch_size, float(values["effective_lr"]),
                int(values["seed"]), float(epochs), int(steps))


def all_cells(config, steps_per_epoch) -> List[Cell]:
    """Every cell of the grid in the oracle's order (for totals and progress)."""
    sweep = config.sweep
    budgets = list(sweep.epoch_budgets) or [None]
    cells = []
    for epochs in budgets:
        for batch_size in batch_size_order(config):
            for optimizer in sweep.optimizers:
                for lr in sweep.effective_lrs:
                    for seed in sweep.seeds:
                        values = {"batch_size": batch_size, "optimizer": optimizer,
                                  "effective_lr": lr, "seed": seed}
                        if epochs is not None:
                            values["epochs"] = epochs
                        cells.append(cell_from_values(config, values, steps_per_epoch))
    return cells


class _FixedSpace(kt.HyperParameters):
    """HyperParameters whose copies share the (never modified) grid of values.

    keras-tuner copies the search space for every trial and several times per handed-out
    cell, each copy a round trip through Keras deserialization (~0.3 ms). The grid does
    not change during a sweep, so a copy shares the HyperParameter objects and copies
    only the chosen values.
    """

    def copy(self):
        hps = _FixedSpace()
        for hp in self._space:
            hps._hps[hp.name].append(hp)
            hps._space.append(hp)
        hps.values = dict(self.values)
        return hps


class PackedGridOracle(kt.oracles.GridSearchOracle):
    """GridSearchOracle that hands out consecutive cells before earlier ones finish, in
    constant time per cell.

    keras-tuner's grid oracle computes the next combination from a trial only when that
    trial ends (so at most two run at once); a pack needs tens of cells in flight. Each
    new trial is queued as a source of its successor straight away; the oracle's own
    check that skips already-tried combinations keeps every cell handed out once.

    keras-tuner saves its whole state (oracle.json, which lists every trial) and one
    trial.json directory per trial each time a trial starts or ends, and rescans every
    ended trial for consecutive failures: the cost per cell grew with the cells done
    (quadratic over a sweep). Here the state is one file, `oracle.json`, replaced
    atomically at most every `save_every_s` seconds and never more often than keeps
    saving under `SAVE_COST_FRACTION` of the run (its size grows with the trials), plus
    on flush() (end of a sweep or of serving). A kill -9 leaves the last whole file;
    the ledger is the source of truth, and every start rebuilds the oracle from it.
    """

    SAVE_COST_FRACTION = 0.05

    def __init__(self, *args, save_every_s: float = 30.0, clock=time.monotonic, **kwargs):
        super().__init__(*args, **kwargs)
        self.save_every_s = float(save_every_s)
        self._clock = clock
        self._last_save = clock()
        self._save_cost = 0.0
        self._consecutive_failures = 0
        self.saves = 0

    def populate_space(self, trial_id):
        result = super().populate_space(trial_id)
        if (result["status"] == trial_module.TrialStatus.RUNNING
                and trial_id not in self._populate_next):
            self._populate_next.append(trial_id)
        return result

    def _check_consecutive_failures(self):
        # keras-tuner rescans every ended trial; it is called after each end, so counting
        # the run of failures at the end of end_order gives the same answer in O(1).
        trial = self.trials[self.end_order[-1]]
        if trial.status == trial_module.TrialStatus.FAILED:
            self._consecutive_failures += 1
        else:
            self._consecutive_failures = 0
        if self._consecutive_failures == self.max_consecutive_failed_trials:
            raise RuntimeError("Number of consecutive failures exceeded the limit of "
                               f"{self.max_consecutive_failed_trials}.\n" + (trial.message or ""))

    def save(self):
        """Called by keras-tuner on every trial start and end: saves only when due."""
        since = self._clock() - self._last_save
        if since >= max(self.save_every_s, self._save_cost / self.SAVE_COST_FRACTION):
            self.flush()

    def flush(self):
        """Writes the whole state now, atomically: keras-tuner's get_state() plus a
        compact table of the trials (values, status, score) instead of trial_*/ dirs."""
        start = self._clock()
        state = self.get_state()
        state["trials"] = {
            trial_id: {"values": trial.hyperparameters.values, "status": trial.status,
                       "score": trial.score}
            for trial_id, trial in self.trials.items()}
        # No fsync: the file is a view of the ledger (rebuilt from it on every start), so
        # only a killed process matters, and a rename covers that.
        atomic.write_atomic(self._get_oracle_fname(), json.dumps(state), fsync=False)
        self._last_save = self._clock()
        self._save_cost = self._last_save - start
        self.saves += 1

    def _save_trial(self, trial):
        pass  # trials are saved in oracle.json's "trials" table by flush()


def check_tuner_state(directory: str) -> List[tuple]:
    """(path, error) of every keras-tuner JSON file under `directory` that does not parse."""
    bad = []
    for root, _, files in os.walk(directory):
        for name in sorted(files):
            if not name.endswith(".json"):
                continue
            path = os.path.join(root, name)
            try:
                with open(path) as f:
                    json.load(f)
            except (OSError, ValueError) as e:
                bad.append((path, f"{type(e).__name__}: {e}"))
    return bad


def reset_tuner_state(directory: str, report: Callable[[str], None] = print) -> List[tuple]:
    """Clears keras-tuner's state before the oracle is rebuilt from the ledger.

    The ledger is the source of truth; keras-tuner's files are a view of it that a new
    oracle rewrites as it replays the grid. Corrupt files are named before they go.

    Returns:
      The (path, error) of each corrupt file found.
    """
    bad = check_tuner_state(directory)
    for path, error in bad:
        report(f"[sweep] warning: keras-tuner state file {path} is corrupt ({error}); "
               "rebuilding the oracle from the ledger")
    shutil.rmtree(directory, ignore_errors=True)
    return bad


def make_oracle(config, directory: str, project_name: str = "oracle",
                save_every_s: float = 30.0, clock=time.monotonic) -> PackedGridOracle:
    mode = config.analysis.selection_mode
    space = _FixedSpace()
    space.merge(hyperparameters(config))
    oracle = PackedGridOracle(
        objective=kt.Objective("score", direction=mode),
        hyperparameters=space,
        max_trials=10**9,
        seed=0,
        # Divergence is data, recorded as a completed trial: never a reason to stop.
        max_consecutive_failed_trials=10**9,
        save_every_s=save_every_s,
        clock=clock,
    )
    oracle._display.verbose = 0  # our progress line replaces keras-tuner's trial tables
    oracle._set_project_dir(directory, project_name)
    return oracle
