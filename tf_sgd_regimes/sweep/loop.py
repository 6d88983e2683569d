"""A sweep: keras-tuner hands out cells, the engine trains them in packs, the ledger keeps them.

Every cell ends in exactly one terminal ledger record (complete / diverged / failed) and
its TensorBoard run (or its seed's tags in its grid point's run, summaries.py). Running
the same sweep again skips cells that have a record and resumes the pack that was running from its last checkpoint (resume.py), so a killed,
preempted (SIGTERM) or disk-full sweep picks up where it stopped.
"""

import contextlib
import datetime
import gc
import json
import os
import platform
import shutil
import sys
import time
import traceback
from typing import Callable, List, Optional

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

import tf_sgd_regimes
from tf_sgd_regimes import atomic
from tf_sgd_regimes import data as data_registry
from tf_sgd_regimes import engine as engine_lib
from tf_sgd_regimes import experiments
from tf_sgd_regimes import pack_checkpoint
from tf_sgd_regimes import strategy as strategy_lib
from tf_sgd_regimes.sweep import grid
from tf_sgd_regimes.sweep import handout
from tf_sgd_regimes.sweep import ledger
from tf_sgd_regimes.sweep import progress as progress_lib
from tf_sgd_regimes.sweep import resume
from tf_sgd_regimes.sweep import signals
from tf_sgd_regimes.sweep import summaries

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


def prepare_workdir(workdir: str, config) -> bool:
    """Saves the config, or checks that a resumed sweep has a compatible one.

    Returns:
      True if config.json was new or changed (e.g. the grid grew).
    """
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
        if saved == current:
            return False
    atomic.write_atomic(path, json.dumps(current, indent=2, sort_keys=True) + "\n")
    return True


def per_cell_sessions_max(config) -> int:
    """config.tensorboard.per_cell_sessions_max (configs without the field: 2,000)."""
    tensorboard = config.get("tensorboard") or {}
    return int(tensorboard.get("per_cell_sessions_max", 2000))


Pack = handout.Pack
# Errors that make a pack untrainable: its cells are recorded as failed, the sweep goes on.
TRAINING_ERRORS = (tf.errors.ResourceExhaustedError, tf.errors.InvalidArgumentError,
                   ValueError, RuntimeError)


@contextlib.contextmanager
def frozen_heap():
    """Keeps long-lived objects out of Python's full collections while a sweep runs.

    TensorFlow, Keras and the grid leave hundreds of thousands of long-lived objects, and
    each full (generation 2) collection walked them all while the sweep ran: 0.3-0.35 s
    each, collecting nothing, twice in the 13,530-cell NQM sweep (10 s in all). They fell
    between packs or inside one, a stall the ETA could not foresee (BENCHMARKS.md, issue
    13). Frozen (gc.freeze), they are skipped; what the sweep allocates is still
    collected. Unfrozen at the end, unless the caller had frozen the heap already.

    Yields `refreeze`, for the caller to call between packs: the sweep's own survivors
    (trials, records) grow with the cells done, and a full collection came every other
    pack of that sweep, walking them all: 15 ms after 2 packs, 88 ms after 10, collecting
    nothing (quadratic over a sweep, and a pack's engine time the ETA read from the first
    packs). Refrozen, each walks only what the last pack left.
    """
    already = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield refreeze
    finally:
        if not already:
            gc.unfreeze()


def refreeze() -> None:
    """Freezes what is alive now (frozen_heap), young garbage collected first.

    A cycle frozen stays until the heap is unfrozen, so the young generations (the last
    pack's temporaries; cheap, as they are few) are collected before; garbage that
    already reached the old generation waits for the sweep's end.
    """
    gc.collect(1)
    gc.freeze()


class DiskFullError(RuntimeError):
    """No space left on device: the sweep stopped; records written so far are intact."""


class SweepCheckpoint(pack_checkpoint.PackCheckpoint):
    """A PackCheckpoint that tells the sweep what it did and outlives training.

    The engine clears its checkpoint when training ends; ours stays until the pack's
    records are in the ledger (discard), so a kill in between resumes from it instead
    of retraining the pack from step 0.
    """

    saved_step: Optional[int] = None
    restored_step: int = 0

    def save(self, runner, identity: dict, step: int, extra: Optional[dict] = None) -> None:
        super().save(runner, identity, step, extra)
        self.saved_step = int(step)

    def restore(self, runner, identity: dict) -> int:
        self.restored_step = super().restore(runner, identity)
        return self.restored_step

    def clear(self) -> None:
        pass

    def discard(self) -> None:
        super().clear()


class Sweep:
    """Runs one experiment's sweep in a work directory (alone, or as a keras-tuner worker).

    Args:
      oracle: None builds a local grid oracle, rebuilt from the ledger on every start;
        a keras-tuner OracleClient makes this a worker of a chief (distributed.py).
      tuner_id: this worker's name; a restarted worker must reuse it to reclaim its pack.
    """

    def __init__(self, config, workdir: str, strategy: Optional[tf.distribute.Strategy] = None,
                 dataset=None, tuner_id: str = "worker0", oracle=None,
                 stream=None, progress_interval_s: float = 5.0, idle_poll_s: float = 1.0,
                 clock=time.perf_counter):
        if "://" in str(workdir):
            # The ledger's promises rest on fsync + atomic rename, which object stores lack.
            raise experiments.ConfigError(
                f"--workdir {workdir!r} is a URL; a sweep's work directory must be on a local "
                "(POSIX) file system, whose renames are atomic. Give a local path (on Colab, "
                "a folder of the mounted Google Drive) and copy results to the bucket "
                "afterwards, e.g. gsutil -m rsync -r DIR gs://BUCKET/DIR")
        self.config = config
        self.workdir = workdir
        self.stream = stream
        self._engine = None
        if config.engine == "nqm":
            # The noisy quadratic model: closed-form dynamics, no data set, no TensorFlow.
            from tf_sgd_regimes.theory import nqm_engine

            self.dataset = nqm_engine.NQMData(config)
            self._engine = nqm_engine.NQMEngine(config)
            self.strategy = tf.distribute.get_strategy()
            self.data_fingerprint = None  # the config alone fixes the problem
        else:
            self.dataset = dataset if dataset is not None else load_dataset(config)
            self.strategy = strategy or strategy_lib.get_strategy(config.strategy,
                                                                  config.tpu_address)
            self.data_fingerprint = data_registry.fingerprint(self.dataset)
        experiments.validate(config, self.dataset.num_train,
                             strategy_lib.num_replicas(self.strategy),
                             task=self.dataset.task, split=self.dataset.split)
        # Another data set in this work directory is refused here, before any compute.
        data_registry.check_workdir_data(workdir, self.data_fingerprint)
        self._config_changed = prepare_workdir(workdir, config)
        self.config_hash = experiments.config_hash(config, self.data_fingerprint)
        self.tuner_id = tuner_id
        self.is_worker = oracle is not None
        if oracle is None:
            tuner_dir = os.path.join(workdir, "keras_tuner")
            grid.reset_tuner_state(tuner_dir, report=self._say)
            oracle = grid.make_oracle(config, tuner_dir)
        self.oracle = oracle
        self.cells = grid.all_cells(config, self.dataset.steps_per_epoch)
        self.progress_interval_s = progress_interval_s
        self.clock = clock  # of the progress line and its ETA (a test passes a fake one)
        self.progress: Optional[progress_lib.Progress] = None
        self.idle_poll_s = idle_poll_s
        self._states = resume.CellStates(workdir, report=self._say)
        self.ledger = ledger.Ledger(workdir)
        self.source = handout.CellSource(config, workdir, oracle, tuner_id, self.cells,
                                         self.dataset.steps_per_epoch, self.is_worker,
                                         report=self._say, records=self.ledger)

    @property
    def engine(self) -> engine_lib.Engine:
        if self._engine is None:
            self._engine = engine_lib.Engine(self.config, self.dataset, self.strategy)
        return self._engine

    def _say(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    # -- running ---------------------------------------------------------------------
    def run(self, on_pack: Optional[Callable[[List[dict]], None]] = None,
            should_stop: Optional[Callable[[], bool]] = None) -> List[dict]:
        """Trains every cell without a record; returns all records of the sweep.

        Raises:
          pack_checkpoint.Preempted: SIGTERM (or should_stop) arrived; the running pack's
            checkpoint is saved and the next start resumes it.
          DiskFullError: no space left; records so far are intact, re-run once freed.
          ledger.LedgerError: a corrupt ledger record (the message says what to do).
        """
        done = self.ledger.done_cell_ids()
        remaining = [c for c in self.cells if c.cell_id not in done]
        # What is left per batch size (work, cells, steps): the ETA prices each batch
        # size by its own measured compute, not one rate for all (progress.Progress).
        plan = {}
        for c in remaining:
            row = plan.setdefault(c.batch_size, [0.0, 0, 0])
            row[0] += self._cell_work(c.steps, c.batch_size)
            row[1] += 1
            row[2] += c.steps
        # Which packs to come compile or trace (the engine knows), for the ETA to price.
        predict = getattr(self.engine, "one_offs", None) if remaining else None
        one_offs = None
        if predict is not None:  # the NQM engine compiles nothing: no shapes to list
            shapes = handout.pack_shapes(remaining, int(self.config.sweep.pack_size))
            one_offs = list(zip([b for _, b in shapes], predict(shapes)))
        progress = progress_lib.Progress(
            len(self.cells), sum(row[0] for row in plan.values()),
            done_cells=len(self.cells) - len(remaining), stream=self.stream,
            min_interval_s=self.progress_interval_s, clock=self.clock,
            total_steps=sum(c.steps for c in remaining),
            engine_times_chunks=self.config.get("engine", "keras") == "keras", plan=plan,
            one_offs=one_offs)
        self.progress = progress
        root_logged = os.path.isdir(summaries.tensorboard_dir(self.workdir)) and any(
            n.startswith("events") for n in os.listdir(summaries.tensorboard_dir(self.workdir)))
        self.tensorboard_layout = summaries.choose_layout(
            self.workdir, len(self.cells), per_cell_sessions_max(self.config))
        self._points = {}
        if self.tensorboard_layout == "point":  # run name -> the cells of that grid point
            for cell in self.cells:
                run = summaries.run_name({"optimizer": cell.optimizer,
                                          "batch_size": cell.batch_size}, cell.cell_id, "point")
                self._points.setdefault(run, []).append(cell.cell_id)
        stop_request = signals.StopRequest() if should_stop is None else None
        try:
            with stop_request or contextlib.nullcontext(), frozen_heap() as refreeze_heap:
                stop = should_stop or stop_request
                if not self.is_worker and (self._config_changed or not root_logged):
                    summaries.write_experiment(self.workdir, self.config,
                                               self.dataset.task, self.dataset.split,
                                               self.tensorboard_layout)
                self.source.reclaim()
                resume.prune_finished_checkpoints(self.workdir, self.source.is_done)
                self._states.prune(self.source.is_done)
                while not stop():
                    pack = self.source.next_pack()
                    if not isinstance(pack, Pack):
                        if pack == handout.STOPPED or self.source.grid_done():
                            break
                        time.sleep(self.idle_poll_s)  # IDLE: other workers hold the rest
                        continue
                    new_records = self._run_pack(pack, progress, stop)
                    refreeze_heap()
                    if on_pack is not None:
                        on_pack(new_records)
                else:
                    raise pack_checkpoint.Preempted("stop requested (SIGTERM); the next start resumes")
        except Exception as e:
            self._save_oracle()
            if resume.is_disk_full(e):
                have = len(self.ledger.done_cell_ids())
                raise DiskFullError(
                    f"no space left on device while writing under {self.workdir} ({e}). "
                    f"The sweep stopped cleanly; the {have} records written so far are intact. "
                    "Free some space and re-run the same command: it resumes.") from e
            raise
        self._save_oracle()
        if not self.is_worker and self.source.grid_done():
            shutil.rmtree(resume.checkpoints_dir(self.workdir), ignore_errors=True)
        return self.ledger.read()

    def _cell_work(self, steps: int, batch_size: int) -> float:
        """The engine's cost model of a cell (progress_lib.cell_work unless it has its own)."""
        if self._engine is None:  # the TF engine, built lazily: its model needs no instance
            return engine_lib.cell_work(self.config, self.strategy, steps, batch_size)
        model = getattr(self._engine, "cell_work", progress_lib.cell_work)
        return model(steps, batch_size)

    def _save_oracle(self) -> None:
        """The local oracle saves its state now and then (grid.PackedGridOracle); a
        sweep that stops saves it once more, so the file shows the whole sweep."""
        if not self.is_worker and hasattr(self.oracle, "flush"):
            try:
                self.oracle.flush()
            except OSError as e:  # e.g. disk full: the ledger has everything
                self._say(f"[sweep] warning: keras-tuner state not saved ({e})")

    def _train(self, members, first, checkpoint, on_chunk, should_stop):
        try:
            return self.engine.train_pack(members, first.batch_size, first.steps, on_chunk,
                                          checkpoint=checkpoint, should_stop=should_stop)
        except pack_checkpoint.CheckpointError as e:
            # Retraining from step 0 loses time, not correctness; the TensorBoard marks
            # keep already-written steps from being written again.
            self._say(f"[sweep] warning: {e}; retraining the pack from step 0")
            checkpoint.discard()
            return self.engine.train_pack(members, first.batch_size, first.steps, on_chunk,
                                          checkpoint=checkpoint, should_stop=should_stop)

    def _run_pack(self, pack: Pack, progress, should_stop) -> List[dict]:
        cells, first = pack.cells, pack.cells[0]
        ids = [c.cell_id for c in cells]
        open_cells = [c for c in cells if c.cell_id in pack.trials]
        # Persisted before training: a restarted worker re-forms exactly this pack.
        self.source.save(pack)
        key = resume.pack_key(ids, first.batch_size, first.steps)
        attempts = self._states.start([c.cell_id for c in open_cells], key)
        members = [engine_lib.Member(c.cell_id, c.effective_lr, c.momentum, c.seed)
                   for c in cells]
        checkpoint = SweepCheckpoint(
            os.path.join(resume.checkpoints_dir(self.workdir), key),
            float(self.config.train.checkpoint_every_s))
        step_work = len(cells) * self._cell_work(first.steps, first.batch_size) / first.steps
        progress.start_pack(f"pack B={first.batch_size} steps={first.steps} "
                            f"members={len(cells)}", step_work * first.steps,
                            cells=len(open_cells), steps=first.steps,
                            batch_size=first.batch_size)
        writers = summaries.PackWriters(
            self.workdir, ids, states=self._states, active=pack.trials,
            hparams={c.cell_id: c.hparams() for c in open_cells},
            layout=self.tensorboard_layout, pack_key=key, points=self._points,
            recorded=self.ledger.record)
        pack_id = f"{self.tuner_id}-{pack.trials[open_cells[0].cell_id].trial_id}"
        log_every = int(self.config.train.log_every_steps)
        last_logged = [None]

        def on_chunk(report: engine_lib.ChunkReport) -> None:
            if last_logged[0] is None:
                last_logged[0] = checkpoint.restored_step
                if checkpoint.restored_step:
                    progress.pack_resumed(checkpoint.restored_step * step_work)
            if not log_every or report.step - last_logged[0] >= log_every \
                    or report.step == report.total_steps:
                writers.scalars(report.step, {"train/loss": report.mean_loss,
                                              "train/effective_lr": report.effective_lr})
                last_logged[0] = report.step
            if checkpoint.saved_step == report.step:
                writers.flush()  # only now: nothing on disk runs ahead of the checkpoint
            alive = int(np.sum(report.diverged_at < 0))
            progress.pack_step(report.step * step_work,
                               f"step {report.step}/{report.total_steps} alive {alive}",
                               compute_s=report.compute_s, one_off_s=report.one_off_s)

        start = time.perf_counter()
        try:
            try:
                results, error = self._train(members, first, checkpoint, on_chunk,
                                             should_stop), None
            except TRAINING_ERRORS as e:
                if isinstance(e, pack_checkpoint.Preempted) or resume.is_disk_full(e):
                    raise
                # A pack that cannot train is recorded as failed, cell by cell.
                results = None
                error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"
                writers.flush()  # the curve so far; completed cells put theirs in final()
            progress.training_done()
            wall = (time.perf_counter() - start) / len(cells)
            records = []
            for k, cell in enumerate(cells):
                if cell.cell_id not in pack.trials:
                    continue  # recorded by an earlier attempt; trained again for shape only
                record = {
                    "cell_id": cell.cell_id, "experiment": self.config.name,
                    "hparams": cell.hparams(), "wall_time_s": wall,
                    "attempt": attempts[cell.cell_id],
                    "resumed_from_step": checkpoint.restored_step,
                    "config_hash": self.config_hash, "versions": versions(),
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    "pack_id": pack_id, "data": self.data_fingerprint,
                }
                if results is None:
                    record.update(status="failed", metrics={}, diverged_step=None,
                                  error=error, steps_done=0)
                else:
                    result = results[k]
                    record.update(status=result.status, metrics=result.metrics,
                                  diverged_step=result.diverged_step, error=None,
                                  steps_done=result.steps_done)
                    writers.final(k, cell.cell_id, cell.hparams(), result.metrics,
                                  result.diverged_step, result.steps_done)
                records.append(record)
                progress.cell_done(record["status"] == "diverged",
                                   failed=record["status"] == "failed")
            writers.finish()  # the point layout's files (the cell layout's are written)
            # The pack's records, in one segment: all of them or (killed before) none.
            self.ledger.commit(records)
        finally:
            writers.close()
        for record in records:
            score = record["metrics"].get(self.config.analysis.selection_metric)
            self.source.end_trial(pack.trials[record["cell_id"]],
                                  self.source.worst_score() if score is None else score,
                                  "FAILED" if record["status"] == "failed" else "COMPLETED")
        checkpoint.discard()
        self._states.finish(key)
        progress.end_pack(0, 0, step_work * first.steps)
        return records
