"""TensorBoard output: one run per cell (its HParams session and curves), grouped by
(optimizer, batch size).

Layout of <workdir>/tensorboard/:
  events.out.tfevents.*                 the HParams experiment (domains, metric columns)
  <optimizer>_B<batch size>/<cell_id>/  one run per cell: HParams session, final metrics
                                        and loss curve
TensorBoard's HParams dashboard knows one session per run, so the per-cell view needs a
run per cell; the group directories keep the run list navigable (filter by
"momentum_B00064/", or point --logdir at one group). A cell's run is normally ONE event
file, written when its pack ends (`FINAL_EVENTS_FILE`, replaced atomically). Curve
points written earlier (the pack checkpointed mid-training, so they were flushed
alongside the checkpoint for live viewing) sit in timestamped event files before it.
"""

import os
import shutil
import socket
import tempfile
import time
from typing import Dict, Iterable, List, Optional, Sequence

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.proto import tensor_pb2
from tensorboard.compat.proto import tensor_shape_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter

# Hyperparameters shown in the HParams dashboard, in this column order.
# "tfevents" makes TensorBoard read it; "9999999999" sorts it after timestamped files.
FINAL_EVENTS_FILE = "events.out.tfevents.9999999999.final.v2"
HPARAM_NAMES = ("optimizer", "batch_size", "effective_lr", "momentum", "seed", "epochs",
                "steps")


def tensorboard_dir(workdir: str) -> str:
    return os.path.join(workdir, "tensorboard")


def run_name(hparams: dict, cell_id: str) -> str:
    """The cell's run, relative to tensorboard_dir: "<optimizer>_B<00064>/<cell_id>"."""
    return f"{hparams['optimizer']}_B{int(hparams['batch_size']):05d}/{cell_id}"


def run_dir(workdir: str, record: dict) -> str:
    """The TensorBoard run of a ledger record (or anything with cell_id and hparams)."""
    return os.path.join(tensorboard_dir(workdir), run_name(record["hparams"], record["cell_id"]))


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
    """The TensorBoard runs of a pack's cells, with scalars held in memory.

    Curve scalars are buffered. flush() (right after each checkpoint save) writes them
    to a timestamped event file per cell, so the scalars on disk never run ahead of what
    a resumed pack replays; final() writes whatever is still buffered into the cell's
    final event file with its HParams and final metrics. With `states`
    (resume.CellStates) each cell's high-water mark is saved before flush() writes and
    steps at or below it are skipped: a resumed or retrained cell never writes a step
    twice, whatever moment the previous attempt was killed at. Steps in the final file
    need no mark: a later attempt replaces that file whole.

    Files are written synchronously with TensorBoard's record format (no writer thread
    per cell, no file per cell until there is something to write).
    """

    def __init__(self, workdir: str, cell_ids: Sequence[str], states=None,
                 active: Optional[Iterable[str]] = None,
                 runs: Optional[Dict[str, str]] = None):
        root = tensorboard_dir(workdir)
        self.workdir, self.root = workdir, root
        self.cell_ids = list(cell_ids)
        self.states = states
        # Cells already recorded (re-trained only to keep a resumed pack's shape) stay as is.
        self.active = set(self.cell_ids if active is None else active)
        self.paths = {cell_id: os.path.join(root, (runs or {}).get(cell_id, cell_id))
                      for cell_id in self.cell_ids if cell_id in self.active}
        self._files: Dict[str, str] = {}  # cell_id -> curve file of this attempt
        self._suffix = f"{socket.gethostname()}.{os.getpid()}.{time.time_ns()}.v2"
        if states is not None:
            reset = [c for c in self.paths if states.needs_tensorboard_reset(c)]
            for cell_id in reset:
                shutil.rmtree(self.paths[cell_id], ignore_errors=True)
            if reset:
                states.update({c: {"tensorboard_step": 0} for c in reset})
        self._buffer: List[tuple] = []

    @property
    def writers(self) -> Dict[str, str]:
        """cell_id -> run directory of the cells this pack writes."""
        return self.paths

    def scalars(self, step: int, values: Dict[str, Sequence[float]]) -> None:
        """values: name -> one value per member; NaN values are skipped. Buffered."""
        self._buffer.append((int(step), {name: [float(v) for v in per_member]
                                         for name, per_member in values.items()}))

    def _mark(self, cell_id: str) -> int:
        return int(self.states.get(cell_id)["tensorboard_step"]) if self.states else -1

    def _rows(self, k: int, cell_id: str) -> List[bytes]:
        """Buffered scalar events of member k above the cell's mark, serialized."""
        mark = self._mark(cell_id)
        return [_scalar_event(name, per_member[k], step).SerializeToString()
                for step, values in self._buffer if step > mark
                for name, per_member in values.items()
                if per_member[k] == per_member[k]]  # not NaN

    def flush(self) -> None:
        """Writes the buffered scalars (each cell's steps above its mark) to disk."""
        if not self._buffer:
            return
        last = self._buffer[-1][0]
        rows = {cell_id: self._rows(k, cell_id) for k, cell_id in enumerate(self.cell_ids)
                if cell_id in self.paths}
        rows = {cell_id: r for cell_id, r in rows.items() if r}
        if self.states is not None and rows:  # marks first: a kill now leaves a gap, not a repeat
            self.states.update({cell_id: {"tensorboard_step": last} for cell_id in rows})
        for cell_id, events in rows.items():
            if cell_id not in self._files:
                os.makedirs(self.paths[cell_id], exist_ok=True)
                self._files[cell_id] = os.path.join(
                    self.paths[cell_id],
                    f"events.out.tfevents.{int(time.time()):010d}.{self._suffix}")
                events = [_file_version()] + events
            # Opened per flush, not held: a pack of thousands of cells would otherwise
            # hold a file descriptor per cell.
            with open(self._files[cell_id], "ab") as f:
                writer = RecordWriter(f)
                for event in events:
                    writer.write(event)
        self._buffer.clear()

    def final(self, k: int, cell_id: str, hparams: dict, metrics: dict, diverged_step,
              step: int) -> None:
        """The cell's HParams, final metrics and unflushed curve, in one event file
        under a fixed name.

        Written to a temporary name, then renamed into the run: a kill leaves either no
        file or a whole one, and a later attempt replaces it rather than adding a second
        session. The name sorts after every timestamped event file, so these steps come
        last.
        """
        if cell_id not in self.paths:
            return
        path = self.paths[cell_id]
        os.makedirs(path, exist_ok=True)
        session = hparams_api.hparams_pb({name: hparams[name] for name in HPARAM_NAMES},
                                         trial_id=cell_id)
        events = [_file_version(), event_pb2.Event(wall_time=time.time(), step=int(step),
                                                   summary=session).SerializeToString()]
        events += self._rows(k, cell_id)
        finals = [(f"final/{name}", value) for name, value in metrics.items()
                  if value is not None]
        finals.append(("final/diverged", 1.0 if diverged_step is not None else 0.0))
        if diverged_step is not None:
            finals.append(("final/diverged_step", diverged_step))
        events += [_scalar_event(tag, value, step).SerializeToString()
                   for tag, value in finals]
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                writer = RecordWriter(f)
                for event in events:
                    writer.write(event)
            os.replace(tmp, os.path.join(path, FINAL_EVENTS_FILE))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def close(self) -> None:
        """Ends the pack's writing; scalars still buffered are dropped (they would run
        ahead of the checkpoint)."""
        self._buffer.clear()


def _file_version() -> bytes:
    return event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString()


_SCALAR_METADATA = scalar_summary.scalar_pb("_", 0.0).value[0].metadata


def _scalar_event(tag: str, value, step: int):
    """A scalar as a plain event proto, in the TF2 tensor format of scalar_pb.

    Written with TensorBoard's record format rather than tf.summary ops: an eager
    tf.summary.scalar costs about 2 ms, which over a sweep of a thousand cells was tens of
    seconds of the embedded demo. The tensor proto is built directly (scalar_pb's generic
    make_tensor_proto was a third of a NQM sweep's TensorBoard time); a test checks the
    two agree.
    """
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=tag, metadata=_SCALAR_METADATA,
        tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[float(value)],
                                      tensor_shape=tensor_shape_pb2.TensorShapeProto()))])
    return event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
