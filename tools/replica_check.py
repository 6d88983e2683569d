"""Shrunk embedded experiments under 1, 2 (and 4) replicas, compared cell by cell.

    PYTHONPATH=. python tools/replica_check.py              # 1 vs 2 replicas, a table
    PYTHONPATH=. python tools/replica_check.py --replicas=1,2,4 --jit

With --jit every replica count runs with train.jit_compile=True, and one device without
XLA runs too: each XLA run is compared with one device with XLA (the first count) and with
one device without it. Under XLA on several replicas ghost groups must stay on one replica
(the engine refuses groups that span replicas), so the WRN's batch is 16 x replicas (its
ghost size is 16), and language models train packs of one (a pack of several LSTMs has
no XLA form).

Each replica count runs in its own process (logical CPU devices must be set before
TensorFlow starts); inside one process the experiments run one after another under the
same strategy, as a notebook would. Every cell's final metrics are compared with the
one-replica run (relative difference), and the divergence step must be the same.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

EXPERIMENTS = ("digits_wrn_epoch_budget", "synthetic_lstm_epoch_budget",
               "digits_cnn_epoch_budget", "digits_autoencoder_epoch_budget")

# 1 batch size, 2 learning rates, 2 seeds, 1 epoch (the LSTM: a shorter stream).
SHRINK = {
    "digits_wrn_epoch_budget": ["sweep.batch_sizes=(16,)", "sweep.effective_lrs=(0.25,1.0)",
                                "budget.epochs=1.0"],
    "synthetic_lstm_epoch_budget": ["sweep.batch_sizes=(8,)", "sweep.effective_lrs=(8.0,16.0)",
                                    "budget.epochs=1.0", "data.num_train_tokens=4000",
                                    "data.num_test_tokens=2000"],
    "digits_cnn_epoch_budget": ["sweep.batch_sizes=(16,)", "sweep.effective_lrs=(0.25,1.0)",
                                "budget.epochs=1.0"],
    "digits_autoencoder_epoch_budget": ["sweep.batch_sizes=(16,)",
                                        "sweep.effective_lrs=(0.08,0.32)", "budget.epochs=1.0"],
}
# Under XLA (--jit), on top of SHRINK (the WRN's batch is set per replica count in child()).
JIT = {"synthetic_lstm_epoch_budget": ["sweep.pack_size=1"]}
COMMON = ["sweep.optimizers=('momentum',)", "sweep.seeds=(0,1)", "analysis.best_k=1",
          "analysis.num_seeds=2", "train.noise_scale.enabled=False",
          "sweep.extend_edges.enabled=False"]


def child(replicas: int, experiments_: list, jit: bool, workdir: str,
          jit_batches: int = 0) -> dict:
    """Runs in a fresh process: sets up `replicas` logical CPUs, runs every sweep.
    `jit_batches` (the largest replica count of an XLA check) sets the WRN's batch."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    if replicas > 1:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    from tf_sgd_regimes import experiments, strategy as strategy_lib
    from tf_sgd_regimes.sweep import loop as sweep

    strategy = (tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
                if replicas > 1 else strategy_lib.get_strategy("cpu"))
    out = {}
    for name in experiments_:
        config = experiments.get_config(name)
        overrides = SHRINK[name] + COMMON
        if jit:
            overrides = overrides + JIT.get(name, []) + ["train.jit_compile=True"]
        if jit_batches and name == "digits_wrn_epoch_budget":
            overrides = overrides + [f"sweep.batch_sizes=({16 * jit_batches},)"]
        config = experiments.apply_overrides(config, overrides)
        records = sweep.Sweep(config, os.path.join(workdir, name), strategy=strategy,
                              progress_interval_s=1e9).run()
        out[name] = {r["cell_id"]: {"status": r["status"], "metrics": r["metrics"],
                                    "diverged_step": r["diverged_step"],
                                    "error": (r.get("error") or "")[:300]}
                     for r in records}
    return out


def run_child(replicas, experiments_, jit, jit_batches=0):
    with tempfile.TemporaryDirectory() as workdir:
        code = (f"import sys, json; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
                "import replica_check as r; "
                f"print('RESULT' + json.dumps(r.child({replicas}, {list(experiments_)!r}, "
                f"{jit}, {workdir!r}, {jit_batches})))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
    if done.returncode or not lines:
        raise RuntimeError(f"{replicas} replicas failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT"):])


def compare(reference: dict, other: dict) -> dict:
    """Per experiment: the largest relative metric difference and any mismatch."""
    rows = {}
    for name, cells in reference.items():
        worst, problems = 0.0, []
        for cell_id, ref in cells.items():
            got = other[name][cell_id]
            if "failed" in (got["status"], ref["status"]):
                problems.append(f"{cell_id}: failed: {got['error'] or ref['error']}")
                continue
            if got["status"] != ref["status"] or got["diverged_step"] != ref["diverged_step"]:
                problems.append(f"{cell_id}: {got['status']} at {got['diverged_step']} vs "
                                f"{ref['status']} at {ref['diverged_step']} {got['error']}")
                continue
            for metric, value in ref["metrics"].items():
                if value is None:
                    continue
                diff = abs(got["metrics"][metric] - value) / max(abs(value), 1e-12)
                worst = max(worst, diff)
        rows[name] = {"max_rel_diff": worst, "problems": problems}
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS))
    parser.add_argument("--jit", action="store_true", help="train.jit_compile=True")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    counts = [int(r) for r in args.replicas.split(",")]
    names = args.experiments.split(",")
    widest = max(counts) if args.jit else 0
    results = {r: run_child(r, names, args.jit, widest) for r in counts}
    # (label, run, reference) for each column of the table.
    # The exit status covers the replica columns; the columns against one device without
    # XLA are for information (XLA draws other dropout masks from the same seeds).
    columns = [(f"{r} vs {counts[0]} replicas" + (" (XLA)" if args.jit else ""),
                results[r], results[counts[0]], True) for r in counts[1:]]
    if args.jit:
        without = run_child(counts[0], names, False, widest)
        columns += [(f"{r} (XLA) vs {counts[0]} without XLA", results[r], without, False)
                    for r in counts]
    ok = True
    print("| experiment | " + " | ".join(label for label, *_ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name in names:
        cells = []
        for _, run, reference, counted in columns:
            row = compare(reference, run)[name]
            good = not row["problems"] and row["max_rel_diff"] <= args.tolerance
            ok &= good or not counted
            cells.append(("match" if good else "DIFFER") +
                         f", max rel. diff {row['max_rel_diff']:.1e}" +
                         (f"; {row['problems'][0]}" if row["problems"] else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
