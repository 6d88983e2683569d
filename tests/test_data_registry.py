"""Data registry: every name resolves, embedded variants, lookup errors."""

import numpy as np
import pytest

from tf_sgd_regimes import data

BUILT_IN = {"digits", "digits_images", "digits_autoencoder", "synthetic_language", "cifar10",
            "cifar100", "mnist_autoencoder", "imagenet", "ptb"}


def test_all_workloads_registered():
    assert BUILT_IN <= set(data.names())  # registered ones add to these


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown data set 'cifar11'.*cifar10"):
        data.get_dataset("cifar11")


def test_digits_images():
    dataset = data.get_dataset("digits_images")
    assert dataset.name == "digits_images" and dataset.input_shape == (8, 8, 1)
    assert dataset.train_x.shape[1:] == (8, 8, 1) and dataset.task == "classification"
    flat = data.get_dataset("digits")
    np.testing.assert_array_equal(dataset.train_x.reshape(len(dataset.train_x), -1), flat.train_x)
    np.testing.assert_array_equal(dataset.train_y, flat.train_y)


def test_digits_autoencoder():
    dataset = data.get_dataset("digits_autoencoder", validation_fraction=0.1)
    assert dataset.task == "autoencoder" and dataset.num_outputs == 64
    assert dataset.train_y is None and dataset.test_y is None
    assert dataset.input_shape == (64,) and dataset.split == "validation"
    assert 0.0 <= dataset.train_x.min() and dataset.train_x.max() <= 1.0
