"""Data sets that ship with a dependency: scikit-learn's 8x8 digits (no download)."""

import numpy as np

from tf_sgd_regimes.data import base


def load_digits(
    test_fraction: float = 0.2,
    split_seed: int = 0,
    flatten: bool = True,
    validation_fraction: float = 0.0,
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
        name="digits",
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
