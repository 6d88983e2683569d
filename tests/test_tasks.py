"""Losses and metrics per task against numpy written here."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_sgd_regimes import tasks


def np_cross_entropy(logits, labels):
    """-log softmax(logits)[label] along the last axis, in float64."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_norm = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))
    picked = np.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    return log_norm - picked


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_classification(rng):
    logits = rng.normal(size=(9, 4)).astype(np.float32) * 3
    labels = rng.integers(0, 4, size=9).astype(np.int32)
    weights = np.array([1] * 7 + [0, 0], np.float32)  # the last two are padding
    loss = tasks.per_example_loss("classification", logits, labels, None).numpy()
    expected = np_cross_entropy(logits, labels)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)

    sums = tasks.eval_sums("classification", logits, labels, None, weights).numpy()
    correct = (logits.argmax(axis=1) == labels).astype(np.float64)
    np.testing.assert_allclose(sums, [np.sum(expected[:7]), np.sum(correct[:7]), 7], rtol=1e-5)

    metrics = tasks.metrics_from_sums("classification", sums, "test")
    assert metrics == pytest.approx({"test_loss": expected[:7].mean(),
                                     "test_accuracy": correct[:7].mean()}, rel=1e-5)


def test_language_model(rng):
    batch, time, vocab = 3, 5, 11
    logits = rng.normal(size=(batch, time, vocab)).astype(np.float32)
    targets = rng.integers(0, vocab, size=(batch, time)).astype(np.int32)
    inputs = rng.integers(0, vocab, size=(batch, time)).astype(np.int32)
    token = np_cross_entropy(logits, targets)  # [B, T]
    loss = tasks.per_example_loss("language_model", logits, targets, inputs).numpy()
    # Zaremba et al.'s training loss: summed over the unrolled steps (per token in metrics).
    np.testing.assert_allclose(loss, token.sum(axis=1), rtol=1e-5)

    weights = np.array([1, 1, 0], np.float32)
    sums = tasks.eval_sums("language_model", logits, targets, inputs, weights).numpy()
    np.testing.assert_allclose(sums, [token[:2].sum(), 0.0, 2 * time], rtol=1e-5)
    metrics = tasks.metrics_from_sums("language_model", sums, "validation")
    per_token = token[:2].mean()
    assert metrics["validation_loss"] == pytest.approx(per_token, rel=1e-5)
    assert metrics["validation_perplexity"] == pytest.approx(math.exp(per_token), rel=1e-5)
    # A hopeless model: perplexity overflows to inf instead of raising.
    assert tasks.metrics_from_sums("language_model", [800.0, 0, 1], "test")[
        "test_perplexity"] == float("inf")


def test_language_model_gradient_has_zaremba_scale(rng):
    # A tiny linear language model, logits = onehot(x) E W. The engine's objective (mean over
    # the batch of tasks.per_example_loss) must have the gradient of sum_t CE_t averaged over
    # the batch: written out in numpy as sum_{b,t} h_bt (softmax_bt - onehot_bt)^T / B.
    batch, time, vocab, width = 4, 7, 9, 5
    embedding = rng.normal(size=(vocab, width))
    kernel = rng.normal(size=(width, vocab)) * 0.5
    inputs = rng.integers(0, vocab, size=(batch, time)).astype(np.int32)
    targets = rng.integers(0, vocab, size=(batch, time)).astype(np.int32)
    hidden = embedding[inputs]  # [B, T, W]
    logits = hidden @ kernel
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    residual = probs - np.eye(vocab)[targets]
    expected = np.einsum("btw,btv->wv", hidden, residual) / batch

    weight = tf.Variable(kernel.astype(np.float32))
    with tf.GradientTape() as tape:
        outputs = tf.einsum("btw,wv->btv", tf.constant(hidden, tf.float32), weight)
        objective = tf.reduce_mean(
            tasks.per_example_loss("language_model", outputs, targets, inputs))
    grad = tape.gradient(objective, weight).numpy()
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
    # The value is the batch mean of summed token losses: T times the per-token mean.
    token = np_cross_entropy(logits, targets)
    assert float(objective) == pytest.approx(token.sum(axis=1).mean(), rel=1e-5)
    assert float(objective) == pytest.approx(time * token.mean(), rel=1e-5)


def test_objective_units_convert_between_window_and_token_scales():
    assert tasks.objective_units("language_model", (35,)) == 35
    assert tasks.objective_units("classification", (32, 32, 3)) == 1
    assert tasks.objective_units("autoencoder", (784,)) == 1
    # Per token, an L2 penalty on the per-window objective counts 1/T.
    assert tasks.per_token_objective("language_model", 4.0, 7.0, (35,)) == pytest.approx(4.2)
    assert tasks.per_token_objective("classification", 0.5, 0.25, (8, 8, 1)) == 0.75


@pytest.mark.parametrize("input_shape", [(6,), (2, 3, 1)])
def test_autoencoder_loss_is_the_per_example_sum_of_squares(rng, input_shape):
    inputs = rng.uniform(size=(4,) + input_shape).astype(np.float32)
    outputs = rng.uniform(size=(4, 6)).astype(np.float32)
    squared = (outputs - inputs.reshape(4, -1)) ** 2
    loss = tasks.per_example_loss("autoencoder", outputs, None, inputs).numpy()
    np.testing.assert_allclose(loss, squared.sum(axis=1), rtol=1e-5)
    assert not np.allclose(loss, squared.mean(axis=1))

    weights = np.array([1, 0, 1, 1], np.float32)
    sums = tasks.eval_sums("autoencoder", outputs, np.zeros(4, np.int32), inputs,
                           weights).numpy()
    kept = squared.sum(axis=1)[[0, 2, 3]]
    np.testing.assert_allclose(sums, [kept.sum(), 0.0, 3.0], rtol=1e-5)
    metrics = tasks.metrics_from_sums("autoencoder", sums, "train")
    assert metrics == pytest.approx({"train_loss": kept.mean(), "train_mse": kept.mean()},
                                    rel=1e-5)


def test_sums_add_up_across_batches(rng):
    # Evaluation in any batch split gives the same metrics: sums, not means, are added.
    logits = rng.normal(size=(10, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=10).astype(np.int32)
    ones = np.ones(10, np.float32)
    whole = tasks.eval_sums("classification", logits, labels, None, ones).numpy()
    parts = sum(tasks.eval_sums("classification", logits[s], labels[s], None, ones[s]).numpy()
                for s in (slice(0, 3), slice(3, 10)))
    np.testing.assert_allclose(parts, whole, rtol=1e-6)


@pytest.mark.parametrize("task", ["classification", "language_model", "autoencoder"])
def test_metric_names_match_what_evaluation_produces(task):
    produced = set(tasks.metrics_from_sums(task, [1.0, 1.0, 2.0], "test"))
    produced |= set(tasks.metrics_from_sums(task, [1.0, 1.0, 2.0], "train"))
    assert produced == set(tasks.metric_names(task, "test"))
    metric, mode = tasks.SELECTION[task]
    assert metric in produced and mode in ("min", "max")


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="no test examples"):
        tasks.metrics_from_sums("classification", [0.0, 0.0, 0.0], "test")
    with pytest.raises(ValueError, match="unknown task 'regresion'"):
        tasks.per_example_loss("regresion", tf.zeros([2, 2]), tf.zeros([2]), None)


def test_language_model_eval_sums_take_per_token_weights(rng):
    batch, time, vocab = 3, 4, 6
    logits = rng.normal(size=(batch, time, vocab)).astype(np.float32)
    targets = rng.integers(0, vocab, size=(batch, time)).astype(np.int32)
    weights = np.ones([batch, time], np.float32)
    weights[2, 1:] = 0.0  # the stream's tail: one real target in the last row
    sums = tasks.eval_sums("language_model", logits, targets, targets, weights).numpy()
    token = np_cross_entropy(logits, targets)
    np.testing.assert_allclose(sums, [(token * weights).sum(), 0.0, 9.0], rtol=1e-5)
