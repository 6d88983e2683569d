"""Data registry: name -> loader. Loaders take keyword arguments from config.data."""

from tf_sgd_regimes.data import base
from tf_sgd_regimes.data import embedded

_DATASETS = {
    "digits": embedded.load_digits,
}

Dataset = base.Dataset
DataMissingError = base.DataMissingError


def names():
    return sorted(_DATASETS)


def get_dataset(name: str, **kwargs) -> base.Dataset:
    """Loads a registered data set; unknown names list the known ones."""
    if name not in _DATASETS:
        raise ValueError(f"unknown data set {name!r} (config.data.name); known: {names()}")
    return _DATASETS[name](**kwargs)
