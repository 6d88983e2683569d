"""Packed convolutions: every conv model of the registry, K members at once, equals each
member alone (outputs and gradients), as one grouped convolution per layer. (Under XLA:
tests/test_engine_xla.py checks every family's packed step against the same step without
XLA.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_sgd_regimes import member_map
from tf_sgd_regimes import models

SEEDS = (0, 1, 2)


def _conv_models():
    names = []
    for name in models.names():
        tiny = models.tiny_config(name)
        if models.TASKS[name] != "classification":
            continue
        model = models.get_model(name, tiny["input_shape"], tiny["num_outputs"], seed=0,
                                 **tiny["fields"])
        if any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers):
            names.append(name)
    return names


CONV_MODELS = _conv_models()


def _packed_conv_with_kernel_gradient(x, kernel):
    """A pack's strided convolution, converted by member_map.vectorize, and the gradient of
    its squared sum with respect to the members' kernels."""
    with tf.GradientTape() as tape:
        tape.watch(kernel)
        y = member_map.vectorize(
            lambda args: tf.nn.conv2d(args[0], args[1], 2, "SAME"), (x, kernel))
        total = tf.reduce_sum(tf.square(y))
    return y, tape.gradient(total, kernel)


def test_the_registry_has_conv_models():
    assert {"small_cnn", "small_wrn", "wide_resnet", "resnet50"} <= set(CONV_MODELS)


def test_grouped_conv2d_is_k_separate_convolutions():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((3, 2, 7, 7, 4)), tf.float32)
    kernel = tf.constant(rng.standard_normal((3, 3, 3, 4, 5)), tf.float32)
    for strides, padding in (((1, 1, 1, 1), "SAME"), ((1, 2, 2, 1), "VALID")):
        packed = member_map.grouped_conv2d(x, kernel, strides=strides, padding=padding)
        for k in range(3):
            alone = tf.nn.conv2d(x[k], kernel[k], strides=strides, padding=padding)
            np.testing.assert_allclose(packed[k].numpy(), alone.numpy(), rtol=1e-5, atol=1e-5)


# (input [K, B, H, W, C], kernel [K, kh, kw, C, O], strides, padding, dilations): the
# paper models' convolutions (3x3 and 1x1 at strides 1 and 2, ResNet-50's 7x7 stem) and
# the odd cases (odd sizes under SAME, VALID, dilation, unequal strides).
SHIFTED_CASES = [
    ((3, 2, 8, 8, 4), (3, 3, 3, 4, 5), (1, 1, 1, 1), "SAME", (1, 1, 1, 1)),
    ((3, 2, 8, 8, 4), (3, 3, 3, 4, 5), (1, 2, 2, 1), "SAME", (1, 1, 1, 1)),
    ((3, 2, 7, 7, 4), (3, 3, 3, 4, 5), (1, 2, 2, 1), "SAME", (1, 1, 1, 1)),
    ((3, 2, 8, 8, 4), (3, 1, 1, 4, 5), (1, 2, 2, 1), "SAME", (1, 1, 1, 1)),
    ((3, 2, 9, 9, 3), (3, 7, 7, 3, 4), (1, 2, 2, 1), "SAME", (1, 1, 1, 1)),
    ((3, 2, 7, 6, 4), (3, 2, 3, 4, 5), (1, 2, 1, 1), "VALID", (1, 1, 1, 1)),
    ((3, 2, 9, 9, 4), (3, 3, 3, 4, 5), (1, 1, 1, 1), "SAME", (1, 2, 2, 1)),
]


@pytest.mark.parametrize("x_shape,k_shape,strides,padding,dilations", SHIFTED_CASES)
@pytest.mark.parametrize("jit", [False, True])
def test_shifted_conv2d_is_k_separate_convolutions_and_their_gradients(
        x_shape, k_shape, strides, padding, dilations, jit):
    rng = np.random.default_rng(3)
    x = tf.constant(rng.standard_normal(x_shape), tf.float32)
    kernel = tf.constant(rng.standard_normal(k_shape), tf.float32)
    y_weights = tf.constant(rng.standard_normal((x_shape[0],)), tf.float32)

    @tf.function(jit_compile=jit)
    def packed(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = member_map.shifted_conv2d(x, kernel, strides, padding, dilations=dilations)
            # Member k's loss weighted by y_weights[k]: a mixed-up member shows.
            loss = tf.reduce_sum(tf.reduce_sum(tf.square(y), [1, 2, 3, 4]) * y_weights)
        return (y,) + tuple(tape.gradient(loss, [x, kernel]))

    # TF's CPU kernels have no dilated convolution gradient: XLA's serves as reference.
    @tf.function(jit_compile=dilations != (1, 1, 1, 1))
    def member_alone(x, kernel, k):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            alone = tf.nn.conv2d(x[k], kernel[k], strides, padding, dilations=dilations)
            loss = tf.reduce_sum(tf.square(alone)) * y_weights[k]
        return (alone,) + tuple(tape.gradient(loss, [x, kernel]))

    y, dx, dkernel = packed(x, kernel)
    for k in range(x_shape[0]):
        alone, dx_alone, dk_alone = member_alone(x, kernel, k)
        np.testing.assert_allclose(y[k].numpy(), alone.numpy(), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(dx[k].numpy(), dx_alone[k].numpy(), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(dkernel[k].numpy(), dk_alone[k].numpy(), rtol=1e-4,
                                   atol=1e-3)


def test_under_xla_on_cpu_a_pack_convolves_with_batched_matmuls(monkeypatch):
    # XLA's CPU grouped convolution is ~500x slower (BENCHMARKS.md): under XLA off a TPU
    # the converter emits shifted_conv2d's matmuls, no convolution and no member loop.
    # A non-finite member stays its own (the members are the matmuls' batch axis).
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 8, 8, 4)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3, 4, 5)).astype(np.float32)

    packed = tf.function(_packed_conv_with_kernel_gradient, jit_compile=True)

    graph = packed.get_concrete_function(tf.constant(x), tf.constant(kernel)).graph
    vectorized = [op.type for op in graph.get_operations() if "pfor" in op.name]
    assert "Conv2D" not in vectorized and not [t for t in vectorized if "While" in t]
    # One per kernel offset, and its two gradients (input and kernel).
    assert sum("MatMul" in t for t in vectorized) == 3 * 9
    y, grad = packed(tf.constant(x), tf.constant(kernel))
    bad = x.copy()
    bad[0, 1, 2, 3, 0] = np.nan
    _, bad_grad = packed(tf.constant(bad), tf.constant(kernel))
    np.testing.assert_allclose(bad_grad[1:].numpy(), grad[1:].numpy(), rtol=1e-6)
    assert np.all(np.isnan(bad_grad[0].numpy()))
    for k in range(3):
        alone = tf.nn.conv2d(x[k], kernel[k], 2, "SAME")
        np.testing.assert_allclose(y[k].numpy(), alone.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", CONV_MODELS)
def test_packed_conv_model_equals_each_member_alone(name, monkeypatch):
    tiny = models.tiny_config(name)
    members = [models.get_model(name, tiny["input_shape"], tiny["num_outputs"], seed=s,
                                **tiny["fields"]) for s in SEEDS]
    template = members[0]
    batch = 4
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((len(SEEDS), batch) + tuple(tiny["input_shape"])),
                    tf.float32)
    stacked = [tf.constant(np.stack([m.trainable_variables[i].numpy() for m in members]))
               for i in range(len(template.trainable_variables))]
    states = [tf.constant(np.stack([m.non_trainable_variables[i].numpy() for m in members]))
              for i in range(len(template.non_trainable_variables))]

    def member_loss(args):
        weights, member_states, member_x = args
        # training=False: dropout and batch-norm statistics would differ by construction.
        outputs, _ = template.stateless_call(list(weights), list(member_states), member_x,
                                             training=False)
        return tf.reduce_sum(tf.square(outputs))

    @tf.function
    def packed(weights):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            losses = member_map.vectorize(member_loss, (weights, states, x))
            total = tf.reduce_sum(losses)
        return losses, tape.gradient(total, weights)

    losses, grads = packed(stacked)  # grouped, or member by member without oneDNN
    for k, model in enumerate(members):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(x[k], training=False)))
        alone = tape.gradient(loss, model.trainable_variables)
        np.testing.assert_allclose(losses[k].numpy(), loss.numpy(), rtol=1e-4)
        for g_packed, g_alone in zip(grads, alone):
            np.testing.assert_allclose(g_packed[k].numpy(), tf.convert_to_tensor(g_alone),
                                       rtol=2e-3, atol=1e-5)

    # The graph where oneDNN is on (TensorFlow's default on AVX-512 CPUs; traced here, not
    # run, since without oneDNN the grouped gradient has no kernel): one convolution per
    # conv layer, no loop over members. The vectorised ops live under the "pfor" name
    # scope (the per-member trace they were converted from stays as dead code).
    monkeypatch.setattr(member_map, "onednn_enabled", lambda: True)
    graph = tf.function(packed.python_function).get_concrete_function(stacked).graph
    vectorized = [op for op in graph.get_operations() if "pfor" in op.name]
    convs = sum(isinstance(layer, keras.layers.Conv2D) for layer in template.layers)
    assert [op.type for op in vectorized].count("Conv2D") == convs
    assert not [op for op in vectorized if "While" in op.type]


@pytest.mark.parametrize("strides", [(1, 1, 1, 1), (1, 2, 2, 1)])
def test_under_xla_a_non_finite_member_leaves_the_others_kernel_gradients_alone(strides):
    # XLA's CPU compiler rewrites a grouped convolution's kernel gradient into one
    # convolution whose zero holes multiply the other members' values: 0 x NaN = NaN.
    # Member 0's input and kernel hold inf/NaN; members 1 and 2 must get the gradients
    # they get with a finite member 0 (and member 0 a NaN kernel gradient: it diverged).
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 6, 6, 2)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3, 2, 4)).astype(np.float32)
    bad_x, bad_kernel = x.copy(), kernel.copy()
    bad_x[0, 1, 2, 3, 0], bad_x[0, 2, 0, 0, 1] = np.nan, np.inf
    bad_kernel[0, 1, 1, 0, 2] = np.nan

    @tf.function(jit_compile=True)
    def gradients(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = member_map.grouped_conv2d(x, kernel, strides=strides, padding="SAME")
            # Member 0's loss is NaN; the others' are finite.
            loss = tf.reduce_sum(tf.square(y))
        return tape.gradient(loss, [x, kernel])

    clean_dx, clean_dk = (g.numpy() for g in gradients(tf.constant(x), tf.constant(kernel)))
    dx, dk = (g.numpy() for g in gradients(tf.constant(bad_x), tf.constant(bad_kernel)))
    assert np.all(np.isfinite(clean_dk))
    np.testing.assert_allclose(dk[1:], clean_dk[1:], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx[1:], clean_dx[1:], rtol=1e-6, atol=1e-6)
    assert np.all(np.isnan(dk[0]))


def test_without_onednn_a_packed_convnet_trains_member_by_member(monkeypatch):
    # TF's CPU kernels without oneDNN have no grouped-convolution gradient: the converter
    # then leaves each member's convolution to pfor's loop, which must still equal each
    # member alone (the choice is simulated here, whatever this CPU has; the next test runs
    # the real kernels with oneDNN off).
    monkeypatch.setattr(member_map, "onednn_enabled", lambda: False)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((3, 2, 7, 7, 4)), tf.float32)
    kernel = tf.constant(rng.standard_normal((3, 3, 3, 4, 5)), tf.float32)

    packed = tf.function(_packed_conv_with_kernel_gradient)
    y, grad = packed(x, kernel)
    for k in range(3):
        with tf.GradientTape() as tape:
            tape.watch(kernel)
            alone = tf.nn.conv2d(x[k], kernel[k], 2, "SAME")
            loss = tf.reduce_sum(tf.square(alone))
        np.testing.assert_allclose(y[k].numpy(), alone.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grad[k].numpy(), tape.gradient(loss, kernel)[k].numpy(),
                                   rtol=1e-4, atol=1e-4)
    ops = packed.get_concrete_function(x, kernel).graph.get_operations()
    assert any("While" in op.type for op in ops)  # the loop over members, not one group


def test_with_onednn_off_the_packed_cnn_step_trains():
    # The real case (TF's default on CPUs without AVX-512, e.g. AMD EPYC): before the
    # fallback this raised "Gradients for grouped convolutions are not supported on CPU".
    from conftest import run_python

    done = run_python(
        "import sys; sys.path.insert(0, 'tests')\n"
        "from tensorflow.python.util import _pywrap_util_port as p\n"
        "assert not p.IsMklEnabled()\n"
        "import numpy as np, tensorflow as tf\n"
        "from test_engine_xla import tiny_pack_dataset, tiny_pack_config, MEMBERS\n"
        "from tf_sgd_regimes import engine\n"
        "trainer = engine.Engine(tiny_pack_config('small_cnn', False),\n"
        "                        tiny_pack_dataset('small_cnn', 4), tf.distribute.get_strategy())\n"
        "results = trainer.train_pack(MEMBERS, 4, 3)\n"
        "print('STATUS', [r.status for r in results])\n",
        env_extra={"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "STATUS ['complete', 'complete']" in done.stdout
    assert "oneDNN kernels are off" in done.stderr  # the user is told why it is slower
