"""ResNet-50 for ImageNet as trained by Goyal et al. (2017), with optional ghost batch norm.

Bottleneck blocks (1x1, 3x3, 1x1 convs, 4x expansion) in stages of (3, 4, 6, 3) blocks with
64, 128, 256, 512 bottleneck channels. Goyal et al.'s choices kept here:
  * the stride-2 convolution of a downsampling block is the 3x3 one, not the first 1x1;
  * the last batch-norm gamma of every residual block is initialised to 0, so each block
    starts as its shortcut path;
  * convolutions use He initialisation (fan-out), the classifier N(0, 0.01) weights.
25.56M parameters for 1000 classes. Batch-norm statistics are computed over ghost batches of
`ghost_batch_size` examples (None: the whole per-replica batch, as Goyal et al. used 32 per
GPU).
"""

from typing import Optional, Sequence

import keras

from tf_sgd_regimes.models import layers as model_layers

TINY = dict(
    input_shape=(16, 16, 3),
    num_outputs=10,
    fields=dict(stage_blocks=(1, 1, 1, 1), base_width=4),
)


class _Builder:
    def __init__(self, seed, bn_kwargs):
        self.seeds = model_layers.SeedSequence(seed)
        self.bn_kwargs = bn_kwargs

    def conv(self, x, filters, kernel_size, stride, name):
        initializer = keras.initializers.VarianceScaling(
            2.0, mode="fan_out", distribution="truncated_normal", seed=next(self.seeds)
        )
        return keras.layers.Conv2D(
            filters, kernel_size, strides=stride, padding="same", use_bias=False,
            kernel_initializer=initializer, name=name,
        )(x)

    def bn(self, x, name, zero_gamma=False):
        return model_layers.GhostBatchNormalization(
            gamma_initializer="zeros" if zero_gamma else "ones", name=name, **self.bn_kwargs
        )(x)

    def bottleneck(self, x, width, stride, zero_init_last_gamma, name):
        out_channels = 4 * width
        shortcut = x
        if x.shape[-1] != out_channels or stride != 1:
            shortcut = self.conv(x, out_channels, 1, stride, f"{name}_shortcut")
            shortcut = self.bn(shortcut, f"{name}_shortcut_bn")
        h = self.bn(self.conv(x, width, 1, 1, f"{name}_conv1"), f"{name}_bn1")
        h = keras.layers.ReLU()(h)
        h = self.bn(self.conv(h, width, 3, stride, f"{name}_conv2"), f"{name}_bn2")
        h = keras.layers.ReLU()(h)
        h = self.bn(self.conv(h, out_channels, 1, 1, f"{name}_conv3"), f"{name}_bn3",
                    zero_gamma=zero_init_last_gamma)
        h = keras.layers.Add(name=f"{name}_add")([shortcut, h])
        return keras.layers.ReLU(name=f"{name}_out")(h)


def build(
    input_shape: tuple,
    num_outputs: int,
    *,
    seed: int,
    stage_blocks: Sequence[int] = (3, 4, 6, 3),
    base_width: int = 64,
    ghost_batch_size: Optional[int] = None,
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    zero_init_last_gamma: bool = True,
) -> keras.Model:
    """A ResNet (ResNet-50 by default) returning logits [B, num_outputs].

    Args:
      input_shape: (H, W, C), (224, 224, 3) for ImageNet.
      num_outputs: number of classes (1000 for ImageNet).
      seed: initialisation seed.
      stage_blocks: bottleneck blocks per stage; (3, 4, 6, 3) is ResNet-50.
      base_width: bottleneck channels of the first stage (doubled at each stage).
      ghost_batch_size: examples per batch-norm statistics group; None = whole batch.
      bn_momentum, bn_epsilon: batch-norm moving-average decay and epsilon.
      zero_init_last_gamma: Goyal et al.'s zero gamma on each block's last batch norm.
    """
    if len(stage_blocks) == 0 or min(stage_blocks) < 1:
        raise ValueError(f"config.model.stage_blocks must be positive ints, got {stage_blocks}")
    bn_kwargs = dict(ghost_batch_size=ghost_batch_size, momentum=bn_momentum, epsilon=bn_epsilon)
    builder = _Builder(seed, bn_kwargs)
    inputs = keras.Input(shape=tuple(input_shape))
    x = builder.conv(inputs, base_width, 7, 2, "stem_conv")
    x = keras.layers.ReLU(name="stem_relu")(builder.bn(x, "stem_bn"))
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, blocks in enumerate(stage_blocks):
        for index in range(blocks):
            stride = 2 if (index == 0 and stage > 0) else 1
            x = builder.bottleneck(
                x, base_width * 2**stage, stride, zero_init_last_gamma, f"stage{stage}_block{index}"
            )
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        num_outputs,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01, seed=next(builder.seeds)),
        name="logits",
    )(x)
    return keras.Model(inputs, outputs, name="resnet")


def parameter_count(num_outputs: int = 1000, stage_blocks: Sequence[int] = (3, 4, 6, 3),
                    base_width: int = 64, input_channels: int = 3) -> int:
    """Trainable parameters of `build(...)`, counted from layer shapes without allocating."""
    total = 7 * 7 * input_channels * base_width + 2 * base_width
    channels = base_width
    for stage, blocks in enumerate(stage_blocks):
        width = base_width * 2**stage
        for index in range(blocks):
            stride = 2 if (index == 0 and stage > 0) else 1
            if channels != 4 * width or stride != 1:
                total += channels * 4 * width + 2 * 4 * width
            total += channels * width + 2 * width
            total += 9 * width * width + 2 * width
            total += width * 4 * width + 2 * 4 * width
            channels = 4 * width
    return total + channels * num_outputs + num_outputs
