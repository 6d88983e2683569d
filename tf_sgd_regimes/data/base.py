"""The Dataset record every loader returns, and what the engine expects of it."""

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

TASKS = ("classification", "language_model", "autoencoder")
ORDERINGS = ("shuffle", "streams")


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
        if self.task not in TASKS:
            raise ValueError(f"dataset {self.name!r}: task {self.task!r} not in {TASKS}")
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
