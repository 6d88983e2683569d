"""The record of a data set too large for memory, streamed through tf.data (ImageNet)."""

import dataclasses
from typing import Any, Callable

from tf_sgd_regimes.data import base


@dataclasses.dataclass(frozen=True)
class StreamedDataset:
    """A data set the engine reads through tf.data instead of gathering from memory.

    How an engine consumes it (B = global batch size, strategy = tf.distribute strategy):

        train = strategy.distribute_datasets_from_function(
            lambda ctx: data.train_dataset(ctx.get_per_replica_batch_size(B), seed, ctx))
        x, y = next(iter(train))            # per-replica [b, *input_shape] float32, [b] int32
        evaluation = strategy.distribute_datasets_from_function(
            lambda ctx: data.eval_dataset(ctx.get_per_replica_batch_size(B), ctx))
        for x, y, weight in evaluation: ...  # weight 0 marks padding; sum-weighted metrics

    The training stream is infinite (repeat), shuffled and augmented from `seed`: one
    stream per member seed (K packed members with different seeds need K streams; with
    one member per trial, as in the paper's ImageNet runs, one stream). Each input pipeline
    reads its own shard of the files (input_context), so multi-host TPU works. The
    evaluation pass is finite; every pipeline yields the same number of full batches
    (padded with weight-0 examples), so static shapes hold on TPU.

    Attributes:
      name, task, num_outputs, input_shape, split, info: as in base.Dataset.
      num_train: training examples (steps_per_epoch = num_train / B).
      num_test: evaluation examples (before padding).
      train_dataset: (per_replica_batch, seed, input_context|None) -> tf.data.Dataset of
        (x, y) batches, drop_remainder=True.
      eval_dataset: (per_replica_batch, input_context|None) -> tf.data.Dataset of
        (x, y, weight) batches, drop_remainder=True.
    """

    name: str
    task: str
    num_outputs: int
    input_shape: tuple
    num_train: int
    num_test: int
    train_dataset: Callable[..., Any]
    eval_dataset: Callable[..., Any]
    split: str = "test"
    ordering: str = "shuffle"
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.task not in base.TASKS:
            raise ValueError(f"dataset {self.name!r}: task {self.task!r} not in {base.TASKS}")

    def steps_per_epoch(self, batch_size: int) -> float:
        """Optimizer steps in one pass over the training set at this global batch size."""
        return self.num_train / batch_size
