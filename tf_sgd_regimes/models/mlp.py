"""Fully connected classifier: the embedded demo's model."""

from typing import Sequence

import keras


def build(
    input_shape: tuple,
    num_outputs: int,
    hidden: Sequence[int] = (128, 128),
    activation: str = "relu",
    seed: int = 0,
) -> keras.Model:
    """An MLP with He-normal kernels and zero biases; returns logits.

    Args:
      input_shape: shape of one example; flattened first.
      num_outputs: number of classes.
      hidden: widths of the hidden layers.
      activation: hidden activation.
      seed: initialisation seed (each packed member passes its own).
    """
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    for i, width in enumerate(hidden):
        x = keras.layers.Dense(
            width,
            activation=activation,
            kernel_initializer=keras.initializers.HeNormal(seed=seed * 1000 + i),
            name=f"dense_{i}",
        )(x)
    outputs = keras.layers.Dense(
        num_outputs,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000 + len(hidden)),
        name="logits",
    )(x)
    return keras.Model(inputs, outputs, name="mlp")
