"""Small models that train on CPU in seconds: a digits CNN and small presets of each family."""

import keras

from tf_sgd_regimes.models import autoencoder
from tf_sgd_regimes.models import layers as model_layers
from tf_sgd_regimes.models import lstm_lm
from tf_sgd_regimes.models import wide_resnet

TINY_CNN = dict(input_shape=(8, 8, 1), num_outputs=10, fields=dict(filters=(4, 8)))
TINY_WRN = dict(input_shape=(8, 8, 1), num_outputs=10, fields=dict(normalization="skipinit"))
TINY_LSTM = dict(input_shape=(6,), num_outputs=16, fields=dict(units=8, batch_size=4))
TINY_AUTOENCODER = dict(input_shape=(8, 8, 1), num_outputs=64, fields=dict(widths=(16, 4)))


def build_cnn(
    input_shape: tuple,
    num_outputs: int,
    *,
    seed: int,
    filters=(32, 64),
) -> keras.Model:
    """Two 3x3 ReLU convs (the second with stride 2), global average pooling, dense logits.

    Args:
      input_shape: (H, W, C), (8, 8, 1) for scikit-learn's digits.
      num_outputs: number of classes.
      seed: initialisation seed.
      filters: channels of the two convolutions.
    """
    seeds = model_layers.SeedSequence(seed)
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    for index, (channels, stride) in enumerate(zip(filters, (1, 2))):
        x = keras.layers.Conv2D(
            channels, 3, strides=stride, padding="same", activation="relu",
            kernel_initializer=keras.initializers.HeNormal(seed=next(seeds)),
            name=f"conv_{index}",
        )(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        num_outputs,
        kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)),
        name="logits",
    )(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def build_wrn(input_shape: tuple, num_outputs: int, *, seed: int, **fields) -> keras.Model:
    """WRN-10-1 (about 78k parameters) for 8x8 images; fields override wide_resnet.build's."""
    fields = {"depth": 10, "width": 1, **fields}
    return wide_resnet.build(input_shape, num_outputs, seed=seed, **fields)


def build_lstm_lm(input_shape: tuple, num_outputs: int, *, seed: int, **fields):
    """One 64-unit LSTM layer for a small synthetic vocabulary (set batch_size as for lstm_lm)."""
    fields = {"embedding_size": 64, "units": 64, "num_layers": 1, "dropout_rate": 0.0, **fields}
    return lstm_lm.build(input_shape, num_outputs, seed=seed, **fields)


def build_autoencoder(input_shape: tuple, num_outputs: int, *, seed: int, **fields):
    """64-32-8-32-64 autoencoder for flattened 8x8 digits (same units and init as the big one)."""
    fields = {"widths": (32, 8), **fields}
    return autoencoder.build(input_shape, num_outputs, seed=seed, **fields)
