"""Model registry: name -> builder.

Every builder has the signature
    build(input_shape: tuple, num_outputs: int, *, seed: int, **config.model fields) -> keras.Model
and returns a built model whose call(x, training=...) gives logits [B, C] (classification),
logits [B, T, V] (language_model) or reconstructions [B, D] (autoencoder). The seed fixes the
initialisation, so packed members with different seeds start from different weights.
"""

from tf_sgd_regimes.models import mlp

_MODELS = {
    "mlp": mlp.build,
}


def names():
    return sorted(_MODELS)


def get_model(name: str, input_shape: tuple, num_outputs: int, seed: int, **kwargs):
    """Builds a registered model; unknown names list the known ones."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r} (config.model.name); known: {names()}")
    return _MODELS[name](input_shape, num_outputs, seed=seed, **kwargs)
