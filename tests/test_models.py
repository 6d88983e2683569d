"""Tests of the model registry: every model builds, steps and seeds; sizes match the literature."""

import numpy as np
import pytest
import tensorflow as tf

from tf_sgd_regimes import models
from tf_sgd_regimes.models import autoencoder
from tf_sgd_regimes.models import lstm_lm
from tf_sgd_regimes.models import resnet
from tf_sgd_regimes.models import wide_resnet


def tiny_model(name, seed, **overrides):
    tiny = models.tiny_config(name)
    fields = {**tiny["fields"], **overrides}
    return models.get_model(name, tiny["input_shape"], tiny["num_outputs"], seed, **fields)


def tiny_batch(name, model, seed=0):
    """Inputs and targets of the right kind for the model's task."""
    tiny = models.tiny_config(name)
    rng = np.random.default_rng(seed)
    task = models.task_of(name)
    if task == "language_model":
        shape = (model.batch_size,) + tuple(tiny["input_shape"])
        tokens = rng.integers(0, tiny["num_outputs"], size=shape).astype(np.int32)
        return tokens, np.roll(tokens, -1, axis=1)
    x = rng.uniform(size=(4,) + tuple(tiny["input_shape"])).astype(np.float32)
    if task == "autoencoder":
        return x, x.reshape(4, -1)
    return x, rng.integers(0, tiny["num_outputs"], size=4)


def loss_fn(task, outputs, targets):
    if task == "autoencoder":
        return tf.reduce_mean(tf.reduce_sum(tf.square(outputs - targets), axis=-1))
    return tf.reduce_mean(
        tf.keras.losses.sparse_categorical_crossentropy(targets, outputs, from_logits=True)
    )


@pytest.mark.parametrize("name", models.names(with_tiny=True))
def test_registry_model_builds_steps_and_seeds(name):
    tiny = models.tiny_config(name)
    task = models.task_of(name)
    model = tiny_model(name, seed=3)
    assert model.built and len(model.trainable_weights) > 0
    x, y = tiny_batch(name, model)

    outputs = model(x, training=False)
    batch = x.shape[0]
    if task == "classification":
        assert outputs.shape == (batch, tiny["num_outputs"])
    elif task == "language_model":
        assert outputs.shape == (batch, x.shape[1], tiny["num_outputs"])
    else:
        assert outputs.shape == (batch, int(np.prod(tiny["input_shape"])))
        assert np.all((outputs.numpy() > 0) & (outputs.numpy() < 1))  # sigmoid output

    before = [w.numpy().copy() for w in model.trainable_weights]
    with tf.GradientTape() as tape:
        loss = loss_fn(task, model(x, training=True), y)
    # Embedding gradients come as IndexedSlices; densify them.
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_weights)]
    assert np.isfinite(loss.numpy())
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    for weight, grad in zip(model.trainable_weights, grads):
        weight.assign_sub(0.01 * grad)
    after = [w.numpy() for w in model.trainable_weights]
    assert all(np.all(np.isfinite(w)) for w in after)
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))
    assert np.isfinite(loss_fn(task, model(x, training=True), y).numpy())

    same = tiny_model(name, seed=3)
    other = tiny_model(name, seed=4)
    for a, b in zip(same.trainable_weights, before):
        np.testing.assert_array_equal(a.numpy(), b)
    assert any(
        not np.array_equal(a.numpy(), b)
        for a, b in zip(other.trainable_weights, before)
        if a.name in models.regularization.KERNEL_NAMES
    )


@pytest.mark.parametrize("name", models.names(with_tiny=True))
def test_layers_of_one_model_get_distinct_seeds(name):
    model = tiny_model(name, seed=0)
    kernels = [w.numpy() for w in model.trainable_weights if w.name == "kernel"]
    by_shape = {}
    for kernel in kernels:
        by_shape.setdefault(kernel.shape, []).append(kernel)
    for same_shape in by_shape.values():
        for i in range(len(same_shape)):
            for j in range(i + 1, len(same_shape)):
                assert not np.array_equal(same_shape[i], same_shape[j])


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="known: .*wide_resnet"):
        models.get_model("vgg", (32, 32, 3), 10, seed=0)


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize(
    "depth,width,classes,expected",
    [(16, 4, 10, 2.75e6), (28, 10, 10, 36.5e6)],
)
def test_wide_resnet_parameter_counts_match_literature(depth, width, classes, expected):
    model = models.get_model(
        "wide_resnet", (32, 32, 3), classes, seed=0, depth=depth, width=width
    )
    count = trainable_count(model)
    assert abs(count - expected) / expected < 0.01, count
    assert count == wide_resnet.parameter_count(depth, width, classes)


def test_resnet50_parameter_count_matches_literature():
    model = models.get_model("resnet50", (224, 224, 3), 1000, seed=0)
    count = trainable_count(model)
    assert abs(count - 25.6e6) / 25.6e6 < 0.01, count
    assert count == resnet.parameter_count()


def test_lstm_medium_parameter_count():
    model = models.get_model("lstm_lm", (35,), 10_000, seed=0, batch_size=2)
    # Embedding 10k x 650, two LSTMs of 4 gates x (650 + 650 + 1) x 650, softmax 650 x 10k + 10k.
    expected = 10_000 * 650 + 2 * 4 * (650 + 650 + 1) * 650 + 650 * 10_000 + 10_000
    assert trainable_count(model) == expected == lstm_lm.parameter_count()
    assert abs(expected - 19.8e6) / 19.8e6 < 0.01
    for weight in model.trainable_weights:
        values = weight.numpy()
        assert values.min() >= -0.05 and values.max() <= 0.05  # U[-0.05, 0.05], biases too


def test_autoencoder_architecture_and_sparse_init():
    model = models.get_model("autoencoder", (784,), 784, seed=0)
    kernels = [w.numpy() for w in model.trainable_weights if w.name == "kernel"]
    widths = [784] + [k.shape[1] for k in kernels]
    assert widths == [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
    assert trainable_count(model) == autoencoder.parameter_count()
    for kernel in kernels:
        np.testing.assert_array_equal((kernel != 0).sum(axis=0), 15)  # Martens' sparse init
    assert model.get_layer("code").activation.__name__ == "linear"
    with pytest.raises(ValueError, match="num_outputs"):
        models.get_model("autoencoder", (784,), 10, seed=0)


def block_tensors(model, suffix="_add"):
    """A model returning, for every residual Add layer, its (shortcut, branch) inputs and output."""
    adds = [layer for layer in model.layers if layer.name.endswith(suffix)]
    outputs = [t for layer in adds for t in (*layer.input, layer.output)]
    return adds, tf.keras.Model(model.input, outputs)


@pytest.mark.parametrize("conv_biases", [False, True])
def test_skipinit_blocks_are_identity_at_initialisation(conv_biases):
    model = models.get_model(
        "wide_resnet", (8, 8, 3), 10, seed=0, depth=16, width=2,
        normalization="skipinit", conv_biases=conv_biases,
    )
    # Non-zero biases must not break it: only the SkipInit scalar gates the branch.
    for weight in model.trainable_weights:
        if weight.name == "bias":
            weight.assign(np.full(weight.shape, 0.3, np.float32))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    adds, probe = block_tensors(model)
    values = [v.numpy() for v in probe(x)]
    stem = model.get_layer("stem")
    previous = tf.keras.Model(model.input, stem.output)(x).numpy()
    for i, layer in enumerate(adds):
        shortcut, branch, output = values[3 * i: 3 * i + 3]
        assert np.abs(branch).max() == 0.0
        np.testing.assert_array_equal(output, shortcut)
        if previous.shape == output.shape:  # same-shape block: the identity on its input
            np.testing.assert_array_equal(output, previous)
        previous = output
    # The check can fail: with the scalars at 1 the blocks are no longer identities.
    for weight in model.trainable_weights:
        if weight.name == "scale":
            weight.assign(1.0)
    values = [v.numpy() for v in probe(x)]
    assert np.abs(values[1]).max() > 0


def test_regularized_skipinit_defaults_and_batch_norm_defaults():
    skip = models.get_model("small_wrn", (8, 8, 1), 10, seed=0, normalization="skipinit")
    names = {w.name for w in skip.trainable_weights}
    assert "scale" in names and "bias" in names and "gamma" not in names
    assert skip.get_layer("dropout").rate == 0.2
    assert skip.get_layer("stem").use_bias
    bn = models.get_model("small_wrn", (8, 8, 1), 10, seed=0)
    assert not bn.get_layer("stem").use_bias
    assert all(layer.name != "dropout" for layer in bn.layers)
    assert bn.get_layer("group0_block0_pre_bn").ghost_batch_size == 64


def test_resnet_last_gamma_zero_makes_blocks_start_as_shortcut():
    tiny = models.tiny_config("resnet50")
    model = models.get_model("resnet50", tiny["input_shape"], 10, seed=0, **tiny["fields"])
    adds, probe = block_tensors(model)
    assert len(adds) == 4
    x = np.random.default_rng(0).normal(size=(4,) + tuple(tiny["input_shape"])).astype(np.float32)
    values = [v.numpy() for v in probe(x, training=True)]
    for i in range(len(adds)):
        shortcut, branch, output = values[3 * i: 3 * i + 3]
        assert np.abs(branch).max() == 0.0
        np.testing.assert_array_equal(output, shortcut)
    gammas = {w.path: w.numpy() for w in model.trainable_weights if w.name == "gamma"}
    assert all(np.all(v == 0) for p, v in gammas.items() if "_bn3" in p)
    assert all(np.all(v == 1) for p, v in gammas.items() if "_bn3" not in p)


def test_regularized_weights_scopes():
    model = models.get_model("small_wrn", (8, 8, 1), 10, seed=0)
    kernels = models.regularized_weights(model, "kernels")
    assert {w.name for w in kernels} == {"kernel"}
    assert len(models.regularized_weights(model, "all")) == len(model.trainable_weights)
    assert {w.name for w in models.regularized_weights(model, "all")} >= {"gamma", "beta", "bias"}
    lm = tiny_model("lstm_lm", seed=0)
    assert {w.name for w in models.regularized_weights(lm, "kernels")} == {
        "embeddings", "kernel", "recurrent_kernel"
    }
    # Non-trainable state (moving statistics, LSTM state) is never regularized.
    assert all(w.trainable for w in models.regularized_weights(lm, "all"))
    with pytest.raises(ValueError, match="l2_scope"):
        models.regularized_weights(model, "biases")


def lstm_without_dropout(batch_size=3, eval_batch_size=None):
    return models.get_model(
        "lstm_lm", (5,), 11, seed=0, batch_size=batch_size, eval_batch_size=eval_batch_size,
        embedding_size=6, units=7, dropout_rate=0.0,
    )


def test_lstm_state_carries_across_training_calls():
    model = lstm_without_dropout()
    tokens = np.random.default_rng(0).integers(0, 11, size=(3, 10))
    step = tf.function(lambda t: model(t, training=True))
    first = step(tokens[:, :5]).numpy()
    second = step(tokens[:, 5:]).numpy()
    fresh = lstm_without_dropout()(tokens[:, 5:], training=True).numpy()
    assert np.abs(second - fresh).max() > 1e-4  # the carried state matters
    whole = lstm_without_dropout()(tokens, training=True).numpy()
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, atol=1e-5)
    model.reset_state("train")
    np.testing.assert_allclose(step(tokens[:, 5:]).numpy(), fresh, atol=1e-6)


def test_lstm_evaluation_does_not_clobber_training_state():
    model = lstm_without_dropout(batch_size=3, eval_batch_size=2)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 11, size=(3, 10))
    model(tokens[:, :5], training=True)
    saved = [v.numpy().copy() for pair in model.train_state for v in pair]
    test_tokens = rng.integers(0, 11, size=(2, 5))
    first_eval = model(test_tokens, training=False).numpy()
    second_eval = model(test_tokens, training=False).numpy()
    assert np.abs(first_eval - second_eval).max() > 1e-4  # eval state carries too
    for before, variable in zip(saved, [v for pair in model.train_state for v in pair]):
        np.testing.assert_array_equal(variable.numpy(), before)
    second = model(tokens[:, 5:], training=True).numpy()
    whole = lstm_without_dropout()(tokens, training=True).numpy()
    np.testing.assert_allclose(second, whole[:, 5:], atol=1e-5)
    model.reset_state("eval")
    np.testing.assert_allclose(model(test_tokens, training=False).numpy(), first_eval, atol=1e-6)
    assert any(np.abs(v.numpy()).max() > 0 for pair in model.train_state for v in pair)


def test_lstm_refuses_a_batch_that_does_not_match_its_streams():
    model = lstm_without_dropout(batch_size=3)
    with pytest.raises(ValueError, match="batch_size"):
        model(np.zeros((4, 5), np.int32), training=True)
    with pytest.raises(ValueError, match="batch_size"):
        models.get_model("lstm_lm", (5,), 11, seed=0)


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(normalization="layer_norm"), "config.model.normalization"),
        (dict(depth=12), "config.model.depth"),
        (dict(width=0), "config.model.width"),
    ],
)
def test_wide_resnet_refuses_bad_fields(fields, match):
    with pytest.raises(ValueError, match=match):
        models.get_model("wide_resnet", (8, 8, 3), 10, seed=0, **fields)
