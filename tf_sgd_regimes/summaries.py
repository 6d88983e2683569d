"""TensorBoard output: one run per cell with scalars and HParams."""

import os
import shutil
import time
from typing import Dict, Iterable, List, Optional, Sequence

from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

# Hyperparameters shown in the HParams dashboard, in this column order.
# "tfevents" makes TensorBoard read it; "9999999999" sorts it after timestamped files.
FINAL_EVENTS_FILE = "events.out.tfevents.9999999999.final.v2"
HPARAM_NAMES = ("optimizer", "batch_size", "effective_lr", "momentum", "seed", "epochs",
                "steps")


def tensorboard_dir(workdir: str) -> str:
    return os.path.join(workdir, "tensorboard")


def metric_names(task: str, split: str) -> list:
    """The HParams dashboard's metrics: the task's own (tasks.metric_names), its selection
    metric first, so a registered task shows its metrics without an entry here."""
    if task == "quadratic":
        # The noisy quadratic model (theory/nqm_engine.py): one loss, and its expectation.
        names = [f"{split}_loss", "train_loss", "expected_loss"]
    else:
        from tf_sgd_regimes import tasks

        first, _ = tasks.selection(task, split)
        names = [first] + [n for n in tasks.metric_names(task, split) if n != first]
    return [f"final/{n}" for n in names] + ["final/diverged", "final/diverged_step"]


def write_experiment(workdir: str, config, task: str, split: str) -> None:
    """Declares the HParams experiment (domains and metrics) once, at the log root."""
    sweep = config.sweep
    domains = [
        hparams_api.HParam("optimizer", hparams_api.Discrete(list(sweep.optimizers))),
        hparams_api.HParam("batch_size", hparams_api.Discrete([int(b) for b in
                                                              sweep.batch_sizes])),
        hparams_api.HParam("effective_lr", hparams_api.RealInterval(
            float(min(sweep.effective_lrs)), float(max(sweep.effective_lrs)))),
        hparams_api.HParam("momentum", hparams_api.RealInterval(0.0, 1.0)),
        hparams_api.HParam("seed", hparams_api.Discrete([int(s) for s in sweep.seeds])),
        hparams_api.HParam("epochs", hparams_api.RealInterval(0.0, 1e9)),
        hparams_api.HParam("steps", hparams_api.IntInterval(0, 2**62)),
    ]
    metrics = [hparams_api.Metric(name, display_name=name.split("/", 1)[1])
               for name in metric_names(task, split)]
    writer = EventFileWriter(tensorboard_dir(workdir))
    config_pb = hparams_api.hparams_config_pb(hparams=domains, metrics=metrics)
    writer.add_event(event_pb2.Event(wall_time=time.time(), summary=config_pb))
    writer.close()


class PackWriters:
    """One summary writer per cell of a pack, with scalars held in memory until flush().

    The sweep flushes right after each checkpoint save and at the end of the pack, so
    the scalars on disk never run ahead of what a resumed pack replays. With `states`
    (resume.CellStates) each cell's high-water mark is written before its scalars and
    steps at or below it are skipped: a resumed or retrained cell never writes a step
    twice, whatever moment the previous attempt was killed at.
    """

    def __init__(self, workdir: str, cell_ids: Sequence[str], states=None,
                 active: Optional[Iterable[str]] = None):
        root = tensorboard_dir(workdir)
        self.workdir, self.root = workdir, root
        self.cell_ids = list(cell_ids)
        self.states = states
        # Cells already recorded (re-trained only to keep a resumed pack's shape) stay as is.
        self.active = set(self.cell_ids if active is None else active)
        self.writers = {}
        for cell_id in self.cell_ids:
            if cell_id not in self.active:
                continue
            path = os.path.join(root, cell_id)
            if states is not None and states.needs_tensorboard_reset(cell_id):
                shutil.rmtree(path, ignore_errors=True)
                states.put(cell_id, tensorboard_step=0)
            self.writers[cell_id] = EventFileWriter(path)
        self._buffer: List[tuple] = []

    def scalars(self, step: int, values: Dict[str, Sequence[float]]) -> None:
        """values: name -> one value per member; NaN values are skipped. Buffered."""
        self._buffer.append((int(step), {name: [float(v) for v in per_member]
                                         for name, per_member in values.items()}))

    def _mark(self, cell_id: str) -> int:
        return int(self.states.get(cell_id)["tensorboard_step"]) if self.states else -1

    def flush(self) -> None:
        """Writes the buffered scalars (each cell's steps above its mark) to disk."""
        if not self._buffer:
            return
        last = self._buffer[-1][0]
        for k, cell_id in enumerate(self.cell_ids):
            if cell_id not in self.writers:
                continue
            mark = self._mark(cell_id)
            rows = [(step, values) for step, values in self._buffer if step > mark]
            if not rows:
                continue
            if self.states is not None:  # the mark first: a kill now leaves a gap, not a repeat
                self.states.put(cell_id, tensorboard_step=last)
            writer = self.writers[cell_id]
            for step, values in rows:
                for name, per_member in values.items():
                    if per_member[k] == per_member[k]:  # not NaN
                        writer.add_event(_scalar_event(name, per_member[k], step))
            writer.flush()
        self._buffer.clear()

    def final(self, k: int, cell_id: str, hparams: dict, metrics: dict, diverged_step,
              step: int) -> None:
        """The cell's HParams and final metrics, in one event file under a fixed name.

        Written in a staging directory, then renamed into the run: a kill leaves either
        no file or a whole one, and a later attempt replaces it rather than adding a
        second session. The name sorts after every timestamped event file, so these
        steps come last.
        """
        self.flush()
        if cell_id not in self.writers:
            return
        staging = os.path.join(self.workdir, "tmp", "tensorboard", cell_id)
        shutil.rmtree(staging, ignore_errors=True)
        writer = EventFileWriter(staging)
        session = hparams_api.hparams_pb({name: hparams[name] for name in HPARAM_NAMES},
                                         trial_id=cell_id)
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                         summary=session))
        for name, value in metrics.items():
            if value is not None:
                writer.add_event(_scalar_event(f"final/{name}", value, step))
        writer.add_event(_scalar_event("final/diverged",
                                       1.0 if diverged_step is not None else 0.0, step))
        if diverged_step is not None:
            writer.add_event(_scalar_event("final/diverged_step", diverged_step, step))
        writer.close()
        (staged,) = [n for n in os.listdir(staging) if "tfevents" in n]
        os.replace(os.path.join(staging, staged),
                   os.path.join(self.root, cell_id, FINAL_EVENTS_FILE))
        shutil.rmtree(staging, ignore_errors=True)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def _scalar_event(tag: str, value, step: int):
    """A scalar as a plain event proto.

    Written with TensorBoard's own Python event writer rather than tf.summary ops: an eager
    tf.summary.scalar costs about 2 ms, which over a sweep of a thousand cells was tens of
    seconds of the embedded demo.
    """
    summary = scalar_summary.scalar_pb(tag, float(value))  # the TF2 tensor format
    return event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
