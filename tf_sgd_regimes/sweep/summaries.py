"""TensorBoard output: HParams sessions and curves, one run per cell or, for large sweeps,
one run per grid point (optimizer, batch size, learning rate, budget) holding its seeds.

Layout of <workdir>/tensorboard/:
  events.out.tfevents.*     the HParams experiment (domains, metric columns)
  layout.json               which of the two layouts below this sweep uses (kept once
                            chosen, so a grid that grows keeps its layout)

  "cell" layout, sweeps of at most config.tensorboard.per_cell_sessions_max cells:
  <optimizer>_B<batch size>/<cell_id>/      one run per cell: its HParams session (seed
                                            included), final metrics and loss curve
  "point" layout, larger sweeps:
  <optimizer>_B<batch size>/<point_id>/     one run per grid point (a cell id without its
                                            seed, e.g. sgd_B00064_lr0.125_E10): a session
                                            whose metrics are the means over its recorded
                                            seeds (final/diverged: the fraction diverged,
                                            final/seeds: how many), and each seed's curve
                                            and final metrics under tags s<seed>/...

TensorBoard's HParams dashboard takes one session per run, and the run count is what its
load time grows with (BENCHMARKS.md), so a sweep of 10,000+ cells gets one session per
grid point: the point the paper's analysis is about (the mean over seeds), 15 times fewer
runs, and a directory and an event file per point rather than per cell.
`python -m tf_sgd_regimes.sweep.summaries --workdir=DIR --cells=GLOB` writes per-cell runs for
a chosen subset into DIR/tensorboard_cells/ from the ledger and the point runs.

A cell's final event file (`FINAL_EVENTS_FILE` in the cell layout; one per pack and point
in the point layout) is written when its pack ends, replaced atomically. Curve points
written earlier (the pack checkpointed mid-training, so they were flushed alongside the
checkpoint for live viewing) sit in timestamped event files before it.
"""

import argparse
import fnmatch
import glob
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.proto import tensor_pb2
from tensorboard.compat.proto import tensor_shape_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter

from tf_sgd_regimes import atomic

# Hyperparameters shown in the HParams dashboard, in this column order.
# "tfevents" makes TensorBoard read it; "9999999999" sorts it after timestamped files.
FINAL_EVENTS_FILE = "events.out.tfevents.9999999999.final.v2"
HPARAM_NAMES = ("optimizer", "batch_size", "effective_lr", "momentum", "seed", "epochs",
                "steps")


LAYOUTS = ("cell", "point")
LAYOUT_FILE = "layout.json"


def tensorboard_dir(workdir: str) -> str:
    return os.path.join(workdir, "tensorboard")


def point_id(cell_id: str) -> str:
    """The grid point of a cell: its id without the seed ("..._E10_s3" -> "..._E10")."""
    return cell_id.rsplit("_s", 1)[0]


def run_name(hparams: dict, cell_id: str, layout: str = "cell") -> str:
    """The cell's run, relative to tensorboard_dir: "<optimizer>_B<00064>/<cell_id>", or
    in the point layout "<optimizer>_B<00064>/<point_id>"."""
    name = cell_id if layout == "cell" else point_id(cell_id)
    return f"{hparams['optimizer']}_B{int(hparams['batch_size']):05d}/{name}"


def tag_prefix(hparams: dict, layout: str = "cell") -> str:
    """Where a cell's tags sit in its run: at the top ("cell"), or under "s<seed>/"."""
    return "" if layout == "cell" else f"s{int(hparams['seed'])}/"


def run_dir(workdir: str, record: dict, layout: Optional[str] = None) -> str:
    """The TensorBoard run of a ledger record (or anything with cell_id and hparams)."""
    layout = layout or read_layout(workdir) or "cell"
    return os.path.join(tensorboard_dir(workdir),
                        run_name(record["hparams"], record["cell_id"], layout))


def read_layout(workdir: str) -> Optional[str]:
    """The layout of the sweep's TensorBoard logs; None before the first start.

    Work directories of earlier versions (no layout file, runs already there) hold
    per-cell runs."""
    root = tensorboard_dir(workdir)
    try:
        with open(os.path.join(root, LAYOUT_FILE)) as f:
            layout = json.load(f).get("layout")
        if layout in LAYOUTS:
            return layout
    except (OSError, ValueError, AttributeError):
        pass
    if os.path.isdir(root) and any(os.path.isdir(os.path.join(root, n))
                                   for n in os.listdir(root)):
        return "cell"
    return None


def choose_layout(workdir: str, total_cells: int, per_cell_sessions_max: int) -> str:
    """The layout kept from an earlier start, else "cell" for sweeps of at most
    `per_cell_sessions_max` cells and "point" above; saved in tensorboard/layout.json."""
    path = os.path.join(tensorboard_dir(workdir), LAYOUT_FILE)
    layout = read_layout(workdir)
    if layout is None:
        layout = "cell" if total_cells <= per_cell_sessions_max else "point"
    elif os.path.exists(path):
        return layout
    atomic.write_atomic(path, json.dumps({"layout": layout, "cells": total_cells,
                                          "per_cell_sessions_max": per_cell_sessions_max})
                        + "\n")
    return layout


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


def write_experiment(workdir: str, config, task: str, split: str,
                     layout: str = "cell") -> None:
    """Declares the HParams experiment (domains and metrics) once, at the log root.
    In the point layout a session is a grid point: no seed column, and a "seeds" metric."""
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
    names = metric_names(task, split)
    if layout == "point":
        domains = [d for d in domains if d.name != "seed"]
        names = names[:-1] + ["final/seeds"]  # a mean has no diverged step
    metrics = [hparams_api.Metric(name, display_name=name.split("/", 1)[1])
               for name in names]
    writer = EventFileWriter(tensorboard_dir(workdir))
    config_pb = hparams_api.hparams_config_pb(hparams=domains, metrics=metrics)
    writer.add_event(event_pb2.Event(wall_time=time.time(), summary=config_pb))
    writer.close()


class PackWriters:
    """The TensorBoard runs of a pack's cells, with scalars held in memory.

    Curve scalars are buffered. flush() (right after each checkpoint save) writes them
    to a timestamped event file per run, so the scalars on disk never run ahead of what
    a resumed pack replays; final() hands over a cell's HParams and final metrics with
    whatever is still buffered, and finish() writes them: in the cell layout each cell's
    final event file, in the point layout one file per grid point of the pack, whose
    point metrics are the means over the seeds recorded so far (this pack's, and
    earlier packs' through `recorded`, cell_id -> ledger record or None). With `states`
    (resume.CellStates) each cell's high-water mark is saved before flush() writes and
    steps at or below it are skipped: a resumed or retrained cell never writes a step
    twice, whatever moment the previous attempt was killed at. Steps in final files
    need no mark: a later attempt of the pack replaces its final files whole.

    Files are written synchronously with TensorBoard's record format (no writer thread
    per cell, no file per cell until there is something to write).
    """

    def __init__(self, workdir: str, cell_ids: Sequence[str], states=None,
                 active: Optional[Iterable[str]] = None,
                 hparams: Optional[Dict[str, dict]] = None, layout: str = "cell",
                 pack_key: str = "pack", points: Optional[Dict[str, List[str]]] = None,
                 recorded: Optional[Callable[[str], Optional[dict]]] = None):
        root = tensorboard_dir(workdir)
        self.workdir, self.root, self.layout = workdir, root, layout
        self.cell_ids = list(cell_ids)
        self.states = states
        # Cells already recorded (re-trained only to keep a resumed pack's shape) stay as is.
        self.active = set(self.cell_ids if active is None else active)
        hparams = hparams or {}
        self.paths, self.prefixes = {}, {}
        for cell_id in self.cell_ids:
            if cell_id not in self.active:
                continue
            h = hparams.get(cell_id)
            self.paths[cell_id] = os.path.join(
                root, run_name(h, cell_id, layout) if h else cell_id)
            self.prefixes[cell_id] = tag_prefix(h, layout) if h else ""
        self.points = points or {}  # point run name -> the cell ids of the grid point
        self.recorded = recorded or (lambda cell_id: None)
        self.pack_key = pack_key
        self._files: Dict[str, str] = {}  # run directory -> curve file of this attempt
        self._suffix = f"{pack_key}.{socket.gethostname()}.{os.getpid()}.{time.time_ns()}.v2"
        self._finals: Dict[str, list] = {}  # run directory -> [(cell_id, events, finals)]
        if states is not None:
            reset = [c for c in self.paths if states.needs_tensorboard_reset(c)]
            for cell_id in reset:
                if layout == "cell":
                    shutil.rmtree(self.paths[cell_id], ignore_errors=True)
                else:  # a point's run is shared with other packs: only this pack's files
                    for path in glob.glob(os.path.join(glob.escape(self.paths[cell_id]),
                                                       f"*.{pack_key}.*")):
                        os.unlink(path)
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
        mark, prefix = self._mark(cell_id), self.prefixes[cell_id]
        return [_scalar_event(prefix + name, per_member[k], step).SerializeToString()
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
        by_run: Dict[str, List[bytes]] = {}
        for cell_id, events in rows.items():
            by_run.setdefault(self.paths[cell_id], []).extend(events)
        for path, events in by_run.items():
            if path not in self._files:
                os.makedirs(path, exist_ok=True)
                self._files[path] = os.path.join(
                    path, f"events.out.tfevents.{int(time.time()):010d}.{self._suffix}")
                events = [_file_version()] + events
            # Opened per flush, not held: a pack of thousands of cells would otherwise
            # hold a file descriptor per cell.
            with open(self._files[path], "ab") as f:
                writer = RecordWriter(f)
                for event in events:
                    writer.write(event)
        self._buffer.clear()

    def final(self, k: int, cell_id: str, hparams: dict, metrics: dict, diverged_step,
              step: int) -> None:
        """The cell's HParams, final metrics and unflushed curve; written by finish()
        (in the cell layout, at once: one event file under a fixed name)."""
        if cell_id not in self.paths:
            return
        prefix = self.prefixes[cell_id]
        finals = [(f"final/{name}", value) for name, value in metrics.items()
                  if value is not None]
        finals.append(("final/diverged", 1.0 if diverged_step is not None else 0.0))
        if diverged_step is not None:
            finals.append(("final/diverged_step", diverged_step))
        events = self._rows(k, cell_id) + [
            _scalar_event(prefix + tag, value, step).SerializeToString()
            for tag, value in finals]
        if self.layout == "cell":
            session = hparams_api.hparams_pb({name: hparams[name] for name in HPARAM_NAMES},
                                             trial_id=cell_id)
            head = event_pb2.Event(wall_time=time.time(), step=int(step), summary=session)
            _write_events(self.paths[cell_id], FINAL_EVENTS_FILE,
                          [_file_version(), head.SerializeToString()] + events)
            return
        self._finals.setdefault(self.paths[cell_id], []).append(
            (cell_id, hparams, metrics, diverged_step, step, events))

    def finish(self) -> None:
        """Writes the point layout's files: per grid point of the pack, its session with
        the means over the seeds recorded so far, then this pack's seeds' events.

        Named "<FINAL prefix>.<seeds in the mean>.<pack key>": later files of a point
        (more seeds) sort after earlier ones and their point metrics sit at a larger
        step, so TensorBoard shows the latest means; a retried pack replaces its own
        files."""
        for path, cells in self._finals.items():
            run = os.path.relpath(path, self.root)
            mine = {cell_id: (metrics, diverged) for cell_id, _, metrics, diverged, _, _
                    in cells}
            outcomes = []  # (metrics, diverged) of every recorded seed of the point
            for cell_id in self.points.get(run, list(mine)):
                if cell_id in mine:
                    outcomes.append(mine[cell_id])
                    continue
                record = self.recorded(cell_id)
                if record is not None:
                    outcomes.append((record.get("metrics") or {},
                                     record.get("diverged_step")))
            seeds = len(outcomes)
            hparams = {name: cells[0][1][name] for name in HPARAM_NAMES if name != "seed"}
            session = hparams_api.hparams_pb(hparams, trial_id=os.path.basename(path))
            events = [_file_version(), event_pb2.Event(
                wall_time=time.time(), step=seeds, summary=session).SerializeToString()]
            names = sorted({n for metrics, _ in outcomes for n in metrics})
            means = [("final/seeds", float(seeds)),
                     ("final/diverged",
                      sum(d is not None for _, d in outcomes) / max(seeds, 1))]
            for name in names:
                values = [m[name] for m, _ in outcomes if m.get(name) is not None]
                if values:
                    means.append((f"final/{name}", sum(values) / len(values)))
            events += [_scalar_event(tag, value, seeds).SerializeToString()
                       for tag, value in means]
            for cell in cells:
                events += cell[5]
            for old in glob.glob(os.path.join(glob.escape(path),
                                              f"*.final.*.{self.pack_key}.v2")):
                os.unlink(old)  # an earlier attempt of this pack, with another count
            _write_events(path, f"{FINAL_EVENTS_FILE[:-len('.final.v2')]}.final."
                          f"{seeds:05d}.{self.pack_key}.v2", events)
        self._finals.clear()

    def close(self) -> None:
        """Ends the pack's writing; scalars still buffered are dropped (they would run
        ahead of the checkpoint)."""
        self._buffer.clear()
        self._finals.clear()


def _write_events(directory: str, name: str, events: List[bytes]) -> None:
    """Writes a whole event file: to a temporary name, then renamed into place, so a
    kill leaves either no file or a whole one, and a later attempt replaces it."""
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            writer = RecordWriter(f)
            for event in events:
                writer.write(event)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


# ------------------------------------------------------------------ reading and export


def run_scalars(run_directory: str) -> Dict[str, Dict[int, float]]:
    """tag -> {step: value} of the scalars in a run's event files, read in TensorBoard's
    order (file name), so a later value of a step wins as it does in TensorBoard. A file
    cut short by a kill mid-write is read up to the cut."""
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.util import tensor_util

    out: Dict[str, Dict[int, float]] = {}
    names = sorted(n for n in (os.listdir(run_directory) if os.path.isdir(run_directory)
                               else ()) if "tfevents" in n and not n.startswith("."))
    for name in names:
        loader = event_file_loader.RawEventFileLoader(os.path.join(run_directory, name))
        for raw in loader.Load():
            event = event_pb2.Event.FromString(raw)
            for value in event.summary.value:
                if value.HasField("tensor"):  # ours (float_val) or tf.summary's (packed)
                    if value.tensor.dtype not in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE) \
                            or value.tensor.tensor_shape.dim:
                        continue
                    number = float(tensor_util.make_ndarray(value.tensor))
                elif value.HasField("simple_value"):
                    number = float(value.simple_value)
                else:
                    continue
                out.setdefault(value.tag, {})[int(event.step)] = number
    return out


def cell_scalars(workdir: str, record: dict) -> Dict[str, Dict[int, float]]:
    """tag -> {step: value} of one cell's own scalars (train/loss, final/..., ...),
    whichever layout the sweep wrote."""
    layout = read_layout(workdir) or "cell"
    directory = run_dir(workdir, record, layout)
    if not os.path.isdir(directory):  # earlier versions: tensorboard/<cell_id>
        directory = os.path.join(tensorboard_dir(workdir), record["cell_id"])
    scalars = run_scalars(directory)
    prefix = tag_prefix(record["hparams"], layout)
    if not prefix:
        return scalars
    return {tag[len(prefix):]: values for tag, values in scalars.items()
            if tag.startswith(prefix)}


def export_cells(workdir: str, pattern: str, out: Optional[str] = None) -> List[str]:
    """Writes one TensorBoard run per cell whose id matches `pattern` (fnmatch, e.g.
    "momentum_B00064_*") into `out` (default <workdir>/tensorboard_cells): its HParams
    session with the seed, final metrics from the ledger and its curve from the sweep's
    runs, for a per-cell HParams view of a subset of a large sweep. Returns the cells."""
    from tf_sgd_regimes.sweep import ledger

    out = out or os.path.join(workdir, "tensorboard_cells")
    records = [r for r in ledger.read(workdir) if fnmatch.fnmatchcase(r["cell_id"], pattern)]
    if not records:
        raise ValueError(f"no recorded cell of {workdir} matches {pattern!r}; cell ids look "
                         "like momentum_B00064_lr0.125_E10_s3 (use * and ?)")
    metrics = set()
    for record in records:
        scalars = cell_scalars(workdir, record)
        h = record["hparams"]
        step = int(record.get("steps_done") or h.get("steps") or 0)
        session = hparams_api.hparams_pb({name: h[name] for name in HPARAM_NAMES},
                                         trial_id=record["cell_id"])
        events = [_file_version(), event_pb2.Event(wall_time=time.time(), step=step,
                                                   summary=session).SerializeToString()]
        finals = {f"final/{n}": v for n, v in (record.get("metrics") or {}).items()
                  if v is not None}
        finals["final/diverged"] = 1.0 if record.get("diverged_step") is not None else 0.0
        if record.get("diverged_step") is not None:
            finals["final/diverged_step"] = float(record["diverged_step"])
        metrics.update(finals)
        for tag, values in sorted(scalars.items()):
            if not tag.startswith("final/"):
                events += [_scalar_event(tag, v, s).SerializeToString()
                           for s, v in sorted(values.items())]
        events += [_scalar_event(tag, v, step).SerializeToString()
                   for tag, v in sorted(finals.items())]
        _write_events(os.path.join(out, run_name(h, record["cell_id"])), FINAL_EVENTS_FILE,
                      events)
    domains = [hparams_api.HParam(name, hparams_api.Discrete(sorted(
        {r["hparams"][name] for r in records})))
        for name in HPARAM_NAMES if all(isinstance(r["hparams"][name], (int, float, str))
                                        and not isinstance(r["hparams"][name], bool)
                                        for r in records)]
    experiment = hparams_api.hparams_config_pb(
        hparams=domains, metrics=[hparams_api.Metric(m, display_name=m.split("/", 1)[1])
                                  for m in sorted(metrics)])
    writer = EventFileWriter(out)
    writer.add_event(event_pb2.Event(wall_time=time.time(), summary=experiment))
    writer.close()
    return sorted(r["cell_id"] for r in records)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tf_sgd_regimes.sweep.summaries",
        description="Export per-cell TensorBoard runs (HParams session per cell) for a "
        "subset of a sweep, e.g. of a large sweep logged per grid point.")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--cells", required=True,
                        help='cell ids to export, a pattern such as "momentum_B00064_*"')
    parser.add_argument("--out", default=None,
                        help="logdir to write (default WORKDIR/tensorboard_cells)")
    args = parser.parse_args(argv)
    try:
        cells = export_cells(args.workdir, args.cells, args.out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or os.path.join(args.workdir, "tensorboard_cells")
    print(f"{len(cells)} cells exported; open them with: tensorboard --logdir {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
