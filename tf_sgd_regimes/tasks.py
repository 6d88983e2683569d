"""Losses and metrics per task: classification, language model, autoencoder.

Training losses are per-example vectors so the engine can scale them by the *global*
batch (gradients are summed across replicas). Evaluation accumulates sums over the whole
split and turns them into metrics at the end, so the result does not depend on the
evaluation batch size or the number of replicas.

Scales. A language model's training objective is per window (the token cross-entropy
summed over the T unrolled steps, as Zaremba et al. 2014), so everything compared with the
objective during training is on that scale: the gradient clip, `train.divergence_loss`
and the chunk losses the progress line prints. Its evaluation metrics (`*_loss`,
`*_perplexity`) stay per token; `objective_units` converts between the two.
"""

import math

import tensorflow as tf

# The metric each task selects on by default, and whether higher is better.
SELECTION = {
    "classification": ("test_accuracy", "max"),
    "language_model": ("test_perplexity", "min"),
    "autoencoder": ("test_mse", "min"),
}
# Sums accumulated during evaluation, in this order.
SUM_NAMES = ("loss", "correct", "count")


def metric_names(task: str, split: str = "test") -> list:
    """Names of the metrics an evaluation of `task` produces (see metrics_from_sums)."""
    second = {"classification": "accuracy", "language_model": "perplexity",
              "autoencoder": "mse"}[task]
    return [f"{split}_loss", f"{split}_{second}", "train_loss", f"train_{second}"]


def objective_units(task: str, input_shape) -> int:
    """How many metric units one example's training loss holds: T tokens for a language
    model (its training loss sums T per-token losses), 1 for every other task."""
    if task == "language_model":
        return int(input_shape[-1])
    return 1


def per_token_objective(task: str, data_loss: float, penalty: float, input_shape) -> float:
    """The training objective (data loss + L2 penalty) in the units of the data-loss
    metric: per token for a language model (the penalty divided by T), else per example."""
    return float(data_loss) + float(penalty) / objective_units(task, input_shape)


def per_example_loss(task: str, outputs, targets, inputs):
    """Training loss per example, shape [batch].

    classification: softmax cross-entropy of logits [B, C] vs int labels [B].
    language_model: token cross-entropy SUMMED over the T unrolled steps, logits [B, T, V].
      Zaremba et al. (2014), whose setup the paper follows, sum the cross-entropy over the
      unrolled steps and average over the batch (their main.lua back-propagates a unit
      error from every time step through a batch-averaged ClassNLLCriterion); their lr 1
      at batch 20 and clip at 5 are on that scale, and so are the paper's table 6 rates.
      The per-token loss and perplexity are evaluation metrics (eval_sums counts tokens).
    autoencoder: squared error summed over the D outputs (the paper's MSE values of 2-3
      on MNIST are per-example sums over 784 pixels, not per-pixel means).
    """
    outputs = tf.cast(outputs, tf.float32)
    if task == "classification":
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(targets, tf.int32), logits=outputs)
    if task == "language_model":
        token_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(targets, tf.int32), logits=outputs)
        return tf.reduce_sum(token_loss, axis=-1)
    if task == "autoencoder":
        reference = tf.reshape(tf.cast(inputs, tf.float32), tf.shape(outputs))
        return tf.reduce_sum(tf.square(outputs - reference), axis=-1)
    raise ValueError(f"unknown task {task!r}")


def eval_sums(task: str, outputs, targets, inputs, weights):
    """Weighted sums over a batch: [loss_sum, correct_sum, count] (float32 [3]).

    `weights` is 1 for real examples and 0 for padding added to fill the last batch.
    For a language model `count` is in tokens, so loss/count is the per-token loss, and
    `weights` may be per token ([B, T], as data.streams.eval_windows yields: the stream's
    last window is partly padding) or per window ([B]).
    """
    weights = tf.cast(weights, tf.float32)
    outputs = tf.cast(outputs, tf.float32)
    if task == "language_model":
        token_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(targets, tf.int32), logits=outputs)
        if weights.shape.rank == 1:
            weights = tf.broadcast_to(weights[:, None], tf.shape(token_loss))
        loss_sum = tf.reduce_sum(token_loss * weights)
        return tf.stack([loss_sum, 0.0, tf.reduce_sum(weights)])
    loss = per_example_loss(task, outputs, targets, inputs)
    if task == "classification":
        predicted = tf.argmax(outputs, axis=-1, output_type=tf.int32)
        correct = tf.cast(tf.equal(predicted, tf.cast(targets, tf.int32)), tf.float32)
    else:
        correct = tf.zeros_like(loss)
    return tf.stack([tf.reduce_sum(loss * weights), tf.reduce_sum(correct * weights),
                     tf.reduce_sum(weights)])


def metrics_from_sums(task: str, sums, prefix: str) -> dict:
    """Turns [loss_sum, correct_sum, count] into named metrics, e.g. test_accuracy."""
    loss_sum, correct_sum, count = (float(v) for v in sums)
    if count <= 0:
        raise ValueError(f"no {prefix} examples to evaluate")
    loss = loss_sum / count
    if task == "classification":
        return {f"{prefix}_loss": loss, f"{prefix}_accuracy": correct_sum / count}
    if task == "language_model":
        perplexity = math.exp(loss) if loss < 700 else float("inf")
        return {f"{prefix}_loss": loss, f"{prefix}_perplexity": perplexity}
    return {f"{prefix}_loss": loss, f"{prefix}_mse": loss}
