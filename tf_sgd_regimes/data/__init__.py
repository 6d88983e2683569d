"""Data registry: name -> loader. Loaders take keyword arguments from config.data.

Every loader returns a base.Dataset (held in memory, gathered on device by index), except
"imagenet", which returns a streamed.StreamedDataset (read through tf.data; see its
docstring for how an engine consumes it). Token streams ("ptb", "synthetic_language")
are batched by streams.stream_batch.
"""

from tf_sgd_regimes.data import base
from tf_sgd_regimes.data import embedded
from tf_sgd_regimes.data import imagenet
from tf_sgd_regimes.data import ptb
from tf_sgd_regimes.data import streamed
from tf_sgd_regimes.data import synthetic_language
from tf_sgd_regimes.data import tfds_images

_DATASETS = {
    "digits": embedded.load_digits,
    "digits_images": embedded.load_digits_images,
    "digits_autoencoder": embedded.load_digits_autoencoder,
    "synthetic_language": synthetic_language.load_synthetic_language,
    "cifar10": tfds_images.load_cifar10,
    "cifar100": tfds_images.load_cifar100,
    "mnist_autoencoder": tfds_images.load_mnist_autoencoder,
    "imagenet": imagenet.load_imagenet,
    "ptb": ptb.load_ptb,
}

Dataset = base.Dataset
StreamedDataset = streamed.StreamedDataset
DataMissingError = base.DataMissingError


def names():
    return sorted(_DATASETS)


def get_dataset(name: str, **kwargs):
    """Loads a registered data set (a Dataset, or a StreamedDataset for "imagenet").

    Unknown names list the known ones.
    """
    if name not in _DATASETS:
        raise ValueError(f"unknown data set {name!r} (config.data.name); known: {names()}")
    return _DATASETS[name](**kwargs)
