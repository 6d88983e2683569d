"""Tests of the gradient-noise-scale estimator on a linear regression with known answers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_sgd_regimes.theory import noise_scale  # noqa: E402

# y = x . w_star + eta, x ~ N(0, diag(SCALES)), eta ~ N(0, NOISE^2); loss 1/2 (x . w - y)^2.
SCALES = np.array([2.0, 1.0, 0.5, 0.25, 0.1])
NOISE = 0.7
W_STAR = np.array([1.0, -1.0, 0.5, 2.0, 0.0])
W = np.array([0.5, 0.0, 1.0, 1.0, 1.0])


def closed_form():
    """|G|^2 and tr(Sigma) per example at W, by Gaussian moment (Isserlis) identities.

    g = x (x . delta - eta), delta = W - W_STAR: G = D delta and
    Sigma = (delta^T D delta + NOISE^2) D + D delta delta^T D.
    """
    delta = W - W_STAR
    grad = SCALES * delta
    trace = (delta @ (SCALES * delta) + NOISE**2) * SCALES.sum() + grad @ grad
    return grad @ grad, trace


def per_example_data(rng, shape):
    x = rng.standard_normal(shape + (SCALES.size,)) * np.sqrt(SCALES)
    y = x @ W_STAR + NOISE * rng.standard_normal(shape)
    return x, y


def microbatch_mean_grads(rng, draws, count, batch_small):
    """[draws, count, dim]: mean gradients of `count` micro-batches of batch_small examples."""
    x, y = per_example_data(rng, (draws, count, batch_small))
    residual = x @ W - y
    return np.mean(x * residual[..., None], axis=2)


def test_closed_form_matches_monte_carlo_per_example():
    # Guards the test's own reference before it judges the estimator.
    rng = np.random.default_rng(0)
    x, y = per_example_data(rng, (400_000,))
    grads = x * (x @ W - y)[:, None]
    grad_sq, trace = closed_form()
    np.testing.assert_allclose(grads.mean(0) @ grads.mean(0), grad_sq, rtol=0.02)
    np.testing.assert_allclose(np.trace(np.cov(grads.T)), trace, rtol=0.02)


def test_two_pieces_are_unbiased():
    rng = np.random.default_rng(1)
    count, batch_small = 4, 3
    grads = microbatch_mean_grads(rng, 40_000, count, batch_small)
    sq_small = np.mean(np.sum(grads**2, axis=-1), axis=1)
    sq_big = np.sum(grads.mean(axis=1) ** 2, axis=-1)
    batch_big = count * batch_small
    grad_sq, trace = noise_scale.unbiased_estimates(sq_small, sq_big, batch_small, batch_big)
    true_grad_sq, true_trace = closed_form()
    for estimate, truth in ((grad_sq, true_grad_sq), (trace, true_trace)):
        standard_error = estimate.std() / np.sqrt(estimate.size)
        assert abs(estimate.mean() - truth) < 4 * standard_error, (estimate.mean(), truth)
        assert standard_error < 0.05 * truth  # the check above has teeth
    # The naive small-batch norm is biased upward by tr(Sigma) / B_small, as the model says.
    assert sq_small.mean() > true_grad_sq + 0.5 * true_trace / batch_small


def test_tracker_converges_to_b_simple():
    rng = np.random.default_rng(2)
    count, batch_small = 8, 4
    grads = microbatch_mean_grads(rng, 3000, count, batch_small)
    tracker = noise_scale.NoiseScaleTracker(decay=0.999)
    for draw in grads:
        tracker.update(
            np.mean(np.sum(draw**2, axis=-1)), np.sum(draw.mean(0) ** 2), batch_small,
            count * batch_small,
        )
    grad_sq, trace = closed_form()
    assert tracker.b_simple == pytest.approx(trace / grad_sq, rel=0.1)


def test_ema_by_hand():
    assert noise_scale.ema_update(None, 3.0, 0.9) == 3.0
    assert noise_scale.ema_update(3.0, 1.0, 0.75) == pytest.approx(2.5)
    tracker = noise_scale.NoiseScaleTracker(decay=0.5)
    assert tracker.b_simple is None
    # B_small = 1, B_big = 2: |G|^2 = 2 big - small, tr = 2 (small - big).
    tracker.update(5.0, 3.0, 1, 2)  # |G|^2 = 1, tr = 4
    assert (tracker.grad_sq, tracker.trace_sigma, tracker.b_simple) == (1.0, 4.0, 4.0)
    tracker.update(4.0, 3.0, 1, 2)  # |G|^2 = 2, tr = 2 -> averages 1.5 and 3
    assert (tracker.grad_sq, tracker.trace_sigma) == (1.5, 3.0)
    assert tracker.b_simple == 2.0  # ratio of averages, not the average ratio (3.0)


def test_tf_helpers_match_numpy():
    rng = np.random.default_rng(3)
    x, y = per_example_data(rng, (24,))
    kernel = tf.Variable(W[:3].reshape(3, 1), dtype=tf.float64)  # two variables: a list
    rest = tf.Variable(W[3:], dtype=tf.float64)

    def loss_fn(inputs, targets):
        prediction = tf.squeeze(inputs[:, :3] @ kernel, 1) + tf.linalg.matvec(inputs[:, 3:], rest)
        return tf.reduce_mean(0.5 * tf.square(prediction - targets))

    grads = noise_scale.microbatch_gradients(
        loss_fn, [kernel, rest], tf.constant(x), tf.constant(y), 4
    )
    sq_small, sq_big = noise_scale.gradient_sq_norms(grads)
    slices = x.reshape(4, 6, -1), y.reshape(4, 6)
    reference = np.mean(slices[0] * (slices[0] @ W - slices[1])[..., None], axis=1)
    np.testing.assert_allclose(float(sq_small), np.mean(np.sum(reference**2, -1)), rtol=1e-5)
    np.testing.assert_allclose(float(sq_big), np.sum(reference.mean(0) ** 2), rtol=1e-5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="batch_small < batch_big"):
        noise_scale.unbiased_estimates(1.0, 1.0, 8, 8)
    with pytest.raises(ValueError, match="at least 2 micro-batch"):
        noise_scale.gradient_sq_norms([[tf.ones(3)]])
    with pytest.raises(ValueError, match="num_microbatches=5"):
        noise_scale.microbatch_gradients(None, [], tf.ones((12, 2)), tf.ones(12), 5)
    with pytest.raises(ValueError, match="decay"):
        noise_scale.NoiseScaleTracker(decay=1.0)
