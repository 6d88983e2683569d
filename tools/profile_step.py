"""Where a packed step's time goes: per-kernel times of the engine's XLA step and of JAX's.

    TF_CPP_MIN_LOG_LEVEL=2 python tools/profile_step.py --batch_size=64 \
        [--jax_python=/work/venvs/jax/bin/python] [--steps=128] [--top=20]

The demo pack (78 MLP members). The engine side trains one warm chunk of `steps` steps
under XLA with tf.profiler on; the JAX side (tools/jax_step_profile.py, run with the
Python of a venv that has JAX; not a dependency of this project) runs the same step
(vmap over members, scan over steps) under jax.profiler. Both traces are XPlane files,
read here with TensorFlow's own proto: for each side, the time per step and the kernels
(XLA thunks: fusions, dots, YNNPACK custom fusions) that take the most time per step, with
their share of the summed kernel time. The optimised HLO of each while body is written
next to the traces (OUT/tf_hlo.txt, OUT/jax_hlo.txt).
"""

import argparse
import collections
import glob
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import demo_pack  # noqa: E402  (tools/, beside this script)

HERE = os.path.dirname(os.path.abspath(__file__))
# Host-side events of the trace, not kernels of the step.
NOT_KERNELS = ("ThunkExecutor", "Execute", "python", "BlockUntilReady", "while", "Pjit",
               "block_until_ready", "stop_trace", "TFE_", "EagerLocal", "tf.constant",
               "_train_chunk", "end: ", "wait for")


def kernel_times(logdir):
    """{kernel name: (total seconds, count)} from the XPlane trace under `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if line.name == "python" or line.name.startswith("tf_XLAPjRt"):
                continue  # host threads: the calls around the kernels
            for event in line.events:
                name = names.get(event.metadata_id, "?")
                if any(name.startswith(p) or p in name for p in NOT_KERNELS):
                    continue
                totals[name] += event.duration_ps * 1e-12
                counts[name] += 1
    return {name: (totals[name], counts[name]) for name in totals}


def engine_profile(batch_size, steps, out):
    runner, indices = demo_pack.demo_pack(True, batch_size, steps, learning_rate=0.01,
                                          total_steps=10**6)
    args = [tf.constant(indices, tf.int32), tf.constant(steps, tf.int32)]
    hlo = runner._train_chunk.experimental_get_compiler_ir(*args, None)(stage="optimized_hlo")
    with open(os.path.join(out, "tf_hlo.txt"), "w") as f:
        f.write(hlo)
    runner.train_chunk(indices, steps, batch_size)  # compile and warm up
    runner.step.numpy()
    logdir = os.path.join(out, "tf_trace")
    tf.profiler.experimental.start(logdir)
    began = time.perf_counter()
    runner.train_chunk(indices, steps, batch_size)
    runner.step.numpy()
    seconds = time.perf_counter() - began
    tf.profiler.experimental.stop()
    return seconds, kernel_times(logdir)


def jax_profile(python, batch_size, steps, out):
    logdir = os.path.join(out, "jax_trace")
    done = subprocess.run([python, os.path.join(HERE, "jax_step_profile.py"), str(batch_size),
                           str(steps), logdir, os.path.join(out, "jax_hlo.txt")],
                          capture_output=True, text=True, env=dict(os.environ,
                                                                   JAX_PLATFORMS="cpu"))
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    seconds = float(done.stdout.strip().splitlines()[-1])
    return seconds, kernel_times(logdir)


def report(side, seconds, kernels, steps, top):
    total = sum(t for t, _ in kernels.values())
    per_step = [(t / steps, n / steps, name) for name, (t, n) in kernels.items()]
    per_step.sort(reverse=True)
    launched = sum(n for _, n, _ in per_step)
    print(f"\n{side}: {seconds / steps * 1e6:,.0f} µs per step (wall, one chunk of {steps}); "
          f"{launched:.0f} kernels per step; summed kernel time {total / steps * 1e6:,.0f} µs "
          "per step (2 threads overlap)")
    print("| kernel | µs per step | share |")
    print("|---|---|---|")
    for t, _, name in per_step[:top]:
        print(f"| {name} | {t * 1e6:,.0f} | {t / (total / steps):.0%} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--jax_python", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="profile_step_")
    os.makedirs(out, exist_ok=True)
    print(f"B = {args.batch_size}, 78 members; traces and HLO in {out}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    seconds, kernels = engine_profile(args.batch_size, args.steps, out)
    report("engine, XLA", seconds, kernels, args.steps, args.top)
    if args.jax_python:
        seconds, kernels = jax_profile(args.jax_python, args.batch_size, args.steps, out)
        report("JAX vmap+scan+jit", seconds, kernels, args.steps, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
