"""Data registry: name -> loader. Loaders take keyword arguments from config.data.

Every loader returns a base.Dataset (held in memory, gathered on device by index), except
"imagenet", which returns a streamed_dataset.StreamedDataset (read through tf.data; see its
docstring for how an engine consumes it). Token streams ("ptb", "synthetic_language")
are batched by token_windows.stream_batch.

Adding a data set is one call, here or in your own file:
    register_dataset("my_table", lambda **fields: Dataset.from_arrays("my_table", ...))
"""

from typing import Callable, Union

from tf_sgd_regimes.data import base
from tf_sgd_regimes.data import embedded
from tf_sgd_regimes.data import imagenet
from tf_sgd_regimes.data import ptb
from tf_sgd_regimes.data import streamed_dataset
from tf_sgd_regimes.data import synthetic_language
from tf_sgd_regimes.data import tfds_images
from tf_sgd_regimes.experiments import ConfigError, origin  # ConfigError: exit status 2

Dataset = base.Dataset
StreamedDataset = streamed_dataset.StreamedDataset
DataMissingError = base.DataMissingError
fingerprint = base.fingerprint
check_workdir_data = base.check_workdir_data

_DATASETS = {}


def register_dataset(name: str, loader: Union[Callable, "Dataset", "StreamedDataset"],
                     replace: bool = False) -> str:
    """Registers a data set under `name` (what config.data.name refers to).

    Args:
      loader: a function taking config.data's other fields as keyword arguments and
        returning a Dataset or StreamedDataset, or such a data set itself (loaded once,
        held in memory).
      replace: allow redefining an existing name with another loader.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"register_dataset: name must be a non-empty string, got {name!r}")
    if isinstance(loader, (Dataset, StreamedDataset)):
        loaded = loader

        def loader(**fields):
            if fields:
                raise ConfigError(f"data set {name!r} was registered as arrays and takes no "
                                 f"config.data fields; got {sorted(fields)}")
            return loaded

        loader.registered = loaded
    elif not callable(loader):
        raise ConfigError(f"register_dataset({name!r}): loader must be a function returning a "
                         "Dataset (or a Dataset itself)")
    old = _DATASETS.get(name)
    # Re-running the cell or file that registered it is fine; a clash of two is not.
    rerun = old is not None and (
        hasattr(old, "registered") and hasattr(loader, "registered")
        or origin(old) == origin(loader))
    if old is not None and not rerun and not replace:
        raise ConfigError(f"data set {name!r} is already registered with another loader "
                         f"({origin(old)}); pick another name or pass replace=True")
    _DATASETS[name] = loader
    return name



# The package's data sets: one line each.
register_dataset("digits", embedded.load_digits)
register_dataset("digits_images", embedded.load_digits_images)
register_dataset("digits_autoencoder", embedded.load_digits_autoencoder)
register_dataset("synthetic_language", synthetic_language.load_synthetic_language)
register_dataset("cifar10", tfds_images.load_cifar10)
register_dataset("cifar100", tfds_images.load_cifar100)
register_dataset("mnist_autoencoder", tfds_images.load_mnist_autoencoder)
register_dataset("imagenet", imagenet.load_imagenet)
register_dataset("ptb", ptb.load_ptb)


def names():
    return sorted(_DATASETS)


def check_name(name: str) -> None:
    """Raises ConfigError (exit status 2 on the command line) for an unknown name."""
    if name not in _DATASETS:
        raise ConfigError(
            f"unknown data set {name!r} (config.data.name); known: {names()}. Register your "
            "own with tf_sgd_regimes.register_dataset(name, loader)")


def get_dataset(name: str, **kwargs):
    """Loads a registered data set (a Dataset, or a StreamedDataset for "imagenet").

    Unknown names list the known ones.
    """
    check_name(name)
    dataset = _DATASETS[name](**kwargs)
    if not isinstance(dataset, (Dataset, StreamedDataset)):
        raise ConfigError(
            f"the loader of data set {name!r} returned a {type(dataset).__name__}; it must "
            "return a tf_sgd_regimes.Dataset (e.g. Dataset.from_arrays(...)) or a "
            "StreamedDataset (StreamedDataset.from_tf_data(...))")
    return dataset
