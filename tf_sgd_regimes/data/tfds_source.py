"""tensorflow-datasets access: load a split; "not on disk" becomes DataMissingError."""

import numpy as np

from tf_sgd_regimes.data import base

IMAGENET_MANUAL = (
    "ImageNet (tfds 'imagenet2012') needs a manual download: register at "
    "https://image-net.org/download-images, download ILSVRC2012_img_train.tar and "
    "ILSVRC2012_img_val.tar into a folder MANUAL_DIR, then run "
    "`tfds build imagenet2012 --data_dir={data_dir} --manual_dir=MANUAL_DIR` (about 150 GB, "
    "hours of CPU), or pass --config.data.download=True --config.data.manual_dir=MANUAL_DIR "
    "to build it from the training script. "
)


def _shown_dir(data_dir) -> str:
    if data_dir:
        return str(data_dir)
    import tensorflow_datasets as tfds

    return f"{tfds.core.constants.DATA_DIR} (the tfds default; $TFDS_DATA_DIR overrides it)"


def missing_message(tfds_name: str, data_dir) -> str:
    """How to get a tfds data set that is not in `data_dir`."""
    shown = _shown_dir(data_dir)
    where = f"Data set {tfds_name!r} was not found in data_dir={shown}. "
    if tfds_name.startswith("imagenet"):
        return where + IMAGENET_MANUAL.format(data_dir=data_dir or "DATA_DIR") + (
            "Or point --config.data.data_dir at a directory or gs:// bucket that holds it."
        )
    return where + (
        f"Run `tfds build {tfds_name} --data_dir={data_dir or 'DATA_DIR'}` on a machine with "
        "internet (and copy that folder here), or pass --config.data.download=True to let "
        "tfds download it, or point --config.data.data_dir at a directory or gs:// bucket "
        "that already holds it."
    )


def load_split(tfds_name: str, split: str, data_dir=None, download: bool = False,
               manual_dir=None, **load_kwargs):
    """tfds.load of one split; a missing data set raises DataMissingError saying how to get it.

    Args:
      tfds_name: tfds name, e.g. "cifar10".
      split: tfds split string, e.g. "train" or "test".
      data_dir: tfds data directory (a local path or gs:// bucket); None = tfds default.
      download: let tfds download and prepare the data set if it is missing.
      manual_dir: folder of manually downloaded archives (ImageNet).
      **load_kwargs: passed to tfds.load (decoders, shuffle_files, read_config, ...).

    Returns:
      tf.data.Dataset of feature dicts.
    """
    import tensorflow_datasets as tfds

    download_and_prepare_kwargs = None
    if manual_dir:
        download_and_prepare_kwargs = {
            "download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)
        }
    try:
        return tfds.load(
            tfds_name,
            split=split,
            data_dir=data_dir,
            download=download,
            download_and_prepare_kwargs=download_and_prepare_kwargs,
            **load_kwargs,
        )
    except AssertionError as error:
        # tfds signals both "not prepared" and "manual_dir empty" with AssertionError.
        raise base.DataMissingError(f"{missing_message(tfds_name, data_dir)}\n(tfds: {error})") \
            from error


def split_to_numpy(dataset, keys, chunk: int = 10_000):
    """Materialises a finite tf.data.Dataset of dicts into numpy arrays, chunk by chunk.

    (tfds.load(batch_size=-1) would do it in one call, but it aborts the process under
    tfds.testing.mock_data; chunked reading works in both.)
    """
    import tensorflow_datasets as tfds

    parts = {key: [] for key in keys}
    for batch in tfds.as_numpy(dataset.batch(chunk)):
        for key in keys:
            parts[key].append(batch[key])
    return {key: np.concatenate(value) for key, value in parts.items()}
