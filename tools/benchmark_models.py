"""Training throughput of each paper model: our engine (a pack of one) vs a bare tf.function step.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python tools/benchmark_models.py [--models=wrn16_4,lstm]

For every model it reports examples/s of (a) a bare `tf.function` training step (forward,
gradient, the paper's momentum update; one call per step) and (b) `engine.Engine.train_pack`
with one member on the same model and random data of the same shape (no augmentation,
so both do the same work), the ratio, the forward FLOPs per example (tf.profiler on the
frozen graph; analytic for the LSTM, whose time loop the profiler counts once), and the
achieved training FLOP/s (3 x forward) as a fraction of the machine's measured matmul
rate (a 2048^2 float32 matmul, timed in the same run). Models too slow for a CPU at full
size run at a smaller input (ResNet-50 at 112x112); the table says so.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework import convert_to_constants  # noqa: E402

from tf_sgd_regimes import engine  # noqa: E402
from tf_sgd_regimes import models  # noqa: E402
from tf_sgd_regimes import tasks  # noqa: E402
from tf_sgd_regimes.configs import common  # noqa: E402
from tf_sgd_regimes.data import base  # noqa: E402

# name: (registry model, fields, input shape, outputs, task, batch size, steps timed, note)
BENCHMARKS = {
    "wrn16_4": ("wide_resnet", dict(depth=16, width=4), (32, 32, 3), 10, "classification",
                64, 6, "full size"),
    "wrn28_10": ("wide_resnet", dict(depth=28, width=10), (32, 32, 3), 100,
                 "classification", 16, 2, "full size, B=16"),
    "resnet50": ("resnet50", dict(ghost_batch_size=64), (112, 112, 3), 1000,
                 "classification", 16, 2, "full width, 112x112 input (1/4 of the FLOPs)"),
    "lstm": ("lstm_lm", dict(), (35,), 10_000, "language_model", 32, 6,
             "full size (2x650, 10k vocab)"),
    "autoencoder": ("autoencoder", dict(), (784,), 784, "autoencoder", 256, 40, "full size"),
}


def matmul_flops_per_second(size: int = 2048, repeats: int = 10) -> float:
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])

    @tf.function
    def run():
        total = tf.zeros([size, size])
        for _ in tf.range(repeats):
            total += tf.matmul(a, b)
        return total

    run().numpy()
    best = float("inf")
    for _ in range(3):  # best of 3: the machine may be shared
        start = time.perf_counter()
        run().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best


def forward_flops(model, input_shape, task, num_outputs) -> float:
    """Forward FLOPs of one example."""
    if task == "language_model":
        # Per token: 4 gates x (input + recurrent) matmuls per layer, and the softmax.
        units, layers = model.units, len(model.lstms)
        embedding = model.embedding.output_dim
        per_token = 2 * 4 * units * (embedding + units) + 2 * 4 * units * 2 * units * (layers - 1)
        per_token += 2 * units * num_outputs
        return float(per_token * input_shape[0])
    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec([1] + list(input_shape)))
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(frozen.graph, options=options).total_float_ops)


def _dataset(name, input_shape, num_outputs, task, batch_size):
    rng = np.random.default_rng(0)
    if task == "language_model":
        tokens = rng.integers(0, num_outputs, size=batch_size * 400).astype(np.int32)
        return base.Dataset(name, task, tokens, None, tokens[: batch_size * 40], None,
                            num_outputs, input_shape, ordering="streams",
                            unroll=input_shape[0])
    count = 4 * batch_size  # small: the engine evaluates the whole training set at the end
    x = rng.standard_normal((count,) + input_shape).astype(np.float32)
    if task == "autoencoder":
        x = rng.uniform(size=(count,) + input_shape).astype(np.float32)
        return base.Dataset(name, task, x, None, x[:batch_size], None, num_outputs, input_shape)
    y = rng.integers(0, num_outputs, size=count).astype(np.int32)
    return base.Dataset(name, task, x, y, x[:batch_size], y[:batch_size], num_outputs,
                        input_shape)


def bare_throughput(model, dataset, batch_size, steps, learning_rate=0.01, momentum=0.9):
    """Examples/s of a plain tf.function step (one call per step), after a warm-up call."""
    weights = model.trainable_variables
    accumulators = [tf.Variable(tf.zeros_like(w)) for w in weights]
    task = dataset.task
    if task == "language_model":
        state = model.initial_state(batch_size)
        tokens = tf.constant(dataset.train_x)
        row = len(dataset.train_x) // batch_size
        rows = tf.reshape(tokens[: batch_size * row], [batch_size, row])
    else:
        data_x = tf.constant(dataset.train_x)
        data_y = tf.constant(dataset.train_y if dataset.train_y is not None
                             else np.zeros(len(dataset.train_x), np.int32))

    @tf.function
    def step(i, state):
        if task == "language_model":
            start = (i % 300) * dataset.unroll
            x = rows[:, start:start + dataset.unroll]
            y = rows[:, start + 1:start + dataset.unroll + 1]
        else:
            index = (tf.range(batch_size) + i * batch_size) % len(dataset.train_x)
            x, y = tf.gather(data_x, index), tf.gather(data_y, index)
        with tf.GradientTape() as tape:
            if task == "language_model":
                outputs, state = model.call_with_state(x, state, training=True)
            else:
                outputs = model(x, training=True)
            loss = tf.reduce_mean(tasks.per_example_loss(task, outputs, y, x))
        grads = tape.gradient(loss, weights)
        for w, a, g in zip(weights, accumulators, grads):
            a.assign(momentum * a + tf.convert_to_tensor(g))
            w.assign_sub(learning_rate * a)
        return loss, state

    state = state if task == "language_model" else ()
    loss, state = step(tf.constant(0), state)
    loss.numpy()
    start = time.perf_counter()
    for i in range(1, steps + 1):
        loss, state = step(tf.constant(i), state)
    loss.numpy()
    return batch_size * steps / (time.perf_counter() - start)


def engine_throughput(registry_name, fields, dataset, batch_size, steps):
    """Examples/s of Engine.train_pack with one member, timed between chunk reports."""
    config = common.base_config()
    config.model = dict(name=registry_name, **fields)
    config.train.steps_per_call = steps
    config.train.eval_batch_size = batch_size
    trainer = engine.Engine(config, dataset, tf.distribute.get_strategy())
    stamps = []
    member = [engine.Member("m", 0.01, 0.9, 0)]
    # Chunk 1 includes the trace; chunks 2 and 3 are timed (evaluation comes after them).
    trainer.train_pack(member, batch_size, 3 * steps,
                       on_chunk=lambda report: stamps.append(time.perf_counter()))
    return batch_size * 2 * steps / (stamps[-1] - stamps[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {sorted(BENCHMARKS)}")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each side this many times, alternating, and report the "
                        "medians (a few steps per measurement are noisy)")
    args = parser.parse_args(argv)
    peak = matmul_flops_per_second()
    print(f"machine: {os.cpu_count()} CPU cores visible, TF {tf.__version__}; measured "
          f"float32 matmul (2048^2): {peak / 1e9:.1f} GFLOP/s\n")
    print("| model | as run | batch | fwd GFLOPs/example | bare step ex/s | engine ex/s "
          "| bare/engine | engine GFLOP/s | of matmul peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        registry_name, fields, shape, outputs, task, batch, steps, note = BENCHMARKS[name]
        dataset = _dataset(name, shape, outputs, task, batch)
        extra = dict(batch_size=batch, eval_batch_size=batch) if task == "language_model" else {}
        model = models.get_model(registry_name, shape, outputs, seed=0, **fields, **extra)
        flops = forward_flops(model, shape, task, outputs)
        bares, ourses = [], []
        for _ in range(max(1, args.repeats)):  # alternate so drifting load hits both sides
            bares.append(bare_throughput(model, dataset, batch, steps))
            ourses.append(engine_throughput(registry_name, fields, dataset, batch, steps))
        bare, ours = float(np.median(bares)), float(np.median(ourses))
        achieved = 3 * flops * ours
        print(f"| {name} | {note} | {batch} | {flops / 1e9:.4g} | {bare:.1f} | {ours:.1f} | "
              f"{bare / ours:.2f} | {achieved / 1e9:.1f} | {achieved / peak:.0%} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
