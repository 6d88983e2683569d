"""CIFAR augmentation (pad + random crop + horizontal flip) from a stateless seed, per example."""

import functools

import tensorflow as tf

PADDING_MODES = ("constant", "reflect")


def pad_crop_flip(images, seed, pad: int = 4, padding: str = "constant", rows=None):
    """Pads each image by `pad` pixels, takes a random crop of the original size, flips half.

    Every example draws its own crop offset and flip from the stateless seed, so the result
    is a pure function of (images, seed): members of a pack with different seeds see
    different augmentations, and a step re-run gives the same batch. Works eagerly, inside
    tf.function and under XLA, with a static or dynamic batch dimension. (TF's stateless
    generators give the same bits for the same seed within one mode on one device; XLA and
    eager may draw different, equally valid, crops.)

    Args:
      images: [B, H, W, C] tensor (any dtype; the padding value is 0 in that dtype, i.e.
        the mean colour for per-channel normalised images).
      seed: shape-[2] integer tensor, e.g. derived from (member seed, step).
      pad: pixels added on each side (4 for CIFAR).
      padding: "constant" (zeros) or "reflect" (mirror, as in Zagoruyko & Komodakis 2016).
      rows: None, or (first, total): `images` are rows [first, first + len) of a batch of
        `total` and get the crops and flips that batch's rows would get, so that a batch
        split over replicas is augmented exactly as on one device.

    Returns:
      Tensor with the shape and dtype of `images`.
    """
    if padding not in PADDING_MODES:
        raise ValueError(f"augment padding {padding!r} not in {PADDING_MODES}")
    images = tf.convert_to_tensor(images)
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError("pad_crop_flip needs static image height and width")
    seed = tf.convert_to_tensor(seed)
    batch = tf.shape(images)[0]
    first, total = (0, batch) if rows is None else rows
    offset_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    # Offsets in [0, 2*pad]: the crop window's top-left corner inside the padded image.
    offsets = tf.random.stateless_uniform(
        [total, 2], offset_seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    flips = tf.random.stateless_uniform([total], flip_seed, minval=0, maxval=2, dtype=tf.int32)
    if rows is not None:  # tf.slice: a run-time start with a static size suits XLA
        offsets = tf.slice(offsets, [first, 0], [batch, 2])
        flips = tf.slice(flips, [first], [batch])
    padded = tf.pad(
        images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode=padding.upper()
    )
    row_index = offsets[:, :1] + tf.range(height)[None, :]  # [B, H]
    # A flip reads the crop's columns right to left: crop and flip in one gather.
    columns = tf.range(width)[None, :]
    columns = tf.where(flips[:, None] > 0, width - 1 - columns, columns)
    column_index = offsets[:, 1:] + columns  # [B, W]
    rows = tf.gather(padded, row_index, axis=1, batch_dims=1)  # [B, H, W + 2 pad, C]
    return tf.gather(rows, column_index, axis=2, batch_dims=1)


def make_pad_crop_flip(pad: int = 4, padding: str = "constant"):
    """The augmentation as a (images, seed) -> images callable for Dataset.augment."""
    if padding not in PADDING_MODES:
        raise ValueError(f"config.data.augment_padding {padding!r} not in {PADDING_MODES}")
    return functools.partial(pad_crop_flip, pad=pad, padding=padding)
