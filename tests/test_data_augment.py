"""CIFAR augmentation: seeded, per example, every output a (flipped) crop of the padded input."""

import numpy as np
import pytest
import tensorflow as tf

from tf_sgd_regimes.data import augment

PAD = 4


def _images(batch=6, size=32, dtype=np.float32):
    values = np.random.default_rng(0).integers(1, 255, size=(batch, size, size, 3))
    return values.astype(dtype)


def _is_crop_of_padded(out, image, padding):
    """True if `out` equals some pad-4 crop of `image`, flipped or not (numpy reference)."""
    mode = {"constant": "constant", "reflect": "reflect"}[padding]
    padded = np.pad(image, [(PAD, PAD), (PAD, PAD), (0, 0)], mode=mode)
    height, width = image.shape[:2]
    for top in range(2 * PAD + 1):
        for left in range(2 * PAD + 1):
            crop = padded[top:top + height, left:left + width]
            if np.array_equal(out, crop) or np.array_equal(out, crop[:, ::-1]):
                return True
    return False


@pytest.mark.parametrize("padding", ["constant", "reflect"])
def test_outputs_are_crops_of_the_padded_image(padding):
    images = _images()
    out = augment.pad_crop_flip(tf.constant(images), tf.constant([3, 7]), padding=padding)
    assert out.shape == images.shape and out.dtype == tf.float32
    for image, result in zip(images, out.numpy()):
        assert _is_crop_of_padded(result, image, padding)


def test_deterministic_per_seed_and_different_across_seeds():
    images = tf.constant(_images())
    first = augment.pad_crop_flip(images, tf.constant([1, 2]))
    again = augment.pad_crop_flip(images, tf.constant([1, 2]))
    other = augment.pad_crop_flip(images, tf.constant([1, 3]))
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())


def test_examples_get_different_crops():
    same = np.repeat(_images(batch=1), 16, axis=0)
    out = augment.pad_crop_flip(tf.constant(same), tf.constant([0, 5])).numpy()
    distinct = {out[i].tobytes() for i in range(len(out))}
    assert len(distinct) > 8  # 162 possible (offset, flip) pairs per example
    # Some are flipped, some not, and some windows are shifted (zeros from the padding).
    assert any((out[i] == 0).any() for i in range(len(out)))


def test_uint8_and_static_shape():
    images = _images(dtype=np.uint8)
    out = augment.pad_crop_flip(tf.constant(images), tf.constant([9, 9]))
    assert out.dtype == tf.uint8 and out.shape == images.shape
    for image, result in zip(images, out.numpy()):
        assert _is_crop_of_padded(result, image, "constant")


def test_xla_with_dynamic_batch():
    fn = tf.function(
        augment.make_pad_crop_flip(),
        jit_compile=True,
        input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32),
                         tf.TensorSpec([2], tf.int64)],
    )
    for batch in (3, 5):
        images = _images(batch=batch)
        seed = tf.constant([4, 2], tf.int64)
        out = fn(tf.constant(images), seed).numpy()
        np.testing.assert_array_equal(out, fn(tf.constant(images), seed).numpy())
        assert out.shape == images.shape
        for image, result in zip(images, out):
            assert _is_crop_of_padded(result, image, "constant")


def test_bad_padding_is_refused():
    with pytest.raises(ValueError, match="augment_padding"):
        augment.make_pad_crop_flip(padding="wrap")
