"""The Dataset record every loader returns, and what the engine expects of it."""

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Optional

import numpy as np

from tf_sgd_regimes import atomic
from tf_sgd_regimes.experiments import ConfigError  # exit status 2 on the command line

# The built-in tasks; tasks.names() adds "regression" and any registered tasks.Task.
TASKS = ("classification", "language_model", "autoencoder")
ORDERINGS = ("shuffle", "streams")
DATA_FILE = "data.json"  # a work directory's data fingerprint


def check_task(dataset_name: str, task: str) -> None:
    """Raises ValueError naming the known tasks if `task` is not one."""
    from tf_sgd_regimes import tasks  # loads TensorFlow, which every Dataset's user has

    if task not in tasks.names():
        raise ConfigError(f"dataset {dataset_name!r}: task {task!r} not in {tasks.names()}")


class DataMissingError(FileNotFoundError):
    """Raised when a data set is not on disk; the message says how to get it."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """An in-memory data set.

    Attributes:
      name: registry name, e.g. "digits".
      task: one of TASKS; decides the loss and the metrics (see tasks.py).
      train_x, train_y: training inputs and targets. For ordering="streams" (language
        models) train_x is the 1-D int32 token stream and train_y is unused (None).
      test_x, test_y: the evaluation split, same layout as train.
      num_outputs: classes (classification), vocabulary size (language_model) or
        the flattened input size (autoencoder).
      input_shape: shape of one example (without the batch dimension).
      ordering: "shuffle" (every member draws its own permutation of the training set each
        epoch, from its seed) or "streams" (the token stream split into B parallel streams,
        consecutive windows of `unroll` tokens, no shuffling).
      unroll: window length for ordering="streams".
      augment: optional train-time augmentation, a TF function (x_batch, seed[2], rows=None)
        -> x_batch; rows=(first, total) says x_batch is rows [first, ...) of a batch of
        `total` (one replica's share), to be augmented as that batch's rows would be.
      split: "test" or "validation": which split test_x/test_y hold (reports say which).
      info: free-form provenance (source, citation, preprocessing).
    """

    name: str
    task: str
    train_x: np.ndarray
    train_y: Optional[np.ndarray]
    test_x: np.ndarray
    test_y: Optional[np.ndarray]
    num_outputs: int
    input_shape: tuple
    ordering: str = "shuffle"
    unroll: int = 0
    augment: Optional[Callable[..., Any]] = None
    split: str = "test"
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        check_task(self.name, self.task)
        if self.ordering not in ORDERINGS:
            raise ValueError(f"dataset {self.name!r}: ordering {self.ordering!r} not in {ORDERINGS}")

    @property
    def num_train(self) -> int:
        """Examples in the training set (tokens for a stream)."""
        return int(self.train_x.shape[0])

    def steps_per_epoch(self, batch_size: int) -> float:
        """Optimizer steps in one pass over the training set at this global batch size."""
        if self.ordering == "streams":
            # B parallel streams, each cut into windows of `unroll` tokens (+1 for the target).
            return float(((self.num_train // batch_size) - 1) // self.unroll)
        return self.num_train / batch_size

    @classmethod
    def from_arrays(cls, name: str, train_x, train_y, test_x, test_y, *,
                    task="classification", num_outputs: Optional[int] = None,
                    split: str = "test", info: Optional[dict] = None) -> "Dataset":
        """A Dataset from numpy arrays (one example per row), checked and typed.

        Args:
          name: the data set's name (recorded in the ledger and the report).
          train_x, test_x: inputs [N, ...]; converted to float32.
          train_y, test_y: targets [N] or [N, D]: int class labels (classification,
            int32), real targets (regression, float32), None (autoencoder).
          task: "classification", "regression", "autoencoder", a registered task name or
            a tasks.Task (registered on the way).
          num_outputs: the model's output width; derived when omitted (classes = largest
            label + 1; regression and autoencoder: the target / input width).
          split: "test" or "validation": what test_x/test_y are (reports say which).
          info: free-form provenance (source, preprocessing), shown in the report.
        """
        from tf_sgd_regimes import tasks

        task = tasks.resolve(task)
        arrays = {"train_x": train_x, "test_x": test_x}
        for key, value in arrays.items():
            arrays[key] = np.asarray(value, np.float32)
            if arrays[key].ndim < 1 or len(arrays[key]) == 0:
                raise ConfigError(f"Dataset.from_arrays({name!r}): {key} is empty")
        targets = {"train_y": train_y, "test_y": test_y}
        for key, value in targets.items():
            x = arrays[key.replace("_y", "_x")]
            if task == "autoencoder":
                targets[key] = None
                continue
            if value is None:
                raise ConfigError(f"Dataset.from_arrays({name!r}): {key} is None; a "
                                 f"{task} task needs targets")
            value = np.asarray(value)
            if len(value) != len(x):
                raise ConfigError(f"Dataset.from_arrays({name!r}): {key} has {len(value)} rows "
                                 f"but {key.replace('_y', '_x')} has {len(x)}")
            if task == "classification":
                if not np.issubdtype(value.dtype, np.integer):
                    if not np.all(np.equal(np.mod(value, 1), 0)):
                        raise ConfigError(f"Dataset.from_arrays({name!r}): {key} holds "
                                         "non-integer class labels; a classification "
                                         "task needs labels 0..C-1")
                if value.min() < 0:
                    raise ConfigError(f"Dataset.from_arrays({name!r}): {key} has negative "
                                     "labels; classes must be 0..C-1")
                value = value.astype(np.int32)
            elif np.issubdtype(value.dtype, np.floating) or task == "regression":
                value = value.astype(np.float32)
            targets[key] = value
        if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
            raise ConfigError(f"Dataset.from_arrays({name!r}): train_x examples have shape "
                             f"{arrays['train_x'].shape[1:]}, test_x {arrays['test_x'].shape[1:]}")
        if num_outputs is None:
            if task == "classification":
                num_outputs = int(max(targets["train_y"].max(), targets["test_y"].max())) + 1
            elif task == "autoencoder":
                num_outputs = int(np.prod(arrays["train_x"].shape[1:]))
            else:
                num_outputs = int(np.prod(targets["train_y"].shape[1:]))
        elif task == "classification":
            top = int(max(targets["train_y"].max(), targets["test_y"].max()))
            if top >= num_outputs:
                raise ConfigError(f"Dataset.from_arrays({name!r}): label {top} is out of range "
                                 f"for num_outputs={num_outputs}")
        return cls(name=name, task=task, train_x=arrays["train_x"], train_y=targets["train_y"],
                   test_x=arrays["test_x"], test_y=targets["test_y"],
                   num_outputs=int(num_outputs), input_shape=tuple(arrays["train_x"].shape[1:]),
                   split=split, info=dict(info or {"source": "numpy arrays"}))


def _hash_arrays(digest, arrays) -> None:
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))


def fingerprint(dataset) -> dict:
    """What identifies a data set's content: name, task, sizes, shapes and a hash.

    In-memory data sets hash their arrays (a second or two for CIFAR-sized arrays, once
    per sweep). Streamed ones cannot be read in full: they hash their description and
    `info` (file names, paths, versions), so a data set must say in `info` what it reads.
    """
    cached = getattr(dataset, "_fingerprint", None)
    if cached is not None:
        return dict(cached)
    digest = hashlib.sha256()
    described = {"name": dataset.name, "task": dataset.task,
                 "num_outputs": int(dataset.num_outputs),
                 "input_shape": [int(d) for d in dataset.input_shape],
                 "ordering": getattr(dataset, "ordering", "shuffle"),
                 "split": dataset.split}
    if hasattr(dataset, "train_x"):
        described.update(num_train=int(len(dataset.train_x)), num_test=int(len(dataset.test_x)),
                         unroll=int(dataset.unroll))
        digest.update(json.dumps(described, sort_keys=True).encode())
        _hash_arrays(digest, (dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y))
    else:
        described.update(num_train=int(dataset.num_train), num_test=int(dataset.num_test))
        digest.update(json.dumps(described, sort_keys=True).encode())
        digest.update(json.dumps(dataset.info, sort_keys=True, default=str).encode())
    result = {**described, "hash": digest.hexdigest()[:16]}
    try:
        object.__setattr__(dataset, "_fingerprint", dict(result))
    except (AttributeError, TypeError):
        pass
    return result


def check_workdir_data(workdir: str, data_fingerprint: Optional[dict]) -> None:
    """Refuses a work directory that holds a sweep on another data set; records ours.

    Raised before any compute: a work directory's records are only comparable on one
    data set, and resuming on another would silently mix (or return) the old results.
    """
    if data_fingerprint is None:
        return
    path = os.path.join(workdir, DATA_FILE)
    if os.path.exists(path):
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(
                f"{path} cannot be read ({e}); it records the sweep's data set. Restore it, "
                "or start fresh with a new --workdir") from e
        if saved.get("hash") != data_fingerprint["hash"]:
            differ = sorted(k for k in set(saved) | set(data_fingerprint)
                            if saved.get(k) != data_fingerprint.get(k))
            raise ConfigError(
                f"work directory {workdir} holds a sweep on another data set: the saved one "
                f"is {saved.get('name')!r} ({saved.get('num_train')} train / "
                f"{saved.get('num_test')} test examples, hash {saved.get('hash')}), this one is "
                f"{data_fingerprint['name']!r} ({data_fingerprint.get('num_train')} / "
                f"{data_fingerprint.get('num_test')}, hash {data_fingerprint['hash']}); they "
                f"differ in {', '.join(differ)}. Pass a new --workdir for this data set (or "
                f"delete {workdir}).")
        return
    os.makedirs(workdir, exist_ok=True)
    atomic.write_atomic(path, json.dumps(data_fingerprint, indent=2, sort_keys=True) + "\n")
