"""A pack's members trained in shards side by side (config.train.member_shards).

With one intra-op thread a pack's kernels keep one core busy; its members split into
consecutive shards, each its own engine._PackRunner with its own variables, train side
by side on threads (Shards). Shards of one shape share one trace and one XLA
compilation: their function takes a shard's variables as arguments (SharedCall).
"""

import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tf_sgd_regimes.samplers import ShuffleSampler


# A runner's variables, in the order a trace shared between shards takes them (SharedCall).
STATE_NAMES = ("weights", "accumulators", "states", "base_lrs", "momenta", "seeds",
               "total_steps", "warmup_steps", "step", "diverged_at", "loss_sum")


class SharedCall:
    """A tf.function shared by the shards of one shape, called with one shard's variables.

    The shards of a pack hold their own variables (they train side by side), but their
    computation is the same: the function takes the variables as its first argument
    instead of capturing them, so it traces (and under XLA compiles) once for every shard
    of that shape. A packed WRN's trace took ~12 s per shard (BENCHMARKS.md, "Members in
    shards"). Quacks like the tf.function where the runner and the tests use it.
    """

    def __init__(self, function, state, relaxed_indices: Optional[int]):
        self.function = function
        self.state = state
        # Members of a runner whose one trace serves every batch size (its indices'
        # length left unknown, as the unshared runner's input_signature does).
        self.relaxed_indices = relaxed_indices

    def _specs(self, args):
        if self.relaxed_indices is None:
            return args
        return (tf.TensorSpec([self.relaxed_indices, None], tf.int32),) + tuple(
            tf.TensorSpec(a.shape, a.dtype) for a in args[1:])

    def __call__(self, *args):
        if self.relaxed_indices is not None and not self.function.experimental_get_tracing_count():
            self.get_concrete_function(*args)  # the first trace: with the length unknown
        return self.function(self.state, *args)

    def get_concrete_function(self, *args):
        return self.function.get_concrete_function(self.state, *self._specs(args))

    def experimental_get_tracing_count(self) -> int:
        return self.function.experimental_get_tracing_count()


SHARDS_FIELD = "config.train.member_shards"


def member_shards(config, strategy, sampler, num_members: int) -> int:
    """How many shards a pack of `num_members` trains in side by side (Shards).

    config.train.member_shards: 0 = auto, the cores this process may run on where a
    pack's kernels run on one intra-op thread (config.train.intra_op_threads = 1: packs
    of tiny models, whose kernels would not fill a second core) on one CPU device, with
    host-side batches (ShuffleSampler); else 1. Big models leave the cores to their
    kernels' threads. A number asks for that many (at most one per member); ValueError
    naming the field where shards cannot run.
    """
    value = config.train.get("member_shards", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{SHARDS_FIELD} must be an integer >= 0 (got {value!r}): 0 = auto, "
                         "1 = the whole pack in one call, N = N shards side by side")
    possible = (int(strategy.num_replicas_in_sync) == 1
                and not isinstance(strategy, tf.distribute.TPUStrategy)
                and type(sampler) is ShuffleSampler)
    if value == 0:
        if not possible or config.train.get("intra_op_threads", 0) != 1:
            return 1
        value = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    elif value > 1 and not possible:
        raise ValueError(f"{SHARDS_FIELD}={value}: shards run on one CPU device with host-side "
                         "batches only (not under several replicas, a TPU, or a streamed or "
                         "language-model data set); use 0 (auto) or 1")
    return max(1, min(int(value), int(num_members)))


def trace_key(runner_key: tuple) -> tuple:
    """What a runner's trace is keyed by: its runner key, where the shards of one shape
    (runner keys that differ in the shard's index alone) share one trace."""
    return runner_key if len(runner_key) == 3 else runner_key[:3] + ("shard",)


class Shards:
    """A pack's members split into consecutive shards, each its own engine._PackRunner,
    whose chunks run side by side on threads: with one intra-op thread (a tiny model's
    packs, cpu_threads.py) one pack's kernels keep one core busy, so the demo's 78 members
    in two shards of 39 train 1.3-1.9x faster on two cores (BENCHMARKS.md, "Members in
    shards"). TensorFlow runs a function call without holding the GIL, and the shards
    share no variable, so the threads need no lock.

    Quacks like an engine._PackRunner where train_pack and the checkpoint read it: members
    are numbered across shards in order, and view() gives the whole pack's variables for a
    checkpoint or the noise probe (copied in; load_view copies a restore back out).
    """

    def __init__(self, parts: Sequence, pool):
        self.parts = list(parts)
        self.pool = pool
        sizes = [part.num_members for part in self.parts]
        ends = np.cumsum(sizes)
        self.bounds = [(int(end - size), int(end)) for size, end in zip(sizes, ends)]
        self.num_members = int(ends[-1])
        first = self.parts[0]
        self.template, self.regularized = first.template, first.regularized
        self.jit_compile, self.unroll = first.jit_compile, first.unroll
        self._view = None

    @property
    def trace_count(self) -> int:
        # Shards of one shape share a trace (and its count): each trace once.
        return sum({id(part._traces): part.trace_count for part in self.parts}.values())

    @property
    def calls(self) -> int:
        return self.parts[0].calls

    @property
    def step(self):
        return self.parts[0].step

    @property
    def compiles_next(self) -> bool:
        return any(part.compiles_next for part in self.parts)

    def _each(self, fn, together: bool = True) -> list:
        """fn(part, (start, end)) for every shard: on the pool's threads when `together`,
        else one after the other (tracing: Keras' tracing state is not thread-safe)."""
        if not together:
            return [fn(part, bound) for part, bound in zip(self.parts, self.bounds)]
        futures = [self.pool.submit(fn, part, bound)
                   for part, bound in zip(self.parts, self.bounds)]
        return [future.result() for future in futures]

    def reset(self, members: Sequence, total_steps: int) -> None:
        self._each(lambda part, b: part.reset(members[b[0]:b[1]], total_steps), False)

    def warm(self, indices: np.ndarray, batch_size: int) -> bool:
        cold = [not part.trace_count for part in self.parts]
        if not any(cold):
            return False
        # Traced in turn (Python, under the GIL; shards of one shape share one trace),
        # then the no-step call that compiles under XLA runs side by side (one
        # compilation per shape: XLA's cache makes a second caller wait for it).
        self._each(lambda part, b: part.trace_only(indices[b[0]:b[1]], batch_size)
                   if not part.trace_count else None, False)
        self._each(lambda part, b: part.train_chunk(indices[b[0]:b[1]], 0, batch_size),
                   not any(part.split_xla for part in self.parts))
        self._each(lambda part, b: part.trace_eval(), False)  # in turn; shared: one traces
        return True

    def train_chunk(self, indices: np.ndarray, num_steps: int, batch_size: int) -> None:
        # A part that has not traced (or compiles next) traces in this call: in turn.
        together = all(part.trace_count and not part.compiles_next for part in self.parts)
        self._each(lambda part, b: part.train_chunk(indices[b[0]:b[1]], num_steps,
                                                    batch_size), together)

    def diverged(self) -> np.ndarray:
        return np.concatenate([part.diverged() for part in self.parts])

    def take_loss_sum(self) -> np.ndarray:
        return np.concatenate([part.take_loss_sum() for part in self.parts])

    def evaluate(self, split: str) -> np.ndarray:
        # In turn: a part's first evaluation traces.
        return np.concatenate(self._each(lambda part, b: part.evaluate(split), False))

    def member_weights(self, k: int) -> list:
        for part, (start, end) in zip(self.parts, self.bounds):
            if start <= k < end:
                return part.member_weights(k - start)
        raise IndexError(f"member {k} of a pack of {self.num_members}")

    def view(self):
        """The whole pack's variables, with the shards' current values copied in."""
        concat = lambda variables: tf.concat(list(variables), 0)  # noqa: E731
        values = {name: [concat(getattr(p, name)[i] for p in self.parts)
                         for i in range(len(getattr(self.parts[0], name)))]
                  for name in ("weights", "accumulators", "states")}
        values["diverged_at"] = concat(p.diverged_at for p in self.parts)
        values["seeds"] = concat(p.seeds for p in self.parts)
        values["step"] = self.parts[0].step.read_value()
        if self._view is None:  # made once per facade, from the first values
            view = type("PackView", (), {})()
            for name, value in values.items():
                setattr(view, name, [tf.Variable(v, trainable=False) for v in value]
                        if isinstance(value, list) else tf.Variable(value, trainable=False))
            view.template, view.regularized = self.template, self.regularized
            view.num_members = self.num_members
            self._view = view
            return view
        for name, value in values.items():
            if isinstance(value, list):
                for variable, v in zip(getattr(self._view, name), value):
                    variable.assign(v)
            else:
                getattr(self._view, name).assign(value)
        return self._view

    def load_view(self) -> None:
        """Copies the view's values (a restored checkpoint) back into the shards."""
        view = self._view
        for part, (start, end) in zip(self.parts, self.bounds):
            for name in ("weights", "accumulators", "states"):
                for mine, whole in zip(getattr(part, name), getattr(view, name)):
                    mine.assign(whole[start:end])
            part.diverged_at.assign(view.diverged_at[start:end])
            part.step.assign(view.step)
