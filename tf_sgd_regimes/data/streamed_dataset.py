"""The record of a data set too large for memory, streamed through tf.data (ImageNet)."""

import dataclasses
from typing import Any, Callable, Optional

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
        base.check_task(self.name, self.task)

    def steps_per_epoch(self, batch_size: int) -> float:
        """Optimizer steps in one pass over the training set at this global batch size."""
        return self.num_train / batch_size

    @classmethod
    def from_tf_data(cls, name: str, train, test, *, task="classification",
                     num_outputs: int, num_train: Optional[int] = None,
                     num_test: Optional[int] = None, shuffle_buffer: int = 10_000,
                     split: str = "test", info: Optional[dict] = None) -> "StreamedDataset":
        """A StreamedDataset from two tf.data.Datasets of single (x, y) examples.

        The adapter does the engine's part: each member's training stream is the train
        set sharded per input pipeline, repeated, shuffled from the member's seed and
        batched; the evaluation pass is sharded and padded with weight-0 examples to
        whole batches. Map, decode or augment in `train` itself (augmentation that should
        differ per member seed belongs in a loader of your own; see data/imagenet.py).

        Args:
          train, test: tf.data.Dataset of unbatched (x, y) pairs, finite.
          task: a task name or tasks.Task; num_outputs: the model's output width.
          num_train, num_test: example counts; read from the datasets' cardinality when
            known, else counted once (a pass over the data).
          info: provenance; name the files you read here: it is part of the data
            fingerprint that keeps a work directory on one data set.
        """
        import tensorflow as tf

        from tf_sgd_regimes import tasks

        task = tasks.resolve(task)

        def count(data, given, which):
            if given is not None:
                return int(given)
            known = int(data.cardinality())
            if known >= 0:
                return known
            if known == int(tf.data.INFINITE_CARDINALITY):
                raise ValueError(f"StreamedDataset.from_tf_data({name!r}): the {which} "
                                 "dataset is infinite; pass a finite one (the adapter repeats "
                                 "the training set itself)")
            return int(data.reduce(0, lambda n, _: n + 1))

        num_train, num_test = count(train, num_train, "train"), count(test, num_test, "test")
        x_spec, y_spec = train.element_spec
        input_shape = tuple(int(d) for d in x_spec.shape)

        def train_dataset(batch_size, seed, input_context=None):
            data = train
            if input_context is not None and input_context.num_input_pipelines > 1:
                data = data.shard(input_context.num_input_pipelines,
                                  input_context.input_pipeline_id)
            data = data.repeat().shuffle(min(shuffle_buffer, num_train), seed=int(seed))
            data = data.map(lambda x, y: (tf.cast(x, tf.float32), y))
            return data.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

        def eval_dataset(batch_size, input_context=None):
            pipelines = input_context.num_input_pipelines if input_context else 1
            pipeline = input_context.input_pipeline_id if input_context else 0
            data = test.shard(pipelines, pipeline) if pipelines > 1 else test
            data = data.map(lambda x, y: (tf.cast(x, tf.float32), y, tf.constant(1.0)))
            per_pipeline = -(-num_test // pipelines)
            padded = -(-per_pipeline // batch_size) * batch_size
            padding = tf.data.Dataset.from_tensors(
                (tf.zeros(x_spec.shape, tf.float32), tf.zeros(y_spec.shape, y_spec.dtype),
                 tf.constant(0.0))).repeat()
            data = data.concatenate(padding).take(padded)
            return data.batch(batch_size, drop_remainder=True)

        return cls(name=name, task=task, num_outputs=int(num_outputs),
                   input_shape=input_shape, num_train=num_train, num_test=num_test,
                   train_dataset=train_dataset, eval_dataset=eval_dataset, split=split,
                   info=dict(info or {"source": "tf.data"}))
