"""The engine's samplers: where each packed member's training batches come from.

The sampler protocol (engine.Engine calls it): fetch() (cross-replica), train_batch(...)
(per replica), host_indices(...), reset_carried_state(...), eval_batches(split, engine).
`make_sampler` picks one per data set:
  ShuffleSampler   in-memory arrays (data/base.Dataset): a permutation per member and epoch
  StreamSampler    language models (ordering "streams"): data/token_windows.py's windows
  StreamedSampler  tf.data pipelines (data/streamed_dataset.StreamedDataset: ImageNet)

StreamedSampler: each packed member reads its own training stream, built from its seed
(its own file order, shuffle and augmentation), distributed over the replicas with
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

from typing import Sequence

import numpy as np
import tensorflow as tf

from tf_sgd_regimes.data import token_windows


def _targets(dataset, split: str):
    """Targets of a split; an autoencoder's targets are its inputs (y is None)."""
    x = dataset.train_x if split == "train" else dataset.test_x
    y = dataset.train_y if split == "train" else dataset.test_y
    return y if y is not None else np.zeros([len(x)], np.int32)


class ShuffleSampler:
    """Each member sees its own permutation of the training set every epoch.

    Indices are drawn on the host (numpy, from (member seed, epoch)) for the steps of a
    chunk and passed in as one tensor; batches run across epoch boundaries so that the
    budget `steps = epochs * N / B` uses every example the same number of times.
    """

    def __init__(self, dataset, strategy):
        self.dataset = dataset
        self.num_train = dataset.num_train
        with strategy.scope():
            self.train_x = tf.constant(dataset.train_x)
            self.train_y = tf.constant(_targets(dataset, "train"))
        self._permutations = {}

    def _permutation(self, seed: int, epoch: int) -> np.ndarray:
        key = (seed, epoch)
        if key not in self._permutations:
            if len(self._permutations) > 256:
                self._permutations.clear()
            rng = np.random.Generator(np.random.PCG64([seed, epoch]))
            self._permutations[key] = rng.permutation(self.num_train).astype(np.int32)
        return self._permutations[key]

    def host_indices(self, seeds: Sequence[int], start_step: int, num_steps: int,
                     batch_size: int, padded_steps: int) -> np.ndarray:
        """[K, padded_steps * B] training-set indices for the chunk's steps."""
        positions = start_step * batch_size + np.arange(num_steps * batch_size, dtype=np.int64)
        epochs = positions // self.num_train
        within = positions % self.num_train
        out = np.zeros([len(seeds), padded_steps * batch_size], np.int32)
        for k, seed in enumerate(seeds):
            row = np.empty(within.shape, dtype=np.int32)
            for epoch in np.unique(epochs):
                mask = epochs == epoch
                row[mask] = self._permutation(int(seed), int(epoch))[within[mask]]
            out[k, : len(row)] = row
        return out

    def fetch(self):
        return ()

    def train_batch(self, indices, i, batch_size, replica, replicas, step, seeds, fetched):
        """x [K, B/R, ...], y [K, B/R]: this replica's share of every member's batch."""
        local = batch_size // replicas
        start = i * batch_size + replica * local
        # A gather of `local` columns from `start`, not tf.slice(indices, [0, start], ...):
        # XLA takes a Slice's begin as a compile-time constant, so where `i` enters a
        # compiled function as an argument (the gradient part of a step split across
        # replicas, engine._PackRunner.split_xla) every step index of a chunk compiled
        # again: steps_per_call compilations of the forward and backward pass per
        # replica (measured, BENCHMARKS.md "Replica-count independence"). A gather's
        # indices are ordinary data, and its size is static when the batch is (XLA).
        members = indices.shape[0]
        idx = tf.gather(indices, start + tf.range(local), axis=1)
        idx.set_shape([members, local if isinstance(local, int) else None])
        x = tf.gather(self.train_x, idx)
        y = tf.gather(self.train_y, idx)
        if self.dataset.augment is not None:
            # Per member, from its own seed: unrolled because stateless random ops with a
            # per-member seed do not vectorise.
            # Drawn for the global batch and sliced, so replicas do not change the draws.
            rows = (tf.cast(replica, tf.int32) * local, batch_size)
            x = tf.stack([self.dataset.augment(x[k], tf.stack([seeds[k], step * 1024]),
                                               rows=rows)
                          for k in range(members)])
        return x, y

    def reset_carried_state(self, states, index, step, batch_size):
        return states

    def eval_batches(self, split: str, engine):
        """(x, y, weights, carry) batches over a whole split, padded to equal size."""
        dataset = self.dataset
        x = dataset.train_x if split == "train" else dataset.test_x
        y = _targets(dataset, split)
        batch = engine.eval_batch_size
        for start in range(0, len(x), batch):
            xb, yb = x[start:start + batch], y[start:start + batch]
            weights = np.ones([batch], np.float32)
            if len(xb) < batch:  # pad so every replica gets an equal slice
                pad = batch - len(xb)
                weights[len(xb):] = 0.0
                xb = np.concatenate([xb, np.repeat(xb[:1], pad, axis=0)])
                yb = np.concatenate([yb, np.repeat(yb[:1], pad, axis=0)])
            yield xb, yb, weights, False


class StreamSampler:
    """Language models: B parallel streams, consecutive windows, no shuffling.

    Every member reads the same windows (the paper's LSTM has no data shuffling); seeds
    change initialisation and dropout. The carried LSTM state is zeroed at the start of
    every pass over the training stream and of every evaluation pass.
    """

    def __init__(self, dataset, strategy):
        self.dataset = dataset
        with strategy.scope():
            self.tokens = tf.constant(dataset.train_x, tf.int32)

    def host_indices(self, seeds, start_step, num_steps, batch_size, padded_steps):
        return np.zeros([len(seeds), 0], np.int32)

    def fetch(self):
        return ()

    def train_batch(self, indices, i, batch_size, replica, replicas, step, seeds, fetched):
        x, y = token_windows.stream_batch(self.tokens, batch_size, self.dataset.unroll,
                                          step, replica, replicas)
        members = indices.shape[0]
        return (tf.broadcast_to(x[None], tf.concat([[members], tf.shape(x)], 0)),
                tf.broadcast_to(y[None], tf.concat([[members], tf.shape(y)], 0)))

    def reset_carried_state(self, states, index, step, batch_size):
        windows = token_windows.windows_per_epoch(self.dataset.num_train, batch_size,
                                                  self.dataset.unroll)
        fresh = tf.equal(step % tf.cast(windows, step.dtype), 0)
        return [tf.where(fresh, tf.zeros_like(s), s) if j in index else s
                for j, s in enumerate(states)]

    def eval_batches(self, split: str, engine):
        dataset = self.dataset
        tokens = dataset.train_x if split == "train" else dataset.test_x
        # Every target of the split, once (training windows drop the tail); per-token weights.
        yield from token_windows.eval_windows(tokens, engine.eval_batch_size, dataset.unroll)


def make_sampler(dataset, strategy, config):
    """The sampler for `dataset` (the protocol is in this module's docstring)."""
    if hasattr(dataset, "train_dataset"):  # data/streamed_dataset.StreamedDataset (ImageNet)
        return StreamedSampler(dataset, strategy, config)
    if dataset.ordering == "streams":
        return StreamSampler(dataset, strategy)
    return ShuffleSampler(dataset, strategy)


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
    """The sampler protocol (see make_sampler) over a streamed_dataset.StreamedDataset."""

    def __init__(self, dataset, strategy, config):
        self.dataset = dataset
        self.strategy = strategy
        from tf_sgd_regimes import engine  # imported late: engine imports this module

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
