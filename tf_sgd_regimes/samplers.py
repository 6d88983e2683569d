"""The engine's sampler for data sets streamed through tf.data (data/streamed.py: ImageNet).

Each packed member reads its own training stream, built from its seed (its own file order,
shuffle and augmentation), distributed over the replicas with
`strategy.distribute_datasets_from_function`, so every input pipeline reads its own shard
(multi-host TPU). The compiled training loop pulls one batch per member per step
(`fetch`, in cross-replica context) and hands each replica its share (`train_batch`).

The loop is traced once and reused across packs, while every pack needs new streams. The
iterators are therefore captured by reference (`capture_call_time_value`): each call of
the compiled loop reads whichever iterators the sampler holds at that moment, instead of
the ones that existed when it was traced.

A pack starts its streams at its first step. A pack resumed from a checkpoint at step s
cannot replay the exact examples it would have seen (skipping s batches means decoding
them); it starts fresh streams from (seed, s) instead: the same distribution, not the
same draws.
"""

import numpy as np
import tensorflow as tf

# Members are evaluated on the training set over this many augmented training images
# (a full pass over ImageNet's 1.28M images would cost a third of an epoch), drawn from
# one fixed stream so every member sees the same ones.
TRAIN_EVAL_SEED = 2**31 - 1


def _stream_seed(seed: int, start_step: int) -> int:
    """The member's seed at a pack's first step; a distinct seed for a resumed stream."""
    if start_step == 0:
        return int(seed)
    return int((int(seed) * 1_000_003 + int(start_step)) % (2**62))


def _relax_batch(dataset):
    """Makes the batch dimension unknown, so one trace serves every batch size."""

    def relax(x, y):
        x = tf.compat.v1.placeholder_with_default(x, [None] + x.shape[1:].as_list())
        y = tf.compat.v1.placeholder_with_default(y, [None] + y.shape[1:].as_list())
        return x, y

    return dataset.map(relax)


class StreamedSampler:
    """The sampler protocol (see engine.make_sampler) over a streamed.StreamedDataset."""

    def __init__(self, dataset, strategy, config):
        self.dataset = dataset
        self.strategy = strategy
        from tf_sgd_regimes import engine  # imported late: engine imports this module lazily

        # XLA needs static shapes (and then the engine keeps one runner per batch size).
        self._static_batch = engine.use_xla(config, strategy)
        self._iterators = ()
        self._key = None  # (seeds, batch_size) of the current streams
        self._next_step = None  # the step the current streams continue from

    # -- training --------------------------------------------------------------------
    def _make_iterator(self, seed: int, batch_size: int):
        dataset = self.dataset
        relax = not self._static_batch

        def stream(context):
            per_replica = context.get_per_replica_batch_size(batch_size)
            data = dataset.train_dataset(per_replica, seed, context)
            return _relax_batch(data) if relax else data

        return iter(self.strategy.distribute_datasets_from_function(stream))

    def host_indices(self, seeds, start_step, num_steps, batch_size, padded_steps):
        """Starts new streams when a pack starts (or resumes); no host-side indices."""
        key = (tuple(int(s) for s in seeds), int(batch_size))
        if key != self._key or start_step != self._next_step:
            self._iterators = tuple(
                self._make_iterator(_stream_seed(seed, start_step), batch_size)
                for seed in key[0])
            self._key = key
        self._next_step = start_step + num_steps
        return np.zeros([len(seeds), 0], np.int32)

    def fetch(self):
        """One batch of every member's stream (cross-replica context, inside the loop)."""
        if not self._iterators:
            raise RuntimeError("StreamedSampler.fetch before host_indices started the streams")
        graph = tf.compat.v1.get_default_graph()
        # Capture in the outermost function graph: loop bodies cannot hold by-reference
        # captures; their own capture of the outer placeholder is an ordinary one.
        while hasattr(getattr(graph, "outer_graph", None), "capture_call_time_value"):
            graph = graph.outer_graph
        if not hasattr(graph, "capture_call_time_value"):  # eager: no trace to outlive
            return tuple(next(iterator) for iterator in self._iterators)
        spec = tuple(iterator._type_spec for iterator in self._iterators)
        with graph.as_default():
            iterators = graph.capture_call_time_value(lambda: self._iterators, spec,
                                                      key=("streamed_sampler", id(self)))
        return tuple(next(iterator) for iterator in iterators)

    def train_batch(self, indices, i, batch_size, replica, replicas, step, seeds, fetched):
        """x [K, B/R, ...], y [K, B/R]: this replica's batch of every member's stream."""
        x = tf.stack([member[0] for member in fetched])
        y = tf.stack([member[1] for member in fetched])
        return x, y

    def reset_carried_state(self, states, index, step, batch_size):
        return states

    # -- evaluation ------------------------------------------------------------------
    def eval_batches(self, split: str, engine):
        """(x, y, weights, carry=False) numpy batches of engine.eval_batch_size.

        "test": the whole evaluation split (padding has weight 0). "train": as many
        augmented training images as the evaluation split holds, from one fixed stream.
        """
        batch = engine.eval_batch_size
        if split == "train":
            count = self.dataset.num_test
            steps = -(-count // batch)
            data = self.dataset.train_dataset(batch, TRAIN_EVAL_SEED, None).take(steps)
            seen = 0
            for x, y in data.as_numpy_iterator():
                weights = (np.arange(seen, seen + batch) < count).astype(np.float32)
                seen += batch
                yield x, y, weights, False
            return
        for x, y, weights in self.dataset.eval_dataset(batch, None).as_numpy_iterator():
            yield x, y, weights.astype(np.float32), False
