"""Model registry: name -> one record (builder, task, tiny test configuration).

Every builder has the signature
    build(input_shape: tuple, num_outputs: int, *, seed: int, **config.model fields) -> keras.Model
and returns a built model whose call(x, training=...) gives logits [B, C] (classification),
logits [B, T, V] (language_model), reconstructions [B, D] (autoencoder), predictions
[B, D] (regression) or whatever a registered tasks.Task's loss takes. The seed fixes the
initialisation, so packed members with different seeds start from different weights.
`regularization.regularized_weights(model, scope)` says which weights the L2 term covers.

Adding a model is one call, here or in your own file (tests iterate the registry):
    register_model("my_mlp", build, task="regression",
                   tiny_config=dict(input_shape=(3,), num_outputs=1, fields={}))
"""

import collections.abc
import copy
import dataclasses
import inspect
from typing import Callable, Optional

from tf_sgd_regimes.experiments import ConfigError, origin  # ConfigError: exit status 2
from tf_sgd_regimes.models import autoencoder
from tf_sgd_regimes.models import lstm_lm
from tf_sgd_regimes.models import mlp
from tf_sgd_regimes.models import regularization
from tf_sgd_regimes.models import resnet
from tf_sgd_regimes.models import small
from tf_sgd_regimes.models import wide_resnet


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """Everything the package knows about one model, in one place.

    Attributes:
      build: the builder (signature above).
      task: the task name its outputs are meant for (tasks.names()).
      tiny_config: dict(input_shape=..., num_outputs=..., fields={...}) building it in
        milliseconds, for tests that iterate the registry; None skips those tests.
    """

    build: Callable
    task: str
    tiny_config: Optional[dict] = None


_MODELS = {}


def register_model(name: str, build_fn: Callable, task="classification",
                   tiny_config: Optional[dict] = None, replace: bool = False) -> str:
    """Registers a model builder under `name`; returns the name.

    Args:
      name: what config.model.name refers to.
      build_fn: build(input_shape, num_outputs, *, seed, **fields) -> built keras.Model.
      task: a task name ("classification", "language_model", "autoencoder",
        "regression", or a registered one) or a tasks.Task (registered on the way).
      tiny_config: dict(input_shape, num_outputs, fields) for the registry's tests.
      replace: allow redefining an existing name (re-running a notebook cell that
        registers the same builder again is always fine).
    """
    from tf_sgd_regimes import tasks  # loads TensorFlow; the registry's users have it

    if not isinstance(name, str) or not name:
        raise ConfigError(f"register_model: name must be a non-empty string, got {name!r}")
    if not callable(build_fn):
        raise ConfigError(f"register_model({name!r}): build_fn must be callable")
    try:
        parameters = inspect.signature(build_fn).parameters
    except (TypeError, ValueError):
        parameters = {}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    if parameters and "seed" not in parameters and not takes_any:
        raise ConfigError(
            f"register_model({name!r}): build_fn must take a `seed` keyword (each packed "
            "member is built with its own seed so members start from different weights): "
            "def build(input_shape, num_outputs, *, seed, **fields)")
    task = tasks.resolve(task)
    if tiny_config is not None:
        missing = {"input_shape", "num_outputs"} - set(tiny_config)
        if missing:
            raise ConfigError(f"register_model({name!r}): tiny_config lacks {sorted(missing)}")
        tiny_config = {"fields": {}, **tiny_config}
    record = ModelRecord(build_fn, task, tiny_config)
    old = _MODELS.get(name)
    # Re-running the cell or file that registered it is fine; a clash of two is not.
    if old is not None and origin(old.build) != origin(build_fn) and not replace:
        raise ConfigError(f"model {name!r} is already registered with another builder "
                         f"({origin(old.build)}); pick another name or pass replace=True")
    _MODELS[name] = record
    return name



# The package's models: one line each.
register_model("autoencoder", autoencoder.build, "autoencoder", autoencoder.TINY)
register_model("lstm_lm", lstm_lm.build, "language_model", lstm_lm.TINY)
register_model("mlp", mlp.build, "classification",
               dict(input_shape=(8,), num_outputs=3, fields=dict(hidden=(5,))))
register_model("resnet50", resnet.build, "classification", resnet.TINY)
register_model("small_autoencoder", small.build_autoencoder, "autoencoder",
               small.TINY_AUTOENCODER)
register_model("small_cnn", small.build_cnn, "classification", small.TINY_CNN)
register_model("small_lstm_lm", small.build_lstm_lm, "language_model", small.TINY_LSTM)
register_model("small_wrn", small.build_wrn, "classification", small.TINY_WRN)
register_model("wide_resnet", wide_resnet.build, "classification", wide_resnet.TINY)

regularized_weights = regularization.regularized_weights


def names(with_tiny: bool = False):
    """Registered model names (only those with a tiny configuration if with_tiny)."""
    return sorted(n for n, r in _MODELS.items() if not with_tiny or r.tiny_config is not None)


def record(name: str) -> ModelRecord:
    _check(name)
    return _MODELS[name]


def task_of(name: str) -> str:
    return record(name).task


class _TaskView(collections.abc.Mapping):
    """name -> task, read from the records (for code written against the old TASKS dict)."""

    def __getitem__(self, name):
        return _MODELS[name].task

    def __iter__(self):
        return iter(sorted(_MODELS))

    def __len__(self):
        return len(_MODELS)


TASKS = _TaskView()


def _check(name):
    if name not in _MODELS:
        raise ConfigError(
            f"unknown model {name!r} (config.model.name); known: {names()}. Register your "
            "own with tf_sgd_regimes.register_model(name, build_fn, task=...)")


def get_model(name: str, input_shape: tuple, num_outputs: int, seed: int, **kwargs):
    """Builds a registered model; unknown names list the known ones."""
    return record(name).build(input_shape, num_outputs, seed=seed, **kwargs)


def tiny_config(name: str) -> dict:
    """A tiny configuration of a registered model: input_shape, num_outputs, fields."""
    tiny = record(name).tiny_config
    if tiny is None:
        raise ValueError(f"model {name!r} was registered without a tiny_config")
    return copy.deepcopy(tiny)


def check_outputs(name: str, fields: dict, dataset) -> None:
    """Builds a model registered from outside the package once and evaluates its task's
    per-example loss on two training examples, so that outputs that do not fit the targets
    (a wrong num_outputs, a regression model with several outputs for one target, a loss
    that does not return one value per example) are a ConfigError before any compute,
    not a sweep of failed cells. The package's own models are covered by their tests.
    """
    build = record(name).build
    if getattr(build, "__module__", "").startswith("tf_sgd_regimes."):
        return
    if getattr(dataset, "ordering", "shuffle") != "shuffle" or not hasattr(dataset, "train_x"):
        return  # token streams and tf.data streams: checked by the first training step
    import numpy as np
    import tensorflow as tf

    from tf_sgd_regimes import tasks

    x = dataset.train_x[:2]
    y = None if dataset.train_y is None else dataset.train_y[:2]
    where = (f"model {name!r} on data set {dataset.name!r} (task {dataset.task!r}, "
             f"num_outputs={dataset.num_outputs})")
    try:
        model = build(dataset.input_shape, dataset.num_outputs, seed=0, **fields)
    except Exception as e:  # the user's code: any error, reported with its type
        raise ConfigError(f"{where}: building it failed ({type(e).__name__}: {e})") from e
    outputs = None
    try:
        outputs = model(tf.constant(x), training=False)
        loss = tasks.per_example_loss(dataset.task, outputs, y, tf.constant(x))
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:
        shape = None if outputs is None else outputs.shape
        raise ConfigError(
            f"{where}: its outputs{'' if shape is None else f' {tuple(shape)}'} do not fit "
            f"the targets{'' if y is None else f' {np.shape(y)}'} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Check the builder's output layer "
            "(num_outputs units) and the task") from e
    if tuple(loss.shape) != (2,):
        raise ConfigError(f"{where}: the per-example loss of 2 examples has shape "
                          f"{tuple(loss.shape)}; a task's loss must return one value per "
                          "example, shape [batch]")
