"""Helpers shared by the resilience, distributed and TensorBoard tests: tiny sweeps, CLI runs."""

import glob
import json
import os
import subprocess
import sys

import tensorflow as tf

from tf_sgd_regimes import experiments

PYTHON = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A digits sweep small enough for seconds on a CPU, big enough for several packs.
TINY = (
    "model.hidden=(16,)",
    "budget.epochs=1.0",
    "sweep.batch_sizes=(16,32)",
    "sweep.optimizers=('momentum',)",
    "sweep.effective_lrs=(0.05,0.2,0.8)",
    "sweep.seeds=(0,1)",
    "sweep.pack_size=3",
    "analysis.best_k=1",
    "train.steps_per_call=8",
    "train.checkpoint_every_s=0.2",
    # The noise-scale probe stays on (the demo's setting): its values ride in the pack
    # checkpoint, so resumed packs must reproduce them exactly too.
)


def config(*extra):
    """The embedded default shrunk by TINY and `extra` overrides, locked."""
    return experiments.apply_overrides(
        experiments.get_config(experiments.DEFAULT_EXPERIMENT), TINY + tuple(extra))


def cli_args(workdir, *extra):
    return ([PYTHON, "-m", "tf_sgd_regimes.run", f"--workdir={workdir}", "--no_report"]
            + [f"--config.{o}" for o in TINY + tuple(extra)])


def env(**extra):
    out = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    out.update(extra)
    return out


def run_cli(workdir, *extra, timeout=300, **kwargs):
    return subprocess.run(cli_args(workdir, *extra), env=env(), cwd=REPO, timeout=timeout,
                          capture_output=True, text=True, **kwargs)


def ledger_files(workdir):
    """The ledger's record files: one segment per pack (older work directories: per cell)."""
    return sorted(glob.glob(os.path.join(str(workdir), "ledger", "seg-*.jsonl"))
                  + glob.glob(os.path.join(str(workdir), "ledger", "*.json")))


def record_count(workdir):
    """Records on disk, duplicates included (a line per record; cheap enough to poll)."""
    count = 0
    for path in ledger_files(workdir):
        with open(path, "rb") as f:
            # A segment: a header line, then a line per record.
            count += f.read().count(b"\n") - 1 if path.endswith(".jsonl") else 1
    return count


def records_on_disk(workdir):
    """Every record in every ledger file, in file order, duplicates included."""
    out = []
    for path in ledger_files(workdir):
        with open(path) as f:
            lines = f.read().splitlines()
        out.extend(json.loads(line) for line in lines[path.endswith(".jsonl"):])
    return out


def read_records(workdir):
    """cell_id -> record; fails if any cell has more than one record on disk."""
    records = records_on_disk(workdir)
    out = {r["cell_id"]: r for r in records}
    assert len(out) == len(records), "a cell has more than one record"
    return out


def run_dir(workdir, cell_id):
    """The TensorBoard run of a cell: tensorboard/<optimizer>_B<B>/<cell_id>."""
    optimizer, batch = str(cell_id).split("_")[:2]
    return os.path.join(str(workdir), "tensorboard", f"{optimizer}_{batch}", str(cell_id))


def scalar_events(run_dir, tag):
    """[(step, value)] of `tag` over a run's event files in TensorBoard's (name) order.

    A writer killed mid-record leaves a truncated tail, which TensorBoard skips; so do we.
    """
    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        try:
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    if value.tag == tag:
                        out.append((event.step, float(tf.make_ndarray(value.tensor))))
        except tf.errors.DataLossError:
            pass
    return out
