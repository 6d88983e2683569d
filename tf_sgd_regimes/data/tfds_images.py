"""Small image sets through tensorflow-datasets, held in memory: CIFAR-10/100, MNIST autoencoder."""

import numpy as np

from tf_sgd_regimes.data import augment as augment_lib
from tf_sgd_regimes.data import base
from tf_sgd_regimes.data import splits
from tf_sgd_regimes.data import tfds_source

_CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
_CHUNK = 5_000  # images per chunk when computing statistics (bounds float64 temporaries)


def _train_and_eval(tfds_name, data_dir, download, validation_fraction, split_seed,
                    split="auto"):
    """Train and evaluation arrays as uint8 images + labels; eval = test or held-out train.

    split: "auto" evaluates on the held-out part when validation_fraction > 0, else on
    the test split; "test" always evaluates on the test split (the held-out part is then
    only removed from training); "validation" requires validation_fraction > 0.
    """
    splits.check_fraction(validation_fraction)
    if split not in ("auto", "test", "validation"):
        raise ValueError(f"config.data.split {split!r} must be 'auto', 'test' or 'validation'")
    if split == "validation" and validation_fraction <= 0:
        raise ValueError("config.data.split='validation' needs config.data.validation_fraction"
                         " > 0 (the share of the training set held out)")
    keys = ("image", "label")
    train = tfds_source.split_to_numpy(
        tfds_source.load_split(tfds_name, "train", data_dir, download), keys
    )
    if validation_fraction > 0:
        keep, held = splits.holdout_indices(len(train["label"]), validation_fraction, split_seed)
        held_out = {key: value[held] for key, value in train.items()}
        train = {key: value[keep] for key, value in train.items()}
        if split != "test":
            return train, held_out, "validation"
    test = tfds_source.split_to_numpy(
        tfds_source.load_split(tfds_name, "test", data_dir, download), keys
    )
    return train, test, "test"


def channel_statistics(images: np.ndarray):
    """Per-channel mean and standard deviation of uint8 images, on the [0, 1] scale."""
    channels = images.shape[-1]
    total = np.zeros(channels)
    total_squares = np.zeros(channels)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start:start + _CHUNK].reshape(-1, channels).astype(np.float64) / 255.0
        total += chunk.sum(axis=0)
        total_squares += np.square(chunk).sum(axis=0)
    count = images.size // channels
    mean = total / count
    std = np.sqrt(np.maximum(total_squares / count - np.square(mean), 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


def _standardise(images: np.ndarray, mean, std) -> np.ndarray:
    out = np.empty(images.shape, np.float32)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start:start + _CHUNK].astype(np.float32) / 255.0
        out[start:start + _CHUNK] = (chunk - mean) / std
    return out


def _load_cifar(tfds_name, data_dir, download, validation_fraction, split_seed, augment,
                augment_padding):
    train, evaluation, split = _train_and_eval(
        tfds_name, data_dir, download, validation_fraction, split_seed
    )
    # Statistics of the training images actually used (after any hold-out): no test leakage.
    mean, std = channel_statistics(train["image"])
    return base.Dataset(
        name=tfds_name,
        task="classification",
        train_x=_standardise(train["image"], mean, std),
        train_y=train["label"].astype(np.int32),
        test_x=_standardise(evaluation["image"], mean, std),
        test_y=evaluation["label"].astype(np.int32),
        num_outputs=_CIFAR_CLASSES[tfds_name],
        input_shape=tuple(train["image"].shape[1:]),
        augment=augment_lib.make_pad_crop_flip(4, augment_padding) if augment else None,
        split=split,
        info={
            "source": f"tensorflow-datasets {tfds_name!r}",
            "dtype": "float32, per-channel standardised: (x / 255 - mean) / std",
            "channel_mean": mean.tolist(),
            "channel_std": std.tolist(),
            "statistics_from": "the training images in use (computed at load time)",
            "augment": f"pad 4 ({augment_padding}) + random 32x32 crop + flip" if augment
            else "none",
            "validation_fraction": validation_fraction,
            "split_seed": split_seed,
        },
    )


def load_cifar10(data_dir=None, download: bool = False, validation_fraction: float = 0.0,
                 split_seed: int = 0, augment: bool = True,
                 augment_padding: str = "constant") -> base.Dataset:
    """CIFAR-10 (50,000 train / 10,000 test 32x32x3 images, 10 classes) in memory.

    Images are float32, standardised per channel with the mean and std of the training
    images (computed at load time, stored in info). Labels are int32. Training batches are
    augmented by `Dataset.augment` (pad 4 + random crop + horizontal flip, per example).

    Args:
      data_dir: tfds data directory (local path or gs:// bucket); None = tfds default.
      download: let tfds download the data set if missing (default False: a missing data
        set raises DataMissingError saying how to get it; nothing is fetched silently).
      validation_fraction: if > 0, hold out this share of the training set and return it
        as the evaluation split (split="validation"); default 0 = the paper's test split.
      split_seed: seed of that hold-out.
      augment: attach the pad-crop-flip augmentation.
      augment_padding: "constant" (zeros = mean colour after standardising) or "reflect".
    """
    return _load_cifar("cifar10", data_dir, download, validation_fraction, split_seed,
                       augment, augment_padding)


def load_cifar100(data_dir=None, download: bool = False, validation_fraction: float = 0.0,
                  split_seed: int = 0, augment: bool = True,
                  augment_padding: str = "constant") -> base.Dataset:
    """CIFAR-100 (fine labels, 100 classes); otherwise exactly as load_cifar10."""
    return _load_cifar("cifar100", data_dir, download, validation_fraction, split_seed,
                       augment, augment_padding)


def load_mnist_autoencoder(data_dir=None, download: bool = False,
                           validation_fraction: float = 0.0,
                           split_seed: int = 0, split: str = "auto") -> base.Dataset:
    """MNIST for the autoencoder: inputs are the flattened 784 pixels in [0, 1] (float32).

    The targets are the inputs, so train_y and test_y are None (task "autoencoder": the
    engine uses x as its own target; no second copy of the images is held). Arguments as
    in load_cifar10, plus `split` (see _train_and_eval): validation_fraction=1/6 with
    split="test" trains on 50,000 images and scores the 10,000 test images, the paper's
    arithmetic (156,250 updates = 200 epochs at B = 64).
    """
    train, evaluation, split = _train_and_eval(
        "mnist", data_dir, download, validation_fraction, split_seed, split
    )

    def flat(images):
        return (images.reshape(len(images), -1).astype(np.float32) / 255.0)

    train_x = flat(train["image"])
    return base.Dataset(
        name="mnist_autoencoder",
        task="autoencoder",
        train_x=train_x,
        train_y=None,
        test_x=flat(evaluation["image"]),
        test_y=None,
        num_outputs=train_x.shape[1],
        input_shape=(train_x.shape[1],),
        split=split,
        info={
            "source": "tensorflow-datasets 'mnist' (labels dropped)",
            "dtype": "float32 in [0, 1] (x / 255), flattened to 784",
            "targets": "the inputs (train_y/test_y are None)",
            "validation_fraction": validation_fraction,
            "split_seed": split_seed,
        },
    )
