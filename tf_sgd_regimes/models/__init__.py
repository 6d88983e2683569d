"""Model registry: name -> builder.

Every builder has the signature
    build(input_shape: tuple, num_outputs: int, *, seed: int, **config.model fields) -> keras.Model
and returns a built model whose call(x, training=...) gives logits [B, C] (classification),
logits [B, T, V] (language_model) or reconstructions [B, D] (autoencoder). The seed fixes the
initialisation, so packed members with different seeds start from different weights.
`regularization.regularized_weights(model, scope)` says which weights the L2 term covers.
"""

import copy

from tf_sgd_regimes.models import autoencoder
from tf_sgd_regimes.models import lstm_lm
from tf_sgd_regimes.models import mlp
from tf_sgd_regimes.models import regularization
from tf_sgd_regimes.models import resnet
from tf_sgd_regimes.models import small
from tf_sgd_regimes.models import wide_resnet

_MODELS = {
    "autoencoder": autoencoder.build,
    "lstm_lm": lstm_lm.build,
    "mlp": mlp.build,
    "resnet50": resnet.build,
    "small_autoencoder": small.build_autoencoder,
    "small_cnn": small.build_cnn,
    "small_lstm_lm": small.build_lstm_lm,
    "small_wrn": small.build_wrn,
    "wide_resnet": wide_resnet.build,
}

# Tiny configurations (input_shape, num_outputs, fields) for the registry test.
_TINY = {
    "autoencoder": autoencoder.TINY,
    "lstm_lm": lstm_lm.TINY,
    "mlp": dict(input_shape=(8,), num_outputs=3, fields=dict(hidden=(5,))),
    "resnet50": resnet.TINY,
    "small_autoencoder": small.TINY_AUTOENCODER,
    "small_cnn": small.TINY_CNN,
    "small_lstm_lm": small.TINY_LSTM,
    "small_wrn": small.TINY_WRN,
    "wide_resnet": wide_resnet.TINY,
}

# What each model's call returns, so callers pick the matching loss.
TASKS = {
    "autoencoder": "autoencoder",
    "lstm_lm": "language_model",
    "mlp": "classification",
    "resnet50": "classification",
    "small_autoencoder": "autoencoder",
    "small_cnn": "classification",
    "small_lstm_lm": "language_model",
    "small_wrn": "classification",
    "wide_resnet": "classification",
}

regularized_weights = regularization.regularized_weights


def names():
    return sorted(_MODELS)


def _check(name):
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r} (config.model.name); known: {names()}")


def get_model(name: str, input_shape: tuple, num_outputs: int, seed: int, **kwargs):
    """Builds a registered model; unknown names list the known ones."""
    _check(name)
    return _MODELS[name](input_shape, num_outputs, seed=seed, **kwargs)


def tiny_config(name: str) -> dict:
    """A tiny configuration of a registered model: input_shape, num_outputs, fields."""
    _check(name)
    return copy.deepcopy(_TINY[name])
