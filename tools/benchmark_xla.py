"""Packed-step throughput of each embedded model family, with and without XLA.

    TF_CPP_MIN_LOG_LEVEL=2 python tools/benchmark_xla.py --families=mlp,cnn,wrn,autoencoder \
        --batch_sizes=1,16,256 --rounds=3 [--xla=both|on|off]

For every family (its embedded experiment's model and data, a pack of the experiment's real
size: 2 optimizers x its learning rates x 3 seeds) and batch size, trains one pack for
`--chunks` + 1 chunks of `--steps_per_call` steps and reports member-steps/s over the
chunks after the first (the first includes tracing and XLA compilation, reported apart).
Sides alternate within a round; figures are medians over rounds. Run it with another
checkout on PYTHONPATH to compare engines (BENCHMARKS.md).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_sgd_regimes import data  # noqa: E402
from tf_sgd_regimes import engine  # noqa: E402
from tf_sgd_regimes import experiments  # noqa: E402

FAMILIES = {
    "mlp": "digits_mlp_epoch_budget",
    "cnn": "digits_cnn_epoch_budget",
    "wrn": "digits_wrn_epoch_budget",
    "autoencoder": "digits_autoencoder_epoch_budget",
}


def pack(config):
    members = []
    for optimizer in config.sweep.optimizers:
        momentum = 0.0 if optimizer == "sgd" else float(config.sweep.momentum)
        for lr in config.sweep.effective_lrs:
            for seed in config.sweep.seeds:
                members.append(engine.Member(f"{optimizer}_{lr}_{seed}", float(lr) * 1e-3,
                                             momentum, int(seed)))
    return members


def measure(family, batch_size, jit, steps_per_call, chunks):
    """(compile+first chunk seconds, member-steps/s after it)."""
    config = experiments.get_config(FAMILIES[family])
    overrides = [f"train.steps_per_call={steps_per_call}", "train.noise_scale.enabled=false"]
    if jit != "auto":  # "auto": leave the field (an older engine parses no booleans)
        overrides.append(f"train.jit_compile={'true' if jit else 'false'}")
    config = experiments.apply_overrides(config, overrides)
    dataset = data.get_dataset(**dict(config.data))
    trainer = engine.Engine(config, dataset, tf.distribute.get_strategy())
    members = pack(config)
    stamps = [time.perf_counter()]
    # Small learning rates (x 1e-3) so no member diverges and stops the pack early.
    trainer.train_pack(members, batch_size, (chunks + 1) * steps_per_call,
                       on_chunk=lambda report: stamps.append(time.perf_counter()))
    first = stamps[1] - stamps[0]
    rate = len(members) * chunks * steps_per_call / (stamps[-1] - stamps[1])
    return first, rate, len(members)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="mlp,cnn,wrn,autoencoder")
    parser.add_argument("--batch_sizes", default="1,16,256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps_per_call", type=int, default=32)
    parser.add_argument("--chunks", type=int, default=2)
    parser.add_argument("--xla", default="both", choices=("both", "on", "off", "auto"))
    args = parser.parse_args(argv)
    sides = {"both": (False, True), "on": (True,), "off": (False,),
             "auto": ("auto",)}[args.xla]
    print(f"engine: {engine.__file__}; {os.cpu_count()} CPU cores; TF {tf.__version__}")
    print("| family | members | B | XLA | first chunk s | member-steps/s |")
    print("|---|---|---|---|---|---|", flush=True)
    for family in args.families.split(","):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            results = {jit: [] for jit in sides}
            for _ in range(args.rounds):
                for jit in sides:  # alternating sides within each round
                    results[jit].append(measure(family, batch_size, jit, args.steps_per_call,
                                                args.chunks))
            for jit in sides:
                first = float(np.median([r[0] for r in results[jit]]))
                rate = float(np.median([r[1] for r in results[jit]]))
                side = {True: "on", False: "off"}.get(jit, jit)
                print(f"| {family} | {results[jit][0][2]} | {batch_size} | {side} | "
                      f"{first:.2f} | {rate:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
