"""Tests for the paper's SGD/Momentum optimizer against an independent numpy reference."""

import bisect
import copy
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_sgd_regimes import optimizers, schedules

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 40  # the schedule decays at steps 20, 22, ..., 38


def reference_rate(step, base_lr, total_steps, gamma=2.0):
    """Appendix B.1 rate at `step`: count the decay boundaries T/2 + k·T/20 passed."""
    boundaries = [total_steps / 2 + k * total_steps / 20 for k in range(10)]
    return base_lr * gamma ** -bisect.bisect_right(boundaries, step)


def regression_problem(num_examples=16, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_examples, dim))
    targets = features @ rng.normal(size=dim) + 0.1 * rng.normal(size=num_examples)
    initial = rng.normal(size=dim)
    return features, targets, initial


def mean_squared_gradient(weights, features, targets):
    """Gradient of mean(0.5·(x·w − y)²) over the rows given."""
    return features.T @ (features @ weights - targets) / len(targets)


def reference_trajectory(effective_lr, momentum, num_steps, batch_size=None, seed=0):
    """Weights after every step of a ← m·a + g, w ← w − ε·a, in float64 numpy."""
    features, targets, weights = regression_problem(seed=seed)
    batch_size = batch_size or len(targets)
    base_lr = effective_lr * (1 - momentum)
    accumulator = np.zeros_like(weights)
    trajectory = []
    for step in range(num_steps):
        start = (step * batch_size) % len(targets)
        rows = slice(start, start + batch_size)
        gradient = mean_squared_gradient(weights, features[rows], targets[rows])
        accumulator = momentum * accumulator + gradient
        weights = weights - reference_rate(step, base_lr, num_steps) * accumulator
        trajectory.append(weights)
    return np.array(trajectory)


def keras_trajectory(optimizer, num_steps, compiled, seed=0):
    """Weights after every full-batch step taken by `optimizer` on the same problem."""
    features, targets, initial = regression_problem(seed=seed)
    features = tf.constant(features, tf.float32)
    targets = tf.constant(targets, tf.float32)
    weights = keras.Variable(initial.astype(np.float32))

    def step():
        with tf.GradientTape() as tape:
            residual = tf.linalg.matvec(features, weights.value) - targets
            loss = 0.5 * tf.reduce_mean(residual**2)
        gradient = tape.gradient(loss, weights.value)
        optimizer.apply_gradients([(gradient, weights)])

    if compiled:
        step = tf.function(step)
    trajectory = []
    for _ in range(num_steps):
        step()
        trajectory.append(weights.numpy().copy())
    return np.array(trajectory)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("name,effective_lr", [("sgd", 0.5), ("momentum", 0.5)])
def test_matches_numpy_reference_at_every_step(name, effective_lr, compiled):
    optimizer = optimizers.make_optimizer(name, effective_lr, total_steps=NUM_STEPS)
    got = keras_trajectory(optimizer, NUM_STEPS, compiled)
    momentum = optimizers.OPTIMIZERS[name]
    expected = reference_trajectory(effective_lr, momentum, NUM_STEPS)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert int(optimizer.iterations) == NUM_STEPS


def test_keras_sgd_momentum_differs_right_after_a_decay():
    # Same raw-rate schedule; Keras keeps ε inside its velocity, the paper does not.
    base_lr = 0.5 * (1 - 0.9)
    keras_sgd = keras.optimizers.SGD(
        learning_rate=schedules.PaperSchedule(base_lr, NUM_STEPS), momentum=0.9
    )
    keras_weights = keras_trajectory(keras_sgd, NUM_STEPS, compiled=False)
    ours = optimizers.make_optimizer("momentum", 0.5, NUM_STEPS)
    paper = keras_trajectory(ours, NUM_STEPS, compiled=False)
    expected = reference_trajectory(0.5, 0.9, NUM_STEPS)
    first_decay = NUM_STEPS // 2
    # With a constant rate the two forms coincide...
    np.testing.assert_allclose(keras_weights[:first_decay], expected[:first_decay], rtol=1e-5)
    # ...but the step right after the decay differs for Keras, not for ours.
    after = first_decay  # index of the weights after the first decayed update
    keras_error = np.abs(keras_weights[after] - expected[after]).max()
    paper_error = np.abs(paper[after] - expected[after]).max()
    assert keras_error > 1e-3 > 100 * paper_error


def test_zero_momentum_is_plain_sgd_exactly():
    schedule = schedules.PaperSchedule(0.3, NUM_STEPS)
    ours = keras_trajectory(optimizers.PaperMomentum(schedule, momentum=0.0), NUM_STEPS, True)
    plain = keras_trajectory(keras.optimizers.SGD(schedule), NUM_STEPS, True)
    np.testing.assert_array_equal(ours, plain)


def test_reassigning_momentum_and_zeroing_accumulators_reuses_the_compiled_step():
    features, targets, initial = regression_problem()
    weights = keras.Variable(initial.astype(np.float32))
    optimizer = optimizers.PaperMomentum(learning_rate=0.05, momentum=0.9)
    optimizer.build([weights])
    assert optimizer.momentum_variable.trainable is False
    assert len(optimizer.accumulators) == 1

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            residual = tf.linalg.matvec(tf.constant(features, tf.float32), weights.value)
            loss = 0.5 * tf.reduce_mean((residual - tf.constant(targets, tf.float32)) ** 2)
        optimizer.apply_gradients([(tape.gradient(loss, weights.value), weights)])

    for _ in range(5):
        step()
    assert np.abs(optimizer.accumulators[0].numpy()).max() > 0

    # A new run with momentum 0.5: reset weights and state, keep the compiled step.
    optimizer.set_momentum(0.5)
    optimizer.zero_accumulators()
    weights.assign(initial.astype(np.float32))
    np.testing.assert_array_equal(optimizer.accumulators[0].numpy(), 0.0)
    got = []
    for _ in range(6):
        step()
        got.append(weights.numpy().copy())

    expected, accumulator, w = [], np.zeros_like(initial), initial
    for _ in range(6):
        accumulator = 0.5 * accumulator + mean_squared_gradient(w, features, targets)
        w = w - 0.05 * accumulator
        expected.append(w)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert step.experimental_get_tracing_count() == 1
    assert optimizer.get_config()["momentum"] == 0.5

    # Assigning the variable directly works as well (what a packed engine may do).
    optimizer.momentum_variable.assign(0.0)
    optimizer.zero_accumulators()
    before = weights.numpy().copy()
    step()
    gradient = mean_squared_gradient(before.astype(np.float64), features, targets)
    np.testing.assert_allclose(weights.numpy(), before - 0.05 * gradient, rtol=1e-5, atol=1e-6)
    assert step.experimental_get_tracing_count() == 1


def test_effective_learning_rate_conversions():
    assert optimizers.learning_rate_from_effective(2.0, 0.9) == pytest.approx(0.2)
    assert optimizers.learning_rate_from_effective(2.0, 0.0) == 2.0
    assert optimizers.effective_from_learning_rate(0.2, 0.9) == pytest.approx(2.0)
    for lr, m in [(0.1, 0.0), (0.37, 0.9), (3.0, 0.99)]:
        raw = optimizers.learning_rate_from_effective(lr, m)
        assert optimizers.effective_from_learning_rate(raw, m) == pytest.approx(lr)
    optimizer = optimizers.make_optimizer("momentum", 1.6, total_steps=100, warmup_steps=5)
    schedule = optimizer.get_config()["learning_rate"]
    assert schedule["class_name"] == "PaperSchedule"
    assert schedule["config"]["initial_learning_rate"] == pytest.approx(0.16)
    assert schedule["config"]["total_steps"] == 100
    assert schedule["config"]["warmup_steps"] == 5
    assert optimizer.momentum == 0.9
    assert optimizers.make_optimizer("sgd", 1.6, 100).momentum == 0.0
    assert optimizers.make_optimizer("momentum", 1.6, 100, momentum=0.5).momentum == 0.5


def test_momentum_for_defaults_and_overrides():
    assert optimizers.momentum_for("sgd") == 0.0
    assert optimizers.momentum_for("momentum") == 0.9
    assert optimizers.momentum_for("momentum", 0.99) == 0.99
    assert optimizers.momentum_for("sgd", 0.0) == 0.0


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: optimizers.momentum_for("adam"), "unknown optimizer 'adam'; known"),
        (lambda: optimizers.momentum_for("sgd", 0.9), "momentum"),
        (lambda: optimizers.momentum_for("momentum", 1.0), "momentum"),
        (lambda: optimizers.momentum_for("momentum", -0.1), "momentum"),
        (lambda: optimizers.learning_rate_from_effective(0.0, 0.9), "effective_lr"),
        (lambda: optimizers.learning_rate_from_effective(-1.0, 0.9), "effective_lr"),
        (lambda: optimizers.learning_rate_from_effective(1.0, 1.0), "momentum"),
        (lambda: optimizers.effective_from_learning_rate(0.0, 0.5), "learning_rate"),
        (lambda: optimizers.effective_from_learning_rate(1.0, 1.5), "momentum"),
        (lambda: optimizers.PaperMomentum(0.1, momentum=1.0), "momentum"),
        (lambda: optimizers.make_optimizer("nesterov", 0.1, 10), "unknown optimizer"),
        (lambda: optimizers.make_optimizer("sgd", 0.1, 0), "total_steps"),
        (lambda: optimizers.make_optimizer("sgd", -0.1, 10), "effective_lr"),
    ],
)
def test_bad_values_raise_naming_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()


def test_config_and_serialization_round_trip():
    optimizer = optimizers.make_optimizer("momentum", 0.8, total_steps=50, momentum=0.8)
    config = optimizer.get_config()
    assert config["momentum"] == 0.8
    for restored in [
        # Keras's from_config deserializes the schedule in place: pass a copy.
        optimizers.PaperMomentum.from_config(copy.deepcopy(config)),
        keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)),
    ]:
        assert isinstance(restored, optimizers.PaperMomentum)
        assert restored.get_config() == config


def tiny_model():
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )


def test_trains_a_keras_model_with_fit_and_saves(tmp_path):
    features, targets, _ = regression_problem(num_examples=64)
    keras.utils.set_random_seed(0)
    model = tiny_model()
    model.compile(optimizer=optimizers.make_optimizer("momentum", 0.2, total_steps=40), loss="mse")
    history = model.fit(features, targets, batch_size=16, epochs=10, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert int(model.optimizer.iterations) == 40

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, optimizers.PaperMomentum)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for original, restored in zip(model.optimizer.accumulators, loaded.optimizer.accumulators):
        np.testing.assert_array_equal(original.numpy(), restored.numpy())


DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    # Two logical CPUs must be configured before any TF op runs.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    from tf_sgd_regimes import optimizers

    args = json.loads(sys.argv[1])
    features = np.array(args["features"], np.float32)
    targets = np.array(args["targets"], np.float32)
    global_batch, num_steps = args["global_batch"], args["num_steps"]

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        weights = keras.Variable(np.array(args["initial"], np.float32))
        optimizer = optimizers.make_optimizer(
            "momentum", args["effective_lr"], total_steps=num_steps
        )
        optimizer.build([weights])
    dataset = tf.data.Dataset.from_tensor_slices((features, targets))
    dataset = dataset.batch(global_batch, drop_remainder=True).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(dataset))

    def replica_step(batch):
        x, y = batch
        with tf.GradientTape() as tape:
            residual = tf.linalg.matvec(x, weights.value) - y
            # Gradients are all-reduced by SUM, so divide by the global batch.
            loss = tf.reduce_sum(0.5 * residual**2) / global_batch
        optimizer.apply_gradients([(tape.gradient(loss, weights.value), weights)])
        return tf.shape(x)[0]

    @tf.function
    def step(batch):
        sizes = strategy.run(replica_step, args=(batch,))
        return strategy.experimental_local_results(sizes)

    trajectory, sizes = [], None
    for _ in range(num_steps):
        sizes = [int(s) for s in step(next(iterator))]
        trajectory.append(weights.numpy().tolist())
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "sizes": sizes,
        "iterations": int(optimizer.iterations.numpy()),
        "trajectory": trajectory,
    }))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_with_two_replicas_matches_reference():
    num_steps, global_batch, effective_lr = 12, 8, 0.5
    features, targets, initial = regression_problem()
    args = dict(
        features=features.tolist(),
        targets=targets.tolist(),
        initial=initial.tolist(),
        global_batch=global_batch,
        num_steps=num_steps,
        effective_lr=effective_lr,
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED_SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["replicas"] == 2
    assert output["sizes"] == [global_batch // 2] * 2  # the global batch is split
    assert output["iterations"] == num_steps
    expected = reference_trajectory(effective_lr, 0.9, num_steps, batch_size=global_batch)
    np.testing.assert_allclose(output["trajectory"], expected, rtol=1e-5, atol=1e-6)
