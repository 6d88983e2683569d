"""Layers the paper's models share: ghost batch norm, the SkipInit scalar, seeded initialisers."""

from typing import Optional

import keras
import numpy as np
import tensorflow as tf


def derived_seed(seed: int, index: int) -> int:
    """A distinct per-layer seed from a model seed, so K packed copies never share streams."""
    # Large odd stride keeps (seed, index) pairs from colliding for any realistic depth.
    return (int(seed) * 1_000_003 + int(index)) % (2**31 - 1)


class SeedSequence:
    """Hands out derived seeds in build order: `next(seeds)` per layer."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.index = 0

    def __next__(self) -> int:
        self.index += 1
        return derived_seed(self.seed, self.index)


class GhostBatchNormalization(keras.layers.Layer):
    """Batch norm whose training statistics come from consecutive sub-batches ("ghost batches").

    In training the batch [B, ..., C] is cut into groups of `ghost_batch_size` consecutive
    examples, and each group is normalized with its own mean and (biased) variance over every
    axis but the last. When B is smaller than the ghost size the whole batch is one group;
    when B is not a multiple of it, the leftover examples join the last group. The moving
    averages (used for inference) are updated with the average of the group statistics.

    The batch dimension may be unknown until run time (one trace for several batch sizes):
    then (and for a static batch that is not a whole number of groups) statistics come from
    segment sums over each example's group index. A static batch of whole groups takes a
    reshape-and-reduce path; both have static shapes for XLA when the batch is static.

    Groups are cut from the *global* batch, whatever the number of replicas (the paper's
    ghost batch is a property of the member's batch, not of the hardware). Under
    tf.distribute replica r of R holds examples [r n, (r + 1) n) of the global batch B = R n
    (the engine's layout). When every replica holds whole groups (n a multiple of the
    ghost size) the groups are local and nothing is exchanged. Otherwise each replica
    writes the sums of its examples into their groups' rows of a [groups, C] tensor and one
    all-reduce adds them (a second one for the centred squares), so a group split across
    replicas gets the statistics of all its examples: the same numbers as on one device.
    `check_layout` refuses a global batch that the replicas cannot split evenly.

    Args:
      ghost_batch_size: examples per statistics group; None for the whole batch.
      momentum: moving-average decay (moving = momentum * moving + (1 - momentum) * batch).
      epsilon: added to the variance.
      gamma_initializer: "ones", or "zeros" for the last BN of a block (Goyal et al. 2017).
    """

    def __init__(
        self,
        ghost_batch_size: Optional[int] = 64,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        gamma_initializer="ones",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if ghost_batch_size is not None and int(ghost_batch_size) < 1:
            raise ValueError(
                f"ghost_batch_size must be a positive int or None, got {ghost_batch_size!r}"
            )
        self.ghost_batch_size = None if ghost_batch_size is None else int(ghost_batch_size)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(
            shape=(channels,), name="gamma", initializer=self.gamma_initializer, autocast=False
        )
        self.beta = self.add_weight(
            shape=(channels,), name="beta", initializer="zeros", autocast=False
        )
        # "mean" aggregation: under a mirrored strategy every replica writes its own local
        # statistics and the copies are averaged, as Keras' own batch norm does.
        self.moving_mean = self.add_weight(
            shape=(channels,), name="moving_mean", initializer="zeros",
            trainable=False, autocast=False, aggregation="mean",
        )
        self.moving_variance = self.add_weight(
            shape=(channels,), name="moving_variance", initializer="ones",
            trainable=False, autocast=False, aggregation="mean",
        )

    def exchanges_across_replicas(self, local_batch: Optional[int], replicas: int) -> bool:
        """Whether a training call needs the all-reduce: some ghost group spans replicas
        (or, with the batch unknown until run time, might)."""
        size = self.ghost_batch_size
        if replicas == 1:
            return False
        return local_batch is None or size is None or local_batch % size != 0

    def _group_ids(self, batch):
        """Group index of each example and the number of groups (int if batch is static)."""
        if self.ghost_batch_size is None:
            return tf.zeros([batch], tf.int32), 1
        size = self.ghost_batch_size
        if isinstance(batch, int):
            groups = max(batch // size, 1)
        else:
            groups = tf.maximum(batch // size, 1)
        ids = tf.minimum(tf.range(batch) // size, groups - 1)
        return ids, groups

    def call(self, inputs, training=False):
        x = tf.cast(inputs, tf.float32)
        if not training:
            mean, variance = self.moving_mean, self.moving_variance
            outputs = (x - mean) * tf.math.rsqrt(variance + self.epsilon) * self.gamma + self.beta
            return tf.cast(outputs, inputs.dtype)

        static_batch = x.shape[0]
        size = self.ghost_batch_size
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else int(context.num_replicas_in_sync)
        if self.exchanges_across_replicas(static_batch, replicas):
            # A ghost group spans replicas (or the layout is only known at run time).
            outputs, group_mean, group_variance = self._normalize_across_replicas(x, context)
        elif static_batch is not None and (size is None or static_batch % size == 0
                                           or static_batch < size):
            outputs, group_mean, group_variance = self._normalize_reshaped(x)
        else:
            outputs, group_mean, group_variance = self._normalize_segments(x)

        batch_mean = tf.reduce_mean(group_mean, axis=0)
        batch_variance = tf.reduce_mean(group_variance, axis=0)
        decay = 1.0 - self.momentum
        self.moving_mean.assign(self.moving_mean - decay * (self.moving_mean - batch_mean))
        self.moving_variance.assign(
            self.moving_variance - decay * (self.moving_variance - batch_variance)
        )
        return tf.cast(outputs, inputs.dtype)

    def _normalize_reshaped(self, x):
        """Static batch made of whole groups: reshape to [groups, size, ...] and reduce."""
        batch = x.shape[0]
        groups = 1 if self.ghost_batch_size is None else max(batch // self.ghost_batch_size, 1)
        grouped = tf.reshape(x, [groups, batch // groups] + list(x.shape[1:]))
        axes = list(range(1, len(grouped.shape) - 1))
        mean, variance = tf.nn.moments(grouped, axes=axes, keepdims=True)
        scale = tf.math.rsqrt(variance + self.epsilon) * self.gamma
        outputs = tf.reshape((grouped - mean) * scale + self.beta, tf.shape(x))
        flat = [groups, x.shape[-1]]
        return outputs, tf.reshape(mean, flat), tf.reshape(variance, flat)

    def _normalize_segments(self, x):
        """Any batch, known or not: segment sums over the group index of each example."""
        batch = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
        ids, groups = self._group_ids(batch)
        reduce_axes = list(range(1, len(x.shape) - 1))
        # Per-example sums over the non-channel axes first, then a segment sum over groups:
        # the group reduction touches [B, C] rather than the full activation tensor.
        per_example = tf.reduce_sum(x, axis=reduce_axes) if reduce_axes else x
        positions = float(np.prod(x.shape[1:-1])) if reduce_axes else 1.0
        counts = tf.math.unsorted_segment_sum(tf.ones_like(ids, tf.float32), ids, groups)
        counts = counts[:, None] * positions
        group_mean = tf.math.unsorted_segment_sum(per_example, ids, groups) / counts
        example_mean = tf.gather(group_mean, ids)
        expand = [slice(None)] + [None] * len(reduce_axes) + [slice(None)]
        centered = x - example_mean[tuple(expand)]
        squares = tf.reduce_sum(tf.square(centered), axis=reduce_axes) if reduce_axes else (
            tf.square(centered)
        )
        group_variance = tf.math.unsorted_segment_sum(squares, ids, groups) / counts
        example_variance = tf.gather(group_variance, ids)

        scale = tf.math.rsqrt(example_variance + self.epsilon) * self.gamma
        return centered * scale[tuple(expand)] + self.beta, group_mean, group_variance

    def _normalize_across_replicas(self, x, context):
        """Groups of the global batch: each replica's group sums, all-reduced over replicas.

        Every replica ends with the statistics of every group, so the moving averages are
        the same on all of them (and the same as on one device).
        """
        replicas = int(context.num_replicas_in_sync)
        local = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
        global_batch = local * replicas
        size = self.ghost_batch_size
        if size is None:
            groups = 1
        elif isinstance(global_batch, int):
            groups = max(global_batch // size, 1)
        else:
            groups = tf.maximum(global_batch // size, 1)
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        positions = replica * local + tf.range(local)  # this replica's examples, globally
        ids = (tf.zeros_like(positions) if size is None
               else tf.minimum(positions // size, groups - 1))
        reduce_axes = list(range(1, len(x.shape) - 1))
        points = float(np.prod(x.shape[1:-1])) if reduce_axes else 1.0

        def group_sums(per_example):
            # Rows of groups this replica does not touch stay zero: the all-reduce adds
            # each group's partial sums from the replicas that share it.
            return context.all_reduce(tf.distribute.ReduceOp.SUM,
                                      tf.math.unsorted_segment_sum(per_example, ids, groups))

        per_example = tf.reduce_sum(x, axis=reduce_axes) if reduce_axes else x
        counts = tf.math.unsorted_segment_sum(tf.ones_like(ids, tf.float32), ids, groups)
        counts = context.all_reduce(tf.distribute.ReduceOp.SUM, counts)[:, None] * points
        group_mean = group_sums(per_example) / counts
        expand = [slice(None)] + [None] * len(reduce_axes) + [slice(None)]
        centered = x - tf.gather(group_mean, ids)[tuple(expand)]
        squares = (tf.reduce_sum(tf.square(centered), axis=reduce_axes) if reduce_axes
                   else tf.square(centered))
        group_variance = group_sums(squares) / counts
        scale = tf.math.rsqrt(tf.gather(group_variance, ids) + self.epsilon) * self.gamma
        return centered * scale[tuple(expand)] + self.beta, group_mean, group_variance

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            ghost_batch_size=self.ghost_batch_size,
            momentum=self.momentum,
            epsilon=self.epsilon,
            gamma_initializer=keras.initializers.serialize(self.gamma_initializer),
        )
        return config


class SkipInitScale(keras.layers.Layer):
    """SkipInit (De & Smith 2020): a learnable scalar, initialised to 0, on a residual branch.

    At initialisation the branch contributes nothing, so a residual block is the identity
    on its shortcut path.
    """

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), name="scale", initializer="zeros")

    def call(self, inputs):
        return inputs * tf.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


class ReplicaDropout(keras.layers.Dropout):
    """Dropout whose mask is drawn for the global batch; replica r keeps rows [r n, (r + 1) n).

    Keras' Dropout draws a mask for the tensor it is given from the layer's seed, so under
    tf.distribute every replica would draw the same mask for its own examples: a cell's
    result would depend on the replica count, and examples on different replicas would
    share masks. Here the mask of the whole batch is drawn (the same numbers on every
    replica and on one device) and each replica keeps its rows.
    """

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else int(context.num_replicas_in_sync)
        shape = tf.shape(inputs)
        local = shape[0]
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        noise = tf.random.stateless_uniform(tf.concat([[local * replicas], shape[1:]], 0),
                                            seed)
        if replicas > 1:
            first = tf.cast(context.replica_id_in_sync_group, tf.int32) * local
            rank = len(inputs.shape)
            noise = tf.slice(noise, tf.concat([[first], tf.zeros([rank - 1], tf.int32)], 0),
                             shape)
        keep = noise >= self.rate
        return tf.where(keep, inputs / (1.0 - self.rate), tf.zeros_like(inputs))


def check_layout(batch_size: int, replicas: int, ghost_batch_size: Optional[int]) -> None:
    """Refuses, before any compute, a global batch the replicas cannot share out evenly.

    Ghost groups are cut from the global batch, and replica r holds examples
    [r B/R, (r + 1) B/R); every other layout (groups spanning replicas included) is handled
    by `GhostBatchNormalization`.
    """
    if replicas > 1 and batch_size % replicas:
        raise ValueError(
            f"ghost batch norm: batch size {batch_size} cannot be split over {replicas} "
            f"replicas (ghost batch size {ghost_batch_size}); each replica must hold "
            f"B / {replicas} consecutive examples. Pick config.sweep.batch_sizes that are "
            f"multiples of {replicas}")


NORMALIZATIONS = ("batch_norm", "skipinit")


def check_normalization(normalization: str) -> None:
    """Refuses anything but the known normalization choices, naming the config field."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"unknown normalization {normalization!r} (config.model.normalization); "
            f"known: {list(NORMALIZATIONS)}"
        )


def normalization_or_none(normalization: str, name: str, **bn_kwargs):
    """A ghost batch norm for "batch_norm", None for "skipinit"."""
    check_normalization(normalization)
    if normalization == "batch_norm":
        return GhostBatchNormalization(name=name, **bn_kwargs)
    return None
