"""scikit-learn's bundled 8x8 digits (no download): flattened, as images, for an autoencoder."""

import numpy as np

from tf_sgd_regimes.data import base


def load_digits(
    test_fraction: float = 0.2,
    split_seed: int = 0,
    flatten: bool = True,
    validation_fraction: float = 0.0,
    name: str = "digits",
) -> base.Dataset:
    """scikit-learn's bundled digits (1,797 8x8 greyscale images, 10 classes).

    The train/test split is a fixed, seeded, class-stratified split so every run of
    every experiment sees the same test set. Pixels (0..16) are scaled to [0, 1].

    Args:
      test_fraction: share of the 1,797 images held out for test.
      split_seed: seed of the split (not of training).
      flatten: 64-vectors (MLP) or 8x8x1 images (CNN).
      validation_fraction: if > 0, carve a validation split out of the training part and
        return it in place of the test split (the paper selects on test; this is optional).
      name: the registry name recorded in the Dataset.
    """
    # Imported here: scikit-learn is only needed for this data set.
    from sklearn import datasets as sk_datasets
    from sklearn import model_selection

    digits = sk_datasets.load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[..., None]
    labels = digits.target.astype(np.int32)
    train_x, test_x, train_y, test_y = model_selection.train_test_split(
        images, labels, test_size=test_fraction, random_state=split_seed, stratify=labels
    )
    split = "test"
    if validation_fraction > 0:
        train_x, test_x, train_y, test_y = model_selection.train_test_split(
            train_x, train_y, test_size=validation_fraction, random_state=split_seed + 1,
            stratify=train_y,
        )
        split = "validation"
    if flatten:
        train_x = train_x.reshape(len(train_x), -1)
        test_x = test_x.reshape(len(test_x), -1)
    return base.Dataset(
        name=name,
        task="classification",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_outputs=10,
        input_shape=tuple(train_x.shape[1:]),
        split=split,
        info={"source": "sklearn.datasets.load_digits (UCI optical digits, 8x8)",
              "test_fraction": test_fraction, "split_seed": split_seed},
    )


def load_digits_images(test_fraction: float = 0.2, split_seed: int = 0,
                       validation_fraction: float = 0.0) -> base.Dataset:
    """The digits as 8x8x1 images in [0, 1] (for a small CNN / WRN); split as load_digits."""
    return load_digits(test_fraction, split_seed, flatten=False,
                       validation_fraction=validation_fraction, name="digits_images")


def load_digits_autoencoder(test_fraction: float = 0.2, split_seed: int = 0,
                            validation_fraction: float = 0.0) -> base.Dataset:
    """The digits as 64 pixels in [0, 1] for an autoencoder: the targets are the inputs.

    Same split as load_digits; labels are dropped, train_y and test_y are None (the engine
    uses x as its own target), num_outputs = 64.
    """
    digits = load_digits(test_fraction, split_seed, flatten=True,
                         validation_fraction=validation_fraction)
    return base.Dataset(
        name="digits_autoencoder",
        task="autoencoder",
        train_x=digits.train_x,
        train_y=None,
        test_x=digits.test_x,
        test_y=None,
        num_outputs=digits.train_x.shape[1],
        input_shape=digits.input_shape,
        split=digits.split,
        info={**digits.info, "targets": "the inputs (train_y/test_y are None)"},
    )
