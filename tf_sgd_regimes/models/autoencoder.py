"""Deep fully connected autoencoder (Hinton & Salakhutdinov 2006; Sutskever et al. 2013).

The paper's MNIST model is 784-1000-500-250-30-250-500-1000-784: `widths` gives the encoder
(1000, 500, 250, 30) and the decoder mirrors it. As in the original work, hidden units are
logistic except the 30-unit code layer, which is linear, and the output is logistic, so
`model(x)` returns reconstructions in (0, 1) of the flattened input, shape [B, D].

Initialisation follows Sutskever et al. (2013), who used the sparse initialisation of Martens
(2010): each unit has `sparse_connections` (15) non-zero incoming weights drawn from N(0, 1);
biases start at 0. `init="glorot_uniform"` is the dense alternative.

Loss for the engine: the reported reconstruction error is the squared error SUMMED over the
784 pixels of an example, then averaged over examples. Hinton & Salakhutdinov's "average
squared reconstruction error per image" of about 3 on MNIST, and the paper's tables of
values near 2-3, are on this scale; the mean over pixels would be 784 times smaller.
"""

from typing import Sequence

import keras
import numpy as np

from tf_sgd_regimes.models import layers as model_layers

TINY = dict(input_shape=(12,), num_outputs=12, fields=dict(widths=(6, 2)))


class SparseInitializer(keras.initializers.Initializer):
    """Martens (2010): each output unit gets `connections` N(0, 1) inputs, the rest are 0."""

    def __init__(self, connections: int = 15, seed: int = 0):
        self.connections = int(connections)
        self.seed = int(seed)

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = shape
        rng = np.random.default_rng(self.seed)
        kernel = np.zeros((fan_in, fan_out), np.float32)
        chosen = min(self.connections, fan_in)
        for unit in range(fan_out):
            rows = rng.choice(fan_in, size=chosen, replace=False)
            kernel[rows, unit] = rng.standard_normal(chosen)
        return keras.ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {"connections": self.connections, "seed": self.seed}


def _initializer(init: str, connections: int, seed: int):
    if init == "sparse":
        return SparseInitializer(connections, seed=seed)
    if init == "glorot_uniform":
        return keras.initializers.GlorotUniform(seed=seed)
    raise ValueError(
        f"unknown init {init!r} (config.model.init); known: ['glorot_uniform', 'sparse']"
    )


def build(
    input_shape: tuple,
    num_outputs: int,
    *,
    seed: int,
    widths: Sequence[int] = (1000, 500, 250, 30),
    activation: str = "sigmoid",
    code_activation: str = "linear",
    output_activation: str = "sigmoid",
    init: str = "sparse",
    sparse_connections: int = 15,
) -> keras.Model:
    """The autoencoder; returns reconstructions [B, D] with D = prod(input_shape).

    Args:
      input_shape: shape of one example, flattened first ((784,) or (28, 28, 1)).
      num_outputs: must equal D (the reconstruction size).
      seed: initialisation seed.
      widths: encoder widths, the last being the code; the decoder mirrors them.
      activation, code_activation, output_activation: hidden, code and output units.
      init: "sparse" (Martens 2010, as Sutskever et al.) or "glorot_uniform".
      sparse_connections: non-zero incoming weights per unit for the sparse init.
    """
    size = int(np.prod(input_shape))
    if int(num_outputs) != size:
        raise ValueError(
            f"an autoencoder reconstructs its input: num_outputs ({num_outputs}) must equal "
            f"the flattened input size ({size})"
        )
    if len(widths) == 0:
        raise ValueError("config.model.widths needs at least the code width")
    seeds = model_layers.SeedSequence(seed)
    layer_widths = list(widths) + list(reversed(widths[:-1])) + [size]
    code_index = len(widths) - 1
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Flatten()(inputs)
    for index, width in enumerate(layer_widths):
        if index == code_index:
            act, name = code_activation, "code"
        elif index == len(layer_widths) - 1:
            act, name = output_activation, "reconstruction"
        else:
            act, name = activation, f"dense_{index}"
        x = keras.layers.Dense(
            width,
            activation=act,
            kernel_initializer=_initializer(init, sparse_connections, next(seeds)),
            name=name,
        )(x)
    return keras.Model(inputs, x, name="autoencoder")


def parameter_count(widths=(1000, 500, 250, 30), size: int = 784) -> int:
    """Trainable parameters: dense kernels and biases of the mirrored stack."""
    layer_widths = [size] + list(widths) + list(reversed(widths[:-1])) + [size]
    return sum(a * b + b for a, b in zip(layer_widths[:-1], layer_widths[1:]))
