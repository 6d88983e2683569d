"""A sweep: keras-tuner hands out cells, the engine trains them in packs, the ledger keeps them.

Every cell ends in exactly one terminal ledger record (complete / diverged / failed) and
one TensorBoard run. Running the same sweep again skips cells that have a record, so a
crashed or preempted sweep resumes where it stopped.
"""

import datetime
import json
import os
import platform
import time
import traceback
from typing import Callable, List, Optional

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

import tf_sgd_regimes
from tf_sgd_regimes import data as data_registry
from tf_sgd_regimes import engine as engine_lib
from tf_sgd_regimes import experiments
from tf_sgd_regimes import grid
from tf_sgd_regimes import ledger
from tf_sgd_regimes import progress as progress_lib
from tf_sgd_regimes import strategy as strategy_lib
from tf_sgd_regimes import summaries

CONFIG_FILE = "config.json"


def versions() -> dict:
    return {
        "tf_sgd_regimes": tf_sgd_regimes.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_tuner": kt.__version__,
        "python": platform.python_version(),
    }


def load_dataset(config):
    fields = dict(config.data)
    name = fields.pop("name")
    return data_registry.get_dataset(name, **fields)


def prepare_workdir(workdir: str, config) -> None:
    """Saves the config, or checks that a resumed sweep has a compatible one."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    current = experiments.to_dict(config)
    if os.path.exists(path):
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise experiments.ConfigError(
                f"{path} cannot be read ({e}); it records the sweep's config. Restore it, or "
                "start fresh with a new --workdir") from e
        reason = experiments.compare_for_resume(saved, config)
        if reason:
            raise experiments.ConfigError(
                f"work directory {workdir} holds a sweep with a different config: {reason}. "
                f"To resume it, run with the saved config ({path}); to start fresh, pass a new "
                "--workdir (or delete this one).")
    ledger.write_atomic(path, json.dumps(current, indent=2, sort_keys=True) + "\n")


class Sweep:
    """Runs one experiment's sweep in a work directory."""

    def __init__(self, config, workdir: str, strategy: Optional[tf.distribute.Strategy] = None,
                 dataset=None, tuner_id: str = "worker0", oracle=None,
                 stream=None, progress_interval_s: float = 5.0):
        self.config = config
        self.workdir = workdir
        self._engine = None
        if config.engine == "nqm":
            # The noisy quadratic model: closed-form dynamics, no data set, no TensorFlow.
            from tf_sgd_regimes.theory import nqm_engine

            self.dataset = nqm_engine.NQMData(config)
            self._engine = nqm_engine.NQMEngine(config)
            self.strategy = tf.distribute.get_strategy()
        else:
            self.dataset = dataset if dataset is not None else load_dataset(config)
            self.strategy = strategy or strategy_lib.get_strategy(config.strategy,
                                                                  config.tpu_address)
        experiments.validate(config, self.dataset.num_train,
                             strategy_lib.num_replicas(self.strategy))
        prepare_workdir(workdir, config)
        self.config_hash = experiments.config_hash(config)
        self.tuner_id = tuner_id
        self.oracle = oracle or grid.make_oracle(config, os.path.join(workdir, "keras_tuner"))
        self.cells = grid.all_cells(config, self.dataset.steps_per_epoch)
        self.stream = stream
        self.progress_interval_s = progress_interval_s
        self._pending = None  # a trial handed out that did not fit the last pack
        self._trial_counter = 0

    @property
    def engine(self) -> engine_lib.Engine:
        if self._engine is None:
            self._engine = engine_lib.Engine(self.config, self.dataset, self.strategy)
        return self._engine

    # -- cells from the oracle -------------------------------------------------------
    def _next_trial(self):
        if self._pending is not None:
            trial, self._pending = self._pending, None
            return trial
        self._trial_counter += 1
        trial = self.oracle.create_trial(f"{self.tuner_id}-{self._trial_counter}")
        if trial.status != kt.engine.trial.TrialStatus.RUNNING:
            return None
        return trial

    def _end_trial(self, trial, score: float, status: str = "COMPLETED") -> None:
        self.oracle.update_trial(trial.trial_id, {"score": float(score)})
        trial.status = status
        self.oracle.end_trial(trial)

    def _worst_score(self) -> float:
        return -1e30 if self.config.analysis.selection_mode == "max" else 1e30

    def next_pack(self, done: set) -> list:
        """Consecutive cells that share batch size and budget: [(trial, cell), ...]."""
        limit = int(self.config.sweep.pack_size) or 10**9
        pack = []
        while len(pack) < limit:
            trial = self._next_trial()
            if trial is None:
                break
            cell = grid.cell_from_values(self.config, trial.hyperparameters.values,
                                         self.dataset.steps_per_epoch)
            if cell.cell_id in done:  # finished in an earlier run: tell the oracle, move on
                self._end_trial(trial, self._recorded_score(cell.cell_id))
                continue
            if pack and cell.pack_key != pack[0][1].pack_key:
                self._pending = trial
                break
            pack.append((trial, cell))
        return pack

    def _recorded_score(self, cell_id: str) -> float:
        path = os.path.join(ledger.ledger_dir(self.workdir), f"{cell_id}.json")
        with open(path) as f:
            record = json.load(f)
        value = (record.get("metrics") or {}).get(self.config.analysis.selection_metric)
        return self._worst_score() if value is None else float(value)

    # -- running ---------------------------------------------------------------------
    def run(self, on_pack: Optional[Callable[[List[dict]], None]] = None) -> List[dict]:
        """Trains every cell without a record; returns all records of the sweep."""
        records = ledger.read(self.workdir)
        done = ledger.done_cell_ids(records)
        grid_ids = {c.cell_id for c in self.cells}
        remaining = [c for c in self.cells if c.cell_id not in done]
        total_work = sum(c.steps for c in remaining)
        progress = progress_lib.Progress(len(grid_ids), total_work,
                                         done_cells=len(grid_ids & done), stream=self.stream,
                                         min_interval_s=self.progress_interval_s)
        summaries.write_experiment(self.workdir, self.config, self.dataset.task,
                                   self.dataset.split)
        while True:
            pack = self.next_pack(done)
            if not pack:
                break
            new_records = self._run_pack(pack, progress)
            done |= {r["cell_id"] for r in new_records}
            if on_pack is not None:
                on_pack(new_records)
        return ledger.read(self.workdir)

    def _run_pack(self, pack, progress) -> List[dict]:
        cells = [cell for _, cell in pack]
        first = cells[0]
        members = [engine_lib.Member(c.cell_id, c.effective_lr, c.momentum, c.seed)
                   for c in cells]
        label = f"pack B={first.batch_size} steps={first.steps} members={len(cells)}"
        progress.start_pack(label)
        writers = summaries.PackWriters(self.workdir, [c.cell_id for c in cells])
        pack_id = f"{self.tuner_id}-{pack[0][0].trial_id}"
        log_every = int(self.config.train.log_every_steps)
        last_logged = [0]

        def on_chunk(report: engine_lib.ChunkReport) -> None:
            if not log_every or report.step - last_logged[0] >= log_every \
                    or report.step == report.total_steps:
                writers.scalars(report.step, {"train/loss": report.mean_loss,
                                              "train/effective_lr": report.effective_lr})
                last_logged[0] = report.step
            alive = int(np.sum(report.diverged_at < 0))
            progress.pack_step(report.step * len(cells),
                               f"step {report.step}/{report.total_steps} alive {alive}")

        start = time.perf_counter()
        try:
            results = self.engine.train_pack(members, first.batch_size, first.steps, on_chunk)
            error = None
        except (tf.errors.ResourceExhaustedError, tf.errors.InvalidArgumentError,
                ValueError, RuntimeError) as e:
            # A pack that cannot train is recorded as failed, cell by cell; the sweep goes on.
            results, error = None, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"
        wall = (time.perf_counter() - start) / len(cells)
        records = []
        for k, (trial, cell) in enumerate(pack):
            record = {
                "cell_id": cell.cell_id,
                "experiment": self.config.name,
                "hparams": cell.hparams(),
                "wall_time_s": wall,
                "attempt": 1,
                "config_hash": self.config_hash,
                "versions": versions(),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "pack_id": pack_id,
            }
            if results is None:
                record.update(status="failed", metrics={}, diverged_step=None, error=error,
                              steps_done=0)
            else:
                result = results[k]
                record.update(status=result.status, metrics=result.metrics,
                              diverged_step=result.diverged_step, error=None,
                              steps_done=result.steps_done)
                writers.final(k, cell.cell_id, cell.hparams(), result.metrics,
                              result.diverged_step, result.steps_done)
            ledger.append(self.workdir, record)
            score = record["metrics"].get(self.config.analysis.selection_metric)
            self._end_trial(trial, self._worst_score() if score is None else score,
                            "FAILED" if record["status"] == "failed" else "COMPLETED")
            records.append(record)
        writers.close()
        diverged = sum(r["status"] == "diverged" for r in records)
        progress.end_pack(len(records), diverged, first.steps * len(cells))
        return records
