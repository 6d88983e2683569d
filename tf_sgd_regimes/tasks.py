"""Losses and metrics per task: classification, language model, autoencoder, regression,
and tasks a user brings (a per-example loss plus metrics: `Task`, `register_task`).

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

import dataclasses
import math
from typing import Callable, Mapping, Optional, Tuple

import tensorflow as tf

from tf_sgd_regimes.experiments import ConfigError, origin  # ConfigError: exit status 2

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
    if task in _REGISTERED:
        return _REGISTERED[task].metric_names(split)
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
    if task in _REGISTERED:
        return _REGISTERED[task].per_example_loss(outputs, targets, inputs)
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
    `weights` may be per token ([B, T], as data.token_windows.eval_windows yields: the stream's
    last window is partly padding) or per window ([B]).
    """
    if task in _REGISTERED:
        return _REGISTERED[task].eval_sums(outputs, targets, inputs, weights)
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
    if task in _REGISTERED:
        return _REGISTERED[task].metrics_from_sums(sums, prefix)
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


# --- tasks defined by a per-example loss (regression, and the ones users bring) ---------
BUILTIN = tuple(SELECTION)


@dataclasses.dataclass(frozen=True)
class Task:
    """A task given by its per-example loss, for models and data the built-ins do not cover.

    Evaluation accumulates two weighted sums per example (the loss and `statistic`) plus
    the count, as the built-in tasks do, so a Task runs in the same compiled step on any
    number of replicas. Every metric is a function of the two split means.

    Attributes:
      name: the task's name (what Dataset.task and register_model(task=...) hold).
      loss: (outputs, targets, inputs) -> per-example loss [B], TensorFlow ops only (it is
        traced into the packed step). The training objective is its batch mean.
      metrics: metric name -> f(mean_loss, mean_statistic) -> float; "loss" is always
        reported as the mean loss. E.g. {"rmse": lambda loss, _: math.sqrt(loss)}.
      statistic: optional (outputs, targets, inputs) -> per-example value [B] averaged
        over the split (e.g. correctness for an accuracy, an absolute error).
      selection: (metric name without split prefix, "min" or "max"): what the analysis
        selects learning rates on by default.
    """

    name: str
    loss: Callable
    metrics: Mapping[str, Callable[[float, float], float]] = dataclasses.field(
        default_factory=dict)
    statistic: Optional[Callable] = None
    selection: Tuple[str, str] = ("loss", "min")

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"a Task needs a name, got {self.name!r}")
        if self.name in BUILTIN:
            raise ConfigError(f"task name {self.name!r} is built in; pick another name")
        if not callable(self.loss):
            raise ConfigError(f"task {self.name!r}: loss must be a function "
                             "(outputs, targets, inputs) -> per-example loss [B]")
        metric, mode = self.selection
        if metric not in self.short_names():
            raise ConfigError(f"task {self.name!r}: selection metric {metric!r} is not one of "
                             f"its metrics {self.short_names()}")
        if mode not in ("min", "max"):
            raise ConfigError(f"task {self.name!r}: selection mode {mode!r}: use 'min' or 'max'")

    def short_names(self) -> list:
        return ["loss"] + [m for m in self.metrics if m != "loss"]

    def metric_names(self, split: str = "test") -> list:
        return ([f"{split}_{m}" for m in self.short_names()]
                + [f"train_{m}" for m in self.short_names()])

    def per_example_loss(self, outputs, targets, inputs):
        return tf.cast(self.loss(tf.cast(outputs, tf.float32), targets, inputs), tf.float32)

    def eval_sums(self, outputs, targets, inputs, weights):
        weights = tf.cast(weights, tf.float32)
        loss = self.per_example_loss(outputs, targets, inputs)
        if self.statistic is not None:
            stat = tf.cast(self.statistic(tf.cast(outputs, tf.float32), targets, inputs),
                           tf.float32)
        else:
            stat = tf.zeros_like(loss)
        return tf.stack([tf.reduce_sum(loss * weights), tf.reduce_sum(stat * weights),
                         tf.reduce_sum(weights)])

    def metrics_from_sums(self, sums, prefix: str) -> dict:
        loss_sum, stat_sum, count = (float(v) for v in sums)
        if count <= 0:
            raise ValueError(f"no {prefix} examples to evaluate")
        loss, stat = loss_sum / count, stat_sum / count
        out = {f"{prefix}_loss": loss}
        for name, fn in self.metrics.items():
            if name != "loss":
                value = float(fn(loss, stat)) if math.isfinite(loss) else float("nan")
                out[f"{prefix}_{name}"] = value
        return out


def _regression_error(outputs, targets):
    # Targets [B] or [B, D] against outputs [B, D] (a scalar regression's model has 1 unit).
    return outputs - tf.reshape(tf.cast(targets, tf.float32), tf.shape(outputs))


def _squared_error(outputs, targets, inputs):
    error = _regression_error(outputs, targets)
    return tf.reduce_sum(tf.reshape(tf.square(error), [tf.shape(error)[0], -1]), axis=-1)


def _absolute_error(outputs, targets, inputs):
    error = _regression_error(outputs, targets)
    return tf.reduce_sum(tf.reshape(tf.abs(error), [tf.shape(error)[0], -1]), axis=-1)


# Regression: squared error summed over the D outputs (the standard MSE when D = 1).
REGRESSION = Task(
    name="regression", loss=_squared_error, statistic=_absolute_error,
    metrics={"mse": lambda loss, stat: loss,
             "rmse": lambda loss, stat: math.sqrt(max(loss, 0.0)),
             "mae": lambda loss, stat: stat},
    selection=("mse", "min"))

_REGISTERED = {"regression": REGRESSION}


def register_task(task: Task, replace: bool = False) -> str:
    """Adds a Task under its name; returns the name.

    Registering it again from the same code (a re-run notebook cell or file) replaces it;
    another task under a taken name needs replace=True.
    """
    if not isinstance(task, Task):
        raise TypeError(f"register_task takes a tasks.Task, got {type(task).__name__}")
    old = _REGISTERED.get(task.name)
    if old is not None and old != task and origin(old.loss) != origin(task.loss) \
            and not replace:
        raise ConfigError(f"task {task.name!r} is already registered with another loss "
                         f"({origin(old.loss)}); pick another name or pass replace=True")
    _REGISTERED[task.name] = task
    return task.name



def names() -> list:
    """Every task name: the built-ins and the registered ones."""
    return sorted(set(BUILTIN) | set(_REGISTERED))


def resolve(task) -> str:
    """A task name from a name or a Task (registered on the way); unknown names list the
    known ones."""
    if isinstance(task, Task):
        return register_task(task)
    if task not in BUILTIN and task not in _REGISTERED:
        raise ConfigError(f"unknown task {task!r}; known: {names()} (or pass a "
                         "tf_sgd_regimes.Task with a per-example loss)")
    return task


def selection(task: str, split: str = "test") -> Tuple[str, str]:
    """(metric, "min"|"max") the analysis selects on by default for `task`."""
    if task in _REGISTERED:
        metric, mode = _REGISTERED[task].selection
        return f"{split}_{metric}", mode
    metric, mode = SELECTION[task]
    return metric.replace("test_", f"{split}_", 1), mode
