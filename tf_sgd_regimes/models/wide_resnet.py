"""Pre-activation Wide-ResNet d-k for small images, with ghost batch norm or (Regularized) SkipInit.

Architecture (Zagoruyko & Komodakis 2016): a 3x3 stem conv of 16 channels, then three groups
of n = (d - 4) / 6 residual blocks with 16k, 32k and 64k channels (strides 1, 2, 2), then
norm-ReLU, global average pooling and a dense classifier. A block is
norm-ReLU-conv3x3(stride)-norm-ReLU-conv3x3; when the shape changes the shortcut is a 1x1
conv fed by the same pre-activation (as in the authors' code). Convolutions have no bias
under batch norm. WRN-16-4 has 2.75M parameters and WRN-28-10 36.5M for 10 classes.

normalization="batch_norm": GhostBatchNormalization, statistics over groups of
`ghost_batch_size` examples (64 in the paper).

normalization="skipinit" (De & Smith 2020): no normalization; the output of every residual
branch is multiplied by a learnable scalar initialised to 0, so each block starts as its
shortcut path (the identity for same-shape blocks). "Regularized SkipInit", which the paper
uses for every run without batch norm, is what this module builds by default for skipinit:
  * biases: every convolution gets a per-channel bias (initialised to 0), standing in for
    the batch-norm shifts that were removed (`conv_biases`);
  * dropout before the final dense layer (`dropout_rate`, default 0.2);
  * with the engine's L2 scope "all", the SkipInit scalars and biases are under the L2 term.
The appendix names Regularized SkipInit (citing De & Smith 2020: SkipInit plus biases and
dropout on the classifier's input) without its details; the bias placement (per-channel,
not Fixup-style scalars), the drop rate 0.2 and the L2 on the scalars and biases are OUR
CHOICES, not verified against De & Smith's text; all three are config fields, and the
fidelity cards (configs/wrn_cifar.py) list them as such.
"""

from typing import Optional

import keras

from tf_sgd_regimes.models import layers as model_layers

# Tiny configuration for the registry test: builds and steps in well under a second.
TINY = dict(input_shape=(8, 8, 3), num_outputs=10, fields=dict(depth=10, width=1))


def _conv(filters, kernel_size, stride, use_bias, seeds, name):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=keras.initializers.HeNormal(seed=next(seeds)),
        name=name,
    )


class _Builder:
    """Holds the per-model choices so block code reads like the architecture."""

    def __init__(self, normalization, conv_biases, bn_kwargs, seed):
        self.normalization = normalization
        self.conv_biases = conv_biases
        self.bn_kwargs = bn_kwargs
        self.seeds = model_layers.SeedSequence(seed)

    def preactivation(self, x, name):
        norm = model_layers.normalization_or_none(
            self.normalization, f"{name}_bn", **self.bn_kwargs
        )
        if norm is not None:
            x = norm(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x)

    def conv(self, x, filters, kernel_size, stride, name):
        return _conv(filters, kernel_size, stride, self.conv_biases, self.seeds, name)(x)

    def block(self, x, filters, stride, name):
        projection = x.shape[-1] != filters or stride != 1
        pre = self.preactivation(x, f"{name}_pre")
        shortcut = self.conv(pre, filters, 1, stride, f"{name}_shortcut") if projection else x
        h = self.conv(pre, filters, 3, stride, f"{name}_conv1")
        h = self.preactivation(h, f"{name}_mid")
        h = self.conv(h, filters, 3, 1, f"{name}_conv2")
        if self.normalization == "skipinit":
            h = model_layers.SkipInitScale(name=f"{name}_skipinit")(h)
        # The shortcut is the Add's first input: tests read it to check SkipInit's identity.
        return keras.layers.Add(name=f"{name}_add")([shortcut, h])


def build(
    input_shape: tuple,
    num_outputs: int,
    *,
    seed: int,
    depth: int = 16,
    width: int = 4,
    normalization: str = "batch_norm",
    ghost_batch_size: Optional[int] = 64,
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    conv_biases: Optional[bool] = None,
    dropout_rate: Optional[float] = None,
    stem_width: int = 16,
) -> keras.Model:
    """A WRN-depth-width returning logits [B, num_outputs].

    Args:
      input_shape: (H, W, C) of one image, e.g. (32, 32, 3).
      num_outputs: number of classes.
      seed: initialisation (and dropout) seed.
      depth: d, with (d - 4) divisible by 6 (10, 16, 22, 28, 40, ...).
      width: k, the widening factor.
      normalization: "batch_norm" (ghost batch norm) or "skipinit".
      ghost_batch_size: examples per batch-norm statistics group; None = whole batch.
      bn_momentum, bn_epsilon: batch-norm moving-average decay and epsilon.
      conv_biases: per-channel conv biases; None = True for skipinit, False for batch norm.
      dropout_rate: dropout before the classifier; None = 0.2 for skipinit, 0 for batch norm.
      stem_width: channels of the first conv (16 in the paper).
    """
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(
            f"config.model.depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}"
        )
    if width < 1:
        raise ValueError(f"config.model.width must be a positive int, got {width}")
    model_layers.check_normalization(normalization)
    skipinit = normalization == "skipinit"
    conv_biases = skipinit if conv_biases is None else bool(conv_biases)
    dropout_rate = (0.2 if skipinit else 0.0) if dropout_rate is None else float(dropout_rate)
    bn_kwargs = dict(ghost_batch_size=ghost_batch_size, momentum=bn_momentum, epsilon=bn_epsilon)
    builder = _Builder(normalization, conv_biases, bn_kwargs, seed)

    blocks_per_group = (depth - 4) // 6
    inputs = keras.Input(shape=tuple(input_shape))
    x = builder.conv(inputs, stem_width, 3, 1, "stem")
    for group, (channels, stride) in enumerate(zip((16, 32, 64), (1, 2, 2))):
        for index in range(blocks_per_group):
            x = builder.block(
                x, channels * width, stride if index == 0 else 1, f"group{group}_block{index}"
            )
    x = builder.preactivation(x, "final")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout_rate > 0:
        x = model_layers.ReplicaDropout(dropout_rate, seed=next(builder.seeds), name="dropout")(x)
    outputs = keras.layers.Dense(
        num_outputs,
        kernel_initializer=keras.initializers.GlorotUniform(seed=next(builder.seeds)),
        name="logits",
    )(x)
    return keras.Model(inputs, outputs, name=f"wrn_{depth}_{width}_{normalization}")


def parameter_count(depth: int, width: int, num_outputs: int, input_channels: int = 3,
                    normalization: str = "batch_norm", stem_width: int = 16) -> int:
    """Trainable parameters of `build(...)`, counted from layer shapes without allocating."""
    skipinit = normalization == "skipinit"

    def conv(cin, cout, k):
        return k * k * cin * cout + (cout if skipinit else 0)

    def norm(c):
        return 0 if skipinit else 2 * c

    total = conv(input_channels, stem_width, 3)
    channels = stem_width
    for group_channels, stride in zip((16, 32, 64), (1, 2, 2)):
        out = group_channels * width
        for index in range((depth - 4) // 6):
            projection = channels != out or (stride != 1 and index == 0)
            total += norm(channels) + conv(channels, out, 3) + norm(out) + conv(out, out, 3)
            total += conv(channels, out, 1) if projection else 0
            total += 1 if skipinit else 0
            channels = out
    return total + norm(channels) + channels * num_outputs + num_outputs
