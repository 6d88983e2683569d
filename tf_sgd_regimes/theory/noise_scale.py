"""The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, appendix A).

With per-example gradient covariance Sigma and full gradient G, a minibatch mean gradient of
size B has E|G_B|^2 = |G|^2 + tr(Sigma) / B. Squared norms measured at two batch sizes
B_small < B_big therefore give unbiased estimates of both pieces:

    |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1 / B_small - 1 / B_big)

One draw of either is noisy (and |G|^2 can come out negative), so, as in the paper, each is
smoothed by its own exponential moving average and B_simple is the ratio of the two averages
(not the average of ratios, which is biased). The averages start at the first value; that is
what zero-started averages with bias correction give too, and it leaves the ratio unchanged.

The estimator functions use plain arithmetic, so they take floats, numpy arrays or TF tensors.
On one device the big batch is accumulated: K micro-batches of size B_small give
|G_small|^2 = mean_k |g_k|^2 and G_big = mean_k g_k with B_big = K * B_small.
"""

import tensorflow as tf


def _check_batches(batch_small, batch_big):
    if not 0 < batch_small < batch_big:
        raise ValueError(
            f"need 0 < batch_small < batch_big, got batch_small={batch_small}, "
            f"batch_big={batch_big}; accumulate at least 2 micro-batches for the big batch"
        )


def unbiased_estimates(sq_norm_small, sq_norm_big, batch_small, batch_big):
    """Unbiased (|G|^2, tr(Sigma)) from squared gradient norms at two batch sizes.

    Args:
      sq_norm_small: |G_small|^2, squared norm of a mean gradient over batch_small examples
        (or the mean of several such squared norms).
      sq_norm_big: |G_big|^2 at batch_big > batch_small.
    Returns:
      (grad_sq, trace_sigma): estimates of |G|^2 and of tr(Sigma) per example.
    """
    _check_batches(batch_small, batch_big)
    grad_sq = (batch_big * sq_norm_big - batch_small * sq_norm_small) / (batch_big - batch_small)
    trace_sigma = (sq_norm_small - sq_norm_big) / (1.0 / batch_small - 1.0 / batch_big)
    return grad_sq, trace_sigma


def ema_update(average, value, decay: float):
    """decay * average + (1 - decay) * value; the first value (average None) starts it."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
    if average is None:
        return value
    return decay * average + (1.0 - decay) * value


class NoiseScaleTracker:
    """Running B_simple: separate EMAs of |G|^2 and tr(Sigma), and their ratio."""

    def __init__(self, decay: float = 0.99):
        ema_update(None, 0.0, decay)  # validates decay
        self.decay = decay
        self.grad_sq = None
        self.trace_sigma = None

    def update(self, sq_norm_small, sq_norm_big, batch_small, batch_big) -> float:
        """Adds one measurement; returns the current B_simple."""
        grad_sq, trace_sigma = unbiased_estimates(
            float(sq_norm_small), float(sq_norm_big), batch_small, batch_big
        )
        self.grad_sq = ema_update(self.grad_sq, grad_sq, self.decay)
        self.trace_sigma = ema_update(self.trace_sigma, trace_sigma, self.decay)
        return self.b_simple

    @property
    def b_simple(self):
        """tr(Sigma) / |G|^2 from the averages; None before any update or if |G|^2 <= 0."""
        if self.grad_sq is None or self.grad_sq <= 0.0:
            return None
        return self.trace_sigma / self.grad_sq


def _sq_norm(tensors):
    return tf.add_n([tf.reduce_sum(tf.square(tf.convert_to_tensor(t))) for t in tensors])


def gradient_sq_norms(per_microbatch_grads):
    """Squared norms for the estimator from K micro-batch gradients.

    Args:
      per_microbatch_grads: list of K >= 2 gradients, each a list of tensors (one per
        variable), each the mean gradient over B_small examples.
    Returns:
      (sq_norm_small, sq_norm_big) as float32 scalars: the mean over micro-batches of |g_k|^2,
      and |mean_k g_k|^2, the squared norm of the accumulated gradient at B_big = K * B_small.
    """
    count = len(per_microbatch_grads)
    if count < 2:
        raise ValueError(f"need at least 2 micro-batch gradients, got {count}")
    sq_norm_small = tf.add_n([_sq_norm(grads) for grads in per_microbatch_grads]) / count
    big = [
        tf.add_n([tf.convert_to_tensor(grads[i]) for grads in per_microbatch_grads]) / count
        for i in range(len(per_microbatch_grads[0]))
    ]
    return tf.cast(sq_norm_small, tf.float32), tf.cast(_sq_norm(big), tf.float32)


def microbatch_gradients(loss_fn, variables, inputs, targets, num_microbatches: int):
    """Mean-loss gradients of `variables` on each of K equal slices of one batch.

    Args:
      loss_fn: (inputs, targets) -> scalar mean loss over the examples given.
      variables: the trainable variables.
      inputs, targets: one batch whose leading size is divisible by num_microbatches.
    Returns:
      list of K gradients (each a list of tensors), ready for gradient_sq_norms.
    """
    size = int(inputs.shape[0])
    if num_microbatches < 2 or size % num_microbatches:
        raise ValueError(
            f"batch of {size} examples cannot be split into num_microbatches="
            f"{num_microbatches} (need >= 2 equal slices)"
        )
    step = size // num_microbatches
    grads = []
    for k in range(num_microbatches):
        with tf.GradientTape() as tape:
            loss = loss_fn(inputs[k * step:(k + 1) * step], targets[k * step:(k + 1) * step])
        grads.append(tape.gradient(loss, variables))
    return grads
