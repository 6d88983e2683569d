"""Tests of the shared model layers: ghost batch norm against numpy, SkipInit's scalar."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tf_sgd_regimes.models import layers as model_layers

EPSILON = 1e-5


def numpy_ghost_bn(x, ghost, gamma, beta):
    """Independent reference: split the batch into consecutive groups, normalize each."""
    batch = x.shape[0]
    groups = 1 if ghost is None or batch < ghost else batch // ghost
    bounds = [i * (batch // groups if ghost is None or batch < ghost else ghost)
              for i in range(groups)] + [batch]
    out = np.empty_like(x, dtype=np.float64)
    means, variances = [], []
    axes = tuple(range(x.ndim - 1))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        part = x[start:stop].astype(np.float64)
        mean = part.mean(axis=axes)
        var = part.var(axis=axes)
        out[start:stop] = (part - mean) / np.sqrt(var + EPSILON) * gamma + beta
        means.append(mean)
        variances.append(var)
    return out, np.mean(means, axis=0), np.mean(variances, axis=0)


def make_layer(ghost, channels, momentum=0.0, seed=0):
    layer = model_layers.GhostBatchNormalization(
        ghost_batch_size=ghost, momentum=momentum, epsilon=EPSILON
    )
    layer.build((None, channels))
    rng = np.random.default_rng(seed)
    layer.gamma.assign(rng.uniform(0.5, 2.0, channels).astype(np.float32))
    layer.beta.assign(rng.normal(size=channels).astype(np.float32))
    return layer


def random_images(batch, seed=1, channels=3):
    rng = np.random.default_rng(seed)
    # Per-example offsets make each group's statistics clearly differ from the batch's.
    offsets = rng.normal(scale=3.0, size=(batch, 1, 1, 1))
    return (rng.normal(size=(batch, 4, 5, channels)) + offsets).astype(np.float32)


@pytest.mark.parametrize("batch,ghost", [(16, 4), (8, 8), (6, 64), (12, None)])
def test_ghost_bn_training_uses_per_group_statistics(batch, ghost):
    x = random_images(batch)
    layer = make_layer(ghost, 3)
    expected, mean, var = numpy_ghost_bn(x, ghost, layer.gamma.numpy(), layer.beta.numpy())
    out = layer(x, training=True).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    # momentum 0: the moving statistics become the average of the group statistics.
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5)


def test_ghost_bn_differs_from_whole_batch_bn():
    x = random_images(16)
    ghost = make_layer(4, 3)(x, training=True).numpy()
    whole, _, _ = numpy_ghost_bn(x, None, *[v.numpy() for v in make_layer(4, 3).weights[:2]])
    assert np.abs(ghost - whole).max() > 0.1


def test_ghost_bn_leftover_examples_join_the_last_group():
    x = random_images(10)
    layer = make_layer(4, 3)
    out = layer(x, training=True).numpy()
    gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
    first, _, _ = numpy_ghost_bn(x[:4], None, gamma, beta)
    last, _, _ = numpy_ghost_bn(x[4:], None, gamma, beta)
    np.testing.assert_allclose(out, np.concatenate([first, last]), rtol=1e-4, atol=1e-4)


def test_ghost_bn_with_batch_known_only_at_run_time():
    layer = make_layer(4, 3)
    step = tf.function(
        lambda x: layer(x, training=True),
        input_signature=[tf.TensorSpec([None, 4, 5, 3], tf.float32)],
    )
    for batch in (16, 3, 12):
        x = random_images(batch, seed=batch)
        expected, _, _ = numpy_ghost_bn(x, 4, layer.gamma.numpy(), layer.beta.numpy())
        np.testing.assert_allclose(step(x).numpy(), expected, rtol=1e-4, atol=1e-4)


# 16 = four whole groups of 4 (reshape path); 10 = a group of 4 and one of 6 (segment path).
@pytest.mark.parametrize("bounds", [(0, 4, 8, 12, 16), (0, 4, 10)])
def test_ghost_bn_compiles_with_xla(bounds):
    layer = make_layer(4, 3)
    x = random_images(bounds[-1])
    gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
    parts = [numpy_ghost_bn(x[a:b], None, gamma, beta) for a, b in zip(bounds[:-1], bounds[1:])]
    expected = np.concatenate([p[0] for p in parts])
    mean = np.mean([p[1] for p in parts], axis=0)
    out = tf.function(lambda x: layer(x, training=True), jit_compile=True)(x)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-5)


def test_ghost_bn_moving_averages_and_inference():
    layer = make_layer(4, 3, momentum=0.75)
    x = random_images(8)
    _, mean, var = numpy_ghost_bn(x, 4, layer.gamma.numpy(), layer.beta.numpy())
    layer(x, training=True)
    # Starting from mean 0 and variance 1, one update with decay 0.75.
    moving_mean = 0.25 * mean
    moving_var = 0.75 + 0.25 * var
    np.testing.assert_allclose(layer.moving_mean.numpy(), moving_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), moving_var, rtol=1e-5)
    test_x = random_images(5, seed=7)
    expected = (test_x - moving_mean) / np.sqrt(moving_var + EPSILON)
    expected = expected * layer.gamma.numpy() + layer.beta.numpy()
    np.testing.assert_allclose(layer(test_x, training=False).numpy(), expected, rtol=1e-4,
                               atol=1e-4)
    # Inference leaves the moving statistics alone.
    np.testing.assert_allclose(layer.moving_mean.numpy(), moving_mean, rtol=1e-5, atol=1e-6)


def test_ghost_bn_on_dense_features():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(8, 5)) * 2 + 1).astype(np.float32)
    layer = make_layer(2, 5)
    expected, _, _ = numpy_ghost_bn(x, 2, layer.gamma.numpy(), layer.beta.numpy())
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_ghost_bn_refuses_bad_size():
    with pytest.raises(ValueError, match="ghost_batch_size"):
        model_layers.GhostBatchNormalization(ghost_batch_size=0)


def test_skipinit_scale_starts_at_zero_and_is_trainable():
    layer = model_layers.SkipInitScale()
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(layer(x).numpy(), np.zeros((2, 3)))
    assert len(layer.trainable_weights) == 1 and layer.trainable_weights[0].shape == ()
    layer.scale.assign(2.5)
    np.testing.assert_allclose(layer(x).numpy(), 2.5 * x)


def test_derived_seeds_are_distinct():
    seeds = {model_layers.derived_seed(s, i) for s in range(20) for i in range(1, 200)}
    assert len(seeds) == 20 * 199


_REPLICA_SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_sgd_regimes import models
    from tf_sgd_regimes.models import layers
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        bn = layers.GhostBatchNormalization(ghost_batch_size=2, momentum=0.0)
        bn.build((None, 3))
        lm = models.get_model("small_lstm_lm", (4,), 16, seed=0, batch_size=2, units=8)
    def run(fn, data):
        ds = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices(data).batch(len(data)))
        out = strategy.run(tf.function(fn), args=(next(iter(ds)),))
        return strategy.gather(out, 0).numpy()
    x = np.random.RandomState(0).randn(8, 3).astype(np.float32)
    out = run(lambda b: bn(b, training=True), x)
    groups = x.reshape(4, 2, 3)
    ref = (groups - groups.mean(1, keepdims=True)) / np.sqrt(groups.var(1, keepdims=True) + 1e-5)
    assert np.abs(out - ref.reshape(8, 3)).max() < 1e-4
    assert np.abs(bn.moving_mean.numpy() - groups.mean(1).mean(0)).max() < 1e-5
    tokens = np.random.RandomState(1).randint(0, 16, (4, 8))
    first = run(lambda t: lm(t, training=True), tokens[:, :4])
    second = run(lambda t: lm(t, training=True), tokens[:, 4:])
    single = models.get_model("small_lstm_lm", (4,), 16, seed=0, batch_size=4, units=8)
    ref = single(tokens, training=True).numpy()
    assert np.abs(np.concatenate([first, second], 1) - ref).max() < 1e-5
    print("OK")
    """
)


def test_per_replica_ghost_batches_and_lstm_state_under_mirrored_strategy():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", _REPLICA_SCRIPT], capture_output=True, text=True, env=env,
        timeout=120,
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def _autodiff_ghost_bn(x, ghost, gamma, beta):
    """Independent reference for the gradients: each consecutive group normalized by
    tf.nn.moments, leftovers in the last group, differentiated by TensorFlow."""
    batch = int(x.shape[0])
    groups = 1 if ghost is None or batch < ghost else batch // ghost
    size = batch if groups == 1 else ghost
    bounds = [i * size for i in range(groups)] + [batch]
    axes = list(range(len(x.shape) - 1))
    parts = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        mean, var = tf.nn.moments(x[start:stop], axes=axes)
        parts.append((x[start:stop] - mean) * tf.math.rsqrt(var + EPSILON) * gamma + beta)
    return tf.concat(parts, axis=0)


@pytest.mark.parametrize("shape,ghost", [((10, 4, 5, 3), 4), ((16, 2, 3, 2), 4),
                                         ((6, 4, 5, 3), 64), ((12, 5), 3), ((9, 7), None)])
@pytest.mark.parametrize("batch_known", [True, False])
def test_ghost_bn_gradients_match_autodiff_of_per_group_moments(shape, ghost, batch_known):
    """Gradients through the segment path (segment sums and gathers: the packed engine's,
    its batch known only at run time) and the reshape path against autodiff of the
    per-group reference, for a loss that weights every output differently."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=shape) + rng.normal(scale=3.0, size=(shape[0],) + (1,) * (
        len(shape) - 1))).astype(np.float32)
    weights = tf.constant(rng.normal(size=shape).astype(np.float32))
    layer = make_layer(ghost, shape[-1])
    spec = tf.TensorSpec([None if not batch_known else shape[0]] + list(shape[1:]))

    @tf.function(input_signature=[spec])
    def ours(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x, training=True)) * weights)
        return tape.gradient(loss, [x, layer.gamma, layer.beta])

    def reference(x):
        x = tf.constant(x)
        gamma, beta = tf.constant(layer.gamma.numpy()), tf.constant(layer.beta.numpy())
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            out = _autodiff_ghost_bn(x, ghost, gamma, beta)
            loss = tf.reduce_sum(tf.sin(out) * weights)
        return tape.gradient(loss, [x, gamma, beta])

    for got, want, name in zip(ours(x), reference(x), ("x", "gamma", "beta")):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-4, atol=2e-4,
                                   err_msg=name)
