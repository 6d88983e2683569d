"""This engine vs a plain JAX pack (vmap + scan + jit) on the demo problem, side by side.

    TF_CPP_MIN_LOG_LEVEL=2 python tools/benchmark_jax_pack.py --batch_sizes=1,16,256 \
        --rounds=3 --jax_python=/work/venvs/jax/bin/python [--xla=both]

The demo pack: digits MLP 64-32-32-10, 78 members (SGD and Momentum x 13 effective
learning rates x 3 seeds), each with its own data order, the paper's update and schedule,
10 epochs. Both sides start from the same initial weights and read the same per-member
indices (the engine's own sampler), so their test accuracies must agree; the JAX side
(tools/jax_pack_reference.py) runs in a separate venv with JAX (not a dependency of this
project). Timed: training steps only, after compilation, on both sides (the engine's
second pack on an already compiled runner; JAX's chunks compiled ahead of time). Sides
alternate within each round; medians over rounds. The engine runs with the demo config's
TensorFlow thread setting (config.train.intra_op_threads, as a sweep applies it); JAX runs
both as installed and pinned to one core (taskset), and the engine is compared with the
faster of the two. A last JAX side runs jax.lax.scan with unroll=2 (--jax_unroll), the
knob the engine's XLA loop turns by default (config.train.unroll_steps): shown for
comparison, not part of the bar (a plain pack).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_sgd_regimes import cpu_threads  # noqa: E402
from tf_sgd_regimes import data  # noqa: E402
from tf_sgd_regimes import engine  # noqa: E402
from tf_sgd_regimes import experiments  # noqa: E402
from tf_sgd_regimes import schedules  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def demo(jit, extra=()):
    config = experiments.get_config(experiments.DEFAULT_EXPERIMENT)
    overrides = ["train.noise_scale.enabled=false", "train.checkpoint_every_s=0", *extra]
    if jit != "auto":
        overrides.append(f"train.jit_compile={'true' if jit else 'false'}")
    config = experiments.apply_overrides(config, overrides)
    members = []
    for optimizer in config.sweep.optimizers:
        momentum = 0.0 if optimizer == "sgd" else float(config.sweep.momentum)
        for lr in config.sweep.effective_lrs:
            for seed in config.sweep.seeds:
                members.append(engine.Member(f"{optimizer}_{lr}_{seed}", float(lr), momentum,
                                             int(seed)))
    return config, members


def engine_run(config, dataset, members, batch_size, total_steps, trainer=None):
    """(training seconds, test accuracies, trainer) of one pack; timed: train_chunk calls."""
    trainer = trainer or engine.Engine(config, dataset, tf.distribute.get_strategy())
    runner = trainer._pack_runner(len(members), batch_size)  # a _PackRunner or shards.Shards
    spent = [0.0]
    plain = type(runner).train_chunk

    def timed(indices, num_steps, b):
        began = time.perf_counter()
        plain(runner, indices, num_steps, b)
        runner.step.numpy()  # wait for the chunk
        spent[0] += time.perf_counter() - began

    runner.train_chunk = timed
    try:
        results = trainer.train_pack(members, batch_size, total_steps)
    finally:
        del runner.train_chunk
    accuracy = np.array([r.metrics.get("test_accuracy") if r.status == "complete" else np.nan
                         for r in results], np.float64)
    return spent[0], accuracy, trainer


def jax_problem(config, dataset, trainer, members, batch_size, total_steps, path):
    models = [trainer.build_model(seed=m.seed) for m in members]
    weights = [np.stack([model.trainable_variables[i].numpy() for model in models])
               for i in range(len(models[0].trainable_variables))]
    layers = len(weights) // 2  # Dense layers: kernel, bias
    indices = trainer.sampler.host_indices([m.seed for m in members], 0, total_steps,
                                           batch_size, total_steps)
    factors = schedules.schedule_factor(np.arange(total_steps, dtype=np.float32),
                                        float(total_steps),
                                        float(config.schedule.decay_factor),
                                        float(config.schedule.warmup_steps)).numpy()
    arrays = dict(layers=layers, steps_per_call=int(config.train.steps_per_call),
                  train_x=dataset.train_x.reshape(len(dataset.train_x), -1),
                  train_y=dataset.train_y, test_x=dataset.test_x.reshape(len(dataset.test_x), -1),
                  test_y=dataset.test_y, lrs=np.array([m.learning_rate for m in members],
                                                      np.float32),
                  momenta=np.array([m.momentum for m in members], np.float32),
                  factors=factors.astype(np.float32),
                  indices=indices.reshape(len(members), total_steps, batch_size))
    for i in range(layers):
        arrays[f"w{i}"], arrays[f"b{i}"] = weights[2 * i], weights[2 * i + 1]
    np.savez(path, **arrays)


def jax_run(python, path_in, path_out, one_core=False, track=False, unroll=1):
    # One core: JAX sizes its thread pools from the CPUs it may run on, and has no knob of
    # its own; on a tiny pack one thread can be its fastest setting, as it is the engine's.
    pin = ["taskset", "-c", "0"] if one_core else []
    done = subprocess.run(pin + [python, os.path.join(HERE, "jax_pack_reference.py"), path_in,
                                 path_out] + (["track"] if track else [])
                          + ([f"unroll={unroll}"] if unroll > 1 else []),
                          capture_output=True, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    out = np.load(path_out)
    return float(out["seconds"]), np.asarray(out["test_accuracy"], np.float64), str(out["version"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", default="1,16,256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jax_python", default="/work/venvs/jax/bin/python")
    parser.add_argument("--xla", default="both", choices=("both", "on", "off", "auto"))
    parser.add_argument("--override", action="append", default=[],
                        help="config override for both sides, e.g. train.steps_per_call=1024")
    parser.add_argument("--jax_one_core", default="auto", choices=("auto", "yes", "no"),
                        help="also time JAX pinned to one core (taskset -c 0); auto: if "
                        "taskset exists. The engine is compared with the faster JAX side.")
    parser.add_argument("--jax_unroll", type=int, default=2,
                        help="also time JAX (one core if --jax_one_core) with "
                        "jax.lax.scan(unroll=N), the knob the engine's XLA loop turns "
                        "(config.train.unroll_steps); 1: no such side. Not the bar.")
    args = parser.parse_args(argv)
    sides = {"both": (False, True), "on": (True,), "off": (False,),
             "auto": ("auto",)}[args.xla]
    label = {True: "engine, XLA", False: "engine, no XLA", "auto": "engine, auto"}
    one_core = (args.jax_one_core == "yes"
                or (args.jax_one_core == "auto" and shutil.which("taskset") is not None))
    jax_sides = ["jax"] + (["jax_one_core"] if one_core else [])
    # Like for like: JAX also keeping each member's loss and first diverged step per step
    # and reading them after every chunk, as train_pack does (not part of the bar).
    tracked = ["jax_one_core_tracked" if one_core else "jax_tracked"]
    unrolled = ([("jax_one_core" if one_core else "jax") + "_unrolled"]
                if args.jax_unroll > 1 else [])
    # The demo's own thread setting (config.train.intra_op_threads), as a sweep applies it.
    cpu_threads.apply(demo(True, args.override)[0])
    print(f"TensorFlow intra-op threads: "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")
    print(f"engine: {engine.__file__}; {os.cpu_count()} CPU cores; TF {tf.__version__}")
    print("| B | side | member-steps/s (median) | seconds "
          "| |test-accuracy difference| vs JAX, per member |")
    print("|---|---|---|---|---|", flush=True)
    workdir = tempfile.mkdtemp(prefix="jax_pack_")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        configs = {jit: demo(jit, args.override) for jit in sides}
        config, members = configs[sides[0]]
        dataset = data.get_dataset(**dict(config.data))
        total_steps = int(round(config.budget.epochs * dataset.num_train / batch_size))
        trainers = {}
        for jit in sides:  # warm-up: trace and compile each engine side once
            _, _, trainers[jit] = engine_run(configs[jit][0], dataset, members, batch_size,
                                             total_steps)
        path_in = os.path.join(workdir, f"problem_{batch_size}.npz")
        jax_problem(config, dataset, trainers[sides[0]], members, batch_size, total_steps,
                    path_in)
        times = {side: [] for side in list(sides) + jax_sides + tracked + unrolled}
        accuracies = {}
        version = ""
        for _ in range(args.rounds):
            for jit in sides:
                seconds, accuracies[jit], _ = engine_run(configs[jit][0], dataset, members,
                                                         batch_size, total_steps, trainers[jit])
                times[jit].append(seconds)
            for side in jax_sides + tracked + unrolled:
                seconds, accuracies[side], version = jax_run(
                    args.jax_python, path_in, os.path.join(workdir, "out.npz"),
                    one_core="one_core" in side, track=side in tracked,
                    unroll=args.jax_unroll if side in unrolled else 1)
                times[side].append(seconds)
        member_steps = len(members) * total_steps
        best_jax = min(float(np.median(times[side])) for side in jax_sides)
        like = float(np.median(times[tracked[0]]))
        for side in list(sides) + jax_sides + tracked + unrolled:
            seconds = float(np.median(times[side]))
            if side in jax_sides + tracked + unrolled:
                diff = ""
                name = (f"JAX {version} vmap+scan+jit" + (", one core" if "one_core" in side
                                                           else "")
                        + (", tracking loss and divergence" if side in tracked else "")
                        + (f", scan unroll={args.jax_unroll}" if side in unrolled else ""))
            else:
                both = np.isfinite(accuracies[side]) & np.isfinite(accuracies["jax"])
                gaps = np.abs(accuracies[side][both] - accuracies["jax"][both])
                # Members at the edge of stability are chaotic: round-off moves them far.
                diff = (f"median {np.median(gaps):.4f}, max {np.max(gaps):.4f}; "
                        f"{int(np.sum(gaps <= 0.01))} of {both.sum()} within 0.01 "
                        f"({both.sum()} of {len(members)} finite on both)")
                name = label[side]
                diff += (f"; {best_jax / seconds:.2f}x the faster JAX side, "
                         f"{like / seconds:.2f}x JAX tracking")
                if unrolled:
                    diff += (f", {float(np.median(times[unrolled[0]])) / seconds:.2f}x "
                             f"JAX unrolled")
            print(f"| {batch_size} | {name} | {member_steps / seconds:,.0f} | {seconds:.2f} | "
                  f"{diff} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
