"""ImageNet (ILSVRC-2012) streamed from tensorflow-datasets: random-resized crops for training."""

import functools
import os

import tensorflow as tf

from tf_sgd_regimes.data import base
from tf_sgd_regimes.data import splits
from tf_sgd_regimes.data import streamed_dataset
from tf_sgd_regimes.data import tfds_source

TFDS_NAME = "imagenet2012"
NUM_CLASSES = 1000
# Per-channel mean / std of the ImageNet training images on the [0, 1] scale: the constants
# used by fb.resnet.torch and torchvision (Goyal et al. 2017 build on the former).
MEAN_RGB = (0.485, 0.456, 0.406)
STDDEV_RGB = (0.229, 0.224, 0.225)
SHUFFLE_BUFFER = 10_000
MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def _standardise(image):
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(MEAN_RGB)) / tf.constant(STDDEV_RGB)


def train_preprocess(jpeg, seed, image_size: int = 224):
    """Random-resized crop (area 8-100 %, aspect 3/4-4/3) + flip of one JPEG, standardised.

    Args:
      jpeg: scalar string tensor, an encoded JPEG (tfds stores ImageNet as RGB JPEG).
      seed: shape-[2] integer tensor; the crop and flip are a pure function of it.
      image_size: output side (224).

    Returns:
      [image_size, image_size, 3] float32.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    shape = tf.image.extract_jpeg_shape(jpeg)
    whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=whole_image, seed=crop_seed, min_object_covered=0.1,
        aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    # Decoding only the crop window saves most of the JPEG decoding work.
    image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return _standardise(image)


def eval_preprocess(jpeg, image_size: int = 224, resize_size: int = 256):
    """Resize the shorter side to 256, take the central 224x224 crop, standardise."""
    image = tf.image.decode_jpeg(jpeg, channels=3)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize_size / tf.reduce_min(shape)
    new_shape = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new_shape, method="bilinear")
    top = (new_shape[0] - image_size) // 2
    left = (new_shape[1] - image_size) // 2
    image = image[top:top + image_size, left:left + image_size, :]
    image.set_shape([image_size, image_size, 3])
    return _standardise(image)


def _read(split, data_dir, input_context, seed=None):
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(input_context=input_context, shuffle_seed=seed)
    return tfds_source.load_split(
        TFDS_NAME, split, data_dir, download=False, shuffle_files=seed is not None,
        read_config=read_config, decoders={"image": tfds.decode.SkipDecoding()},
    )


def _train_dataset(batch_size, seed, input_context=None, *, split, data_dir, image_size,
                   num_examples):
    pipeline = input_context.input_pipeline_id if input_context else 0
    data = _read(split, data_dir, input_context, seed=seed).repeat()
    # Files are already read in a seeded random order; the buffer mixes across files.
    data = data.shuffle(min(SHUFFLE_BUFFER, num_examples), seed=seed)

    def prepare(index, example):
        # Per-example seed from (member seed, input pipeline, position in the stream).
        example_seed = tf.stack([tf.cast(seed, tf.int64) * 4096 + pipeline, index])
        image = train_preprocess(example["image"], example_seed, image_size)
        return image, tf.cast(example["label"], tf.int32)

    data = data.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _eval_dataset(batch_size, input_context=None, *, split, data_dir, image_size, num_examples):
    pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline = input_context.input_pipeline_id if input_context else 0
    # Element-wise sharding (not by file): shard sizes differ by at most one example, so
    # the padding below never drops a real one. 50,000 images: reading all is cheap.
    data = _read(split, data_dir, None).shard(pipelines, pipeline)

    def prepare(example):
        image = eval_preprocess(example["image"], image_size)
        return image, tf.cast(example["label"], tf.int32), tf.constant(1.0)

    data = data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    # Every pipeline yields the same number of full batches: pad with weight-0 examples.
    per_pipeline = -(-num_examples // pipelines)
    padded_size = -(-per_pipeline // batch_size) * batch_size
    padding = tf.data.Dataset.from_tensors(
        (tf.zeros([image_size, image_size, 3]), tf.constant(0, tf.int32), tf.constant(0.0))
    ).repeat()
    data = data.concatenate(padding).take(padded_size)
    return data.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _check_manual_dir(manual_dir, data_dir):
    """Refuses to start a build that cannot succeed, before tfds spends time on it."""
    import tensorflow_datasets as tfds

    if tfds.builder(TFDS_NAME, data_dir=data_dir).is_prepared():
        return
    missing = [name for name in MANUAL_FILES
               if not (manual_dir and os.path.isfile(os.path.join(manual_dir, name)))]
    if missing:
        raise base.DataMissingError(
            f"config.data.download=True needs config.data.manual_dir holding {MANUAL_FILES}; "
            f"manual_dir={manual_dir!r} lacks {missing}. "
            + tfds_source.IMAGENET_MANUAL.format(data_dir=data_dir or "DATA_DIR")
        )


def _count(split, data_dir):
    data = _read(split, data_dir, None)
    count = int(data.cardinality())
    if count < 0:
        raise ValueError(f"tfds could not count the examples of {TFDS_NAME} split {split!r}")
    return count


def load_imagenet(data_dir=None, download: bool = False, manual_dir=None,
                  validation_fraction: float = 0.0, image_size: int = 224):
    """ImageNet as a StreamedDataset (1,281,167 train images, 1,000 classes).

    "test" is the official 50,000-image validation set (ILSVRC-2012 test labels are not
    public; the paper's ImageNet test accuracy is on it). Training: random-resized crop +
    flip at 224, per-example seeded. Evaluation: resize 256 + centre crop 224.

    Args:
      data_dir: tfds data directory (local path or gs:// bucket) holding imagenet2012.
      download: build it from `manual_dir` if missing (tfds cannot fetch ImageNet itself).
      manual_dir: folder holding ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar.
      validation_fraction: if > 0, hold out the last share of the training split and
        evaluate on it (split="validation"); default 0 = the official validation set.
      image_size: training and evaluation resolution.

    Returns:
      streamed_dataset.StreamedDataset.
    """
    splits.check_fraction(validation_fraction)
    if download:
        _check_manual_dir(manual_dir, data_dir)
        # Build once (from manual_dir) before the pipelines read it without downloading.
        tfds_source.load_split(TFDS_NAME, "train", data_dir, download=True, manual_dir=manual_dir)
    train_split, eval_split, split = "train", "validation", "test"
    if validation_fraction > 0:
        held = max(1, int(round(validation_fraction * _count("train", data_dir))))
        train_split, eval_split, split = f"train[:-{held}]", f"train[-{held}:]", "validation"
    num_train = _count(train_split, data_dir)
    num_test = _count(eval_split, data_dir)
    return streamed_dataset.StreamedDataset(
        name="imagenet",
        task="classification",
        num_outputs=NUM_CLASSES,
        input_shape=(image_size, image_size, 3),
        num_train=num_train,
        num_test=num_test,
        train_dataset=functools.partial(
            _train_dataset, split=train_split, data_dir=data_dir, image_size=image_size,
            num_examples=num_train,
        ),
        eval_dataset=functools.partial(
            _eval_dataset, split=eval_split, data_dir=data_dir, image_size=image_size,
            num_examples=num_test,
        ),
        split=split,
        info={
            "source": f"tensorflow-datasets {TFDS_NAME!r} (manual download)",
            "dtype": "float32, standardised with the ImageNet mean/std (fb.resnet.torch)",
            "train_augment": "random-resized crop (area 0.08-1, aspect 3/4-4/3) + flip",
            "eval_preprocess": "resize shorter side 256 + centre crop",
            "train_split": train_split,
            "eval_split": eval_split,
        },
    )
