"""tfds loaders (CIFAR-10/100, MNIST autoencoder, ImageNet) on mock_data; missing data."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_sgd_regimes import data
from tf_sgd_regimes.data import augment

NUM = 12


@pytest.fixture
def mocked():
    with tfds.testing.mock_data(num_examples=NUM):
        yield


def _raw_images(name, split):
    images = [example["image"] for example in tfds.as_numpy(tfds.load(name, split=split))]
    return np.stack(images).astype(np.float64) / 255.0


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_fields_and_standardisation(mocked, tmp_path, name, classes):
    dataset = data.get_dataset(name, data_dir=str(tmp_path))
    assert dataset.task == "classification" and dataset.ordering == "shuffle"
    assert dataset.split == "test" and dataset.num_outputs == classes
    assert dataset.input_shape == (32, 32, 3)
    assert dataset.train_x.shape == (NUM, 32, 32, 3) and dataset.train_x.dtype == np.float32
    assert dataset.test_x.shape == (NUM, 32, 32, 3)
    assert dataset.train_y.dtype == np.int32 and dataset.train_y.max() < classes
    # Independent numpy reference: per-channel statistics of the raw training pixels.
    raw = _raw_images(name, "train")
    mean = raw.reshape(-1, 3).mean(axis=0)
    std = raw.reshape(-1, 3).std(axis=0)
    np.testing.assert_allclose(dataset.train_x, (raw - mean) / std, atol=1e-4)
    np.testing.assert_allclose(dataset.info["channel_mean"], mean, atol=1e-6)
    # The attached augmentation is the pad-crop-flip and keeps shapes.
    out = dataset.augment(tf.constant(dataset.train_x[:4]), tf.constant([0, 1]))
    assert out.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(
        out.numpy(), augment.pad_crop_flip(dataset.train_x[:4], tf.constant([0, 1])).numpy()
    )


def test_cifar_validation_split(mocked, tmp_path):
    dataset = data.get_dataset("cifar10", data_dir=str(tmp_path), validation_fraction=0.25)
    assert dataset.split == "validation"
    assert len(dataset.train_x) == 9 and len(dataset.test_x) == 3
    raw = _raw_images("cifar10", "train")
    # Kept and held-out images partition the training set; statistics use the kept part.
    kept = [i for i in range(NUM) if not any(
        np.allclose(raw[i], held, atol=1e-6) for held in
        dataset.test_x * dataset.info["channel_std"] + dataset.info["channel_mean"])]
    assert len(kept) == 9
    np.testing.assert_allclose(dataset.info["channel_mean"],
                               raw[kept].reshape(-1, 3).mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(dataset.info["channel_std"],
                               raw[kept].reshape(-1, 3).std(axis=0), atol=1e-6)


def test_mnist_autoencoder(mocked, tmp_path):
    dataset = data.get_dataset("mnist_autoencoder", data_dir=str(tmp_path))
    assert dataset.task == "autoencoder" and dataset.num_outputs == 784
    assert dataset.input_shape == (784,) and dataset.train_y is None and dataset.test_y is None
    assert dataset.train_x.shape == (NUM, 784) and dataset.train_x.dtype == np.float32
    raw = _raw_images("mnist", "train").reshape(NUM, -1)
    np.testing.assert_allclose(dataset.train_x, raw, atol=1e-6)
    assert 0.0 <= dataset.train_x.min() and dataset.train_x.max() <= 1.0


def test_mnist_holdout_keeps_test_evaluation(mocked, tmp_path):
    # The paper's MNIST arithmetic: a held-out share leaves training (50,000 of 60,000)
    # while the test split stays the evaluation split; or the held-out part is evaluated.
    raw_train = _raw_images("mnist", "train").reshape(NUM, -1)
    raw_test = _raw_images("mnist", "test").reshape(NUM, -1)
    held = data.get_dataset("mnist_autoencoder", data_dir=str(tmp_path),
                            validation_fraction=1 / 6, split="test")
    assert held.split == "test" and held.train_x.shape == (NUM - 2, 784)
    np.testing.assert_allclose(held.test_x, raw_test, atol=1e-6)
    validation = data.get_dataset("mnist_autoencoder", data_dir=str(tmp_path),
                                  validation_fraction=1 / 6, split="validation")
    assert validation.split == "validation" and len(validation.test_x) == 2
    both = np.concatenate([validation.train_x, validation.test_x])
    # Kept and held-out images partition the training set (each image found once).
    distance = np.abs(both[:, None, :] - raw_train[None, :, :]).max(axis=-1)
    assert sorted(distance.argmin(axis=1)) == list(range(NUM))
    assert distance.min(axis=1).max() < 1e-6
    np.testing.assert_array_equal(validation.train_x, held.train_x)
    with pytest.raises(ValueError, match="validation_fraction"):
        data.get_dataset("mnist_autoencoder", data_dir=str(tmp_path), split="validation")


def test_imagenet_streams(mocked, tmp_path):
    dataset = data.get_dataset("imagenet", data_dir=str(tmp_path))
    assert isinstance(dataset, data.StreamedDataset)
    assert dataset.num_train == NUM and dataset.num_test == NUM and dataset.num_outputs == 1000
    assert dataset.steps_per_epoch(4) == NUM / 4
    first = next(iter(dataset.train_dataset(4, 7)))
    again = next(iter(dataset.train_dataset(4, 7)))
    other = next(iter(dataset.train_dataset(4, 8)))
    assert first[0].shape == (4, 224, 224, 3) and first[0].dtype == tf.float32
    assert first[1].dtype == tf.int32
    np.testing.assert_array_equal(first[0].numpy(), again[0].numpy())
    assert not np.array_equal(first[0].numpy(), other[0].numpy())
    # Evaluation: full batches, padding marked by weight 0, every real example once.
    batches = list(dataset.eval_dataset(5))
    assert [int(b[0].shape[0]) for b in batches] == [5, 5, 5]
    assert sum(float(tf.reduce_sum(b[2])) for b in batches) == NUM


def test_imagenet_eval_shards_pad_to_equal_batches(mocked, tmp_path):
    dataset = data.get_dataset("imagenet", data_dir=str(tmp_path))
    counts, weights = [], 0.0
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline)
        batches = list(dataset.eval_dataset(4, context))
        counts.append(len(batches))
        weights += sum(float(tf.reduce_sum(b[2])) for b in batches)
    assert counts == [2, 2] and weights == NUM


@pytest.mark.parametrize("name,tfds_name", [("cifar10", "cifar10"), ("cifar100", "cifar100"),
                                            ("mnist_autoencoder", "mnist")])
def test_missing_data_says_how_to_get_it(tmp_path, name, tfds_name):
    with pytest.raises(data.DataMissingError) as error:
        data.get_dataset(name, data_dir=str(tmp_path))
    message = str(error.value)
    assert f"tfds build {tfds_name} --data_dir={tmp_path}" in message
    assert "download=True" in message and "data_dir" in message


def test_missing_imagenet_points_at_manual_download(tmp_path):
    with pytest.raises(data.DataMissingError) as error:
        data.get_dataset("imagenet", data_dir=str(tmp_path))
    message = str(error.value)
    assert "image-net.org" in message and "ILSVRC2012_img_train.tar" in message
    assert f"tfds build imagenet2012 --data_dir={tmp_path} --manual_dir=" in message


def test_imagenet_download_with_empty_manual_dir(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(data.DataMissingError) as error:
        data.get_dataset("imagenet", data_dir=str(tmp_path / "tfds"), download=True,
                         manual_dir=str(manual))
    assert "ILSVRC2012_img_val.tar" in str(error.value) and "manual_dir" in str(error.value)
