"""The training loop: K packed members advance together in one compiled step.

A pack is a set of cells that share model family, data set, batch size and budget and
differ in effective learning rate, momentum and seed. Each member has its own weights
(initialised from its seed), its own momentum accumulators and its own data order (a
permutation of the training set per epoch, drawn from its seed). The members' weights
are stacked on a leading axis and one Keras model evaluates all of them at once through
`stateless_call` vectorised over members (member_map.vectorize), so a pack of K costs a
few batched ops per layer rather than K separate graphs. One tf.function runs
`steps_per_call` steps per call, so Python dispatch is paid once per chunk.

The update is the paper's form, a <- m a + g ; w <- w - lr a (as in
optimizers.PaperMomentum, which Keras users can use with model.fit), with the paper's
schedule (schedules.schedule_factor). The compiled step is reused across packs: the runner
is re-initialised in place, so a sweep over many batch sizes traces once when the batch
size can stay dynamic (no XLA, no batch-shaped state).
"""

import collections
import concurrent.futures
import copy
import dataclasses
import time
from typing import Callable, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_sgd_regimes import experiments
from tf_sgd_regimes import member_map
from tf_sgd_regimes import models as model_registry
from tf_sgd_regimes import optimizers
from tf_sgd_regimes import schedules
from tf_sgd_regimes import shards
from tf_sgd_regimes import tasks
from tf_sgd_regimes.models import layers as model_layers
from tf_sgd_regimes.models import regularization
# Names the training step uses unqualified (they lived in this module before).
from tf_sgd_regimes.pack_checkpoint import PackCheckpoint, Preempted
from tf_sgd_regimes.samplers import make_sampler
from tf_sgd_regimes.sweep import progress


@dataclasses.dataclass(frozen=True)
class Member:
    """One cell of a pack."""

    cell_id: str
    effective_lr: float
    momentum: float
    seed: int

    @property
    def learning_rate(self) -> float:
        return optimizers.learning_rate_from_effective(self.effective_lr, self.momentum)


@dataclasses.dataclass
class MemberResult:
    cell_id: str
    status: str  # "complete" or "diverged"
    metrics: dict
    diverged_step: Optional[int]
    steps_done: int


@dataclasses.dataclass
class ChunkReport:
    """What the engine tells its caller after every chunk of steps."""

    step: int
    total_steps: int
    mean_loss: np.ndarray  # [K] mean training objective over the chunk (NaN if diverged)
    effective_lr: np.ndarray  # [K] effective learning rate at the chunk's last step
    diverged_at: np.ndarray  # [K] first diverged step, -1 while alive
    # Seconds the chunk's steps took (sampling and the compiled call), for the progress
    # ETA; None when the call traced or compiled (one-off cost), or from an engine that
    # does not measure it.
    compute_s: Optional[float] = None
    # Seconds the chunk's runner took to trace (under XLA: and compile) before the chunk,
    # in a call of no steps (_PackRunner.warm); None when it had traced already.
    one_off_s: Optional[float] = None


def _stack(tensors):
    return np.stack([np.asarray(t) for t in tensors])


def _replicated_variable(value, name):
    # Every replica computes the same (all-reduced) update, so any one replica's write
    # is the value; ONLY_FIRST_REPLICA lets the assignment happen in replica context.
    return tf.Variable(value, trainable=False, name=name,
                       synchronization=tf.VariableSynchronization.ON_WRITE,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class _PackRunner:
    """A pack's weights stacked on a leading member axis, and the compiled step over them.

    One Keras model (the template) defines the computation; `stateless_call` evaluates it
    with any weights, and member_map.vectorize turns K such calls into batched ops (one
    matmul for all members instead of K). Gradients, the paper's momentum update and the
    learning-rate schedule are computed for all members at once.
    """

    def __init__(self, engine: "Engine", num_members: int, batch_size: Optional[int],
                 jit_compile: bool = False, shared: Optional[dict] = None):
        """`shared`: a dict the shards of one shape share (see shards.SharedCall); None for a
        runner that traces its own functions, its variables captured."""
        self.engine = engine
        self.jit_compile = jit_compile
        self.num_members = num_members
        self.static_batch = batch_size  # None: the batch size is a tensor argument
        config, strategy = engine.config, engine.strategy
        self.template = engine.build_model(seed=0)
        trainable = self.template.trainable_variables
        non_trainable = self.template.non_trainable_variables
        regularized = {id(w) for w in
                       regularization.regularized_weights(self.template, config.l2_scope)}
        self.regularized = [id(w) in regularized for w in trainable]
        # Slices of the non-trainable state that a language model carries across windows.
        self.train_state_index = _indices_of(non_trainable,
                                             getattr(self.template, "train_state", ()))
        self.eval_state_index = _indices_of(non_trainable,
                                            getattr(self.template, "eval_state", ()))
        k = num_members
        with strategy.scope():
            self.weights = [_replicated_variable(np.zeros([k] + list(w.shape), w.dtype),
                                                 f"w{i}") for i, w in enumerate(trainable)]
            self.accumulators = [_replicated_variable(np.zeros([k] + list(w.shape), w.dtype),
                                                      f"a{i}") for i, w in enumerate(trainable)]
            # A carried state is kept for the global batch ([K, B, ...], every stream);
            # each replica reads and writes its own rows (_replica_rows / _all_rows).
            self.states = [_replicated_variable(
                np.zeros([k] + self._global_shape(i, v.shape), v.dtype), f"s{i}")
                for i, v in enumerate(non_trainable)]
            self.base_lrs = _replicated_variable(np.zeros([k], np.float32), "base_lrs")
            self.momenta = _replicated_variable(np.zeros([k], np.float32), "momenta")
            self.seeds = _replicated_variable(np.zeros([k], np.int64), "seeds")
            self.total_steps = _replicated_variable(np.float32(1), "total_steps")
            self.warmup_steps = _replicated_variable(np.float32(0), "warmup_steps")
            self.step = _replicated_variable(np.int64(0), "step")
            self.diverged_at = _replicated_variable(-np.ones([k], np.int64), "diverged_at")
            self.loss_sum = _replicated_variable(np.zeros([k], np.float32), "loss_sum")
        # Ghost batch norm whose groups span replicas all-reduces inside the model, which
        # tf.vectorized_map cannot differentiate: such packs run their members one by one.
        local = None if batch_size is None else batch_size // engine.replicas
        self.unrolled = any(
            layer.exchanges_across_replicas(local, engine.replicas)
            for layer in self.template._flatten_layers()
            if isinstance(layer, model_layers.GhostBatchNormalization))
        # XLA over several replicas (MirroredStrategy, TPUStrategy): one compiled function
        # cannot span the devices, so the chunk loop stays a plain tf.function that calls
        # strategy.run, and each replica's compute is compiled (_compiled_for_replica).
        # TF 2.21 compiles no CPU collective ("Only compiling NCCL/auto collective is
        # supported, got: ring") and MirroredStrategy calls merge_call for an all-reduce in
        # a nested function off GPUs, so the step is compiled in two parts, split at its
        # all-reduce: gradients (forward, backward) | all-reduce | update (clip, momentum).
        # On a TPU the whole strategy.run is one XLA program; the parts are inlined into it.
        self.split_xla = jit_compile and (
            engine.replicas > 1 or isinstance(strategy, tf.distribute.TPUStrategy))
        self.unroll = unroll_steps(config, jit_compile and not self.split_xla)
        whole_xla = jit_compile and not self.split_xla
        if shared is not None:
            if "train" not in shared:  # the first shard of this shape makes them
                shared["train"] = tf.function(self._shared_train_impl, jit_compile=whole_xla,
                                              reduce_retracing=batch_size is not None)
                shared["eval"] = tf.function(self._shared_eval_impl, reduce_retracing=True)
                shared["traces"] = [0]
            state = tuple(getattr(self, name) for name in shards.STATE_NAMES)
            self._train_chunk = shards.SharedCall(
                shared["train"], state, num_members if batch_size is None else None)
            self._eval_batch = shards.SharedCall(shared["eval"], state, None)
            self._traces = shared["traces"]
        elif batch_size is None:
            # One runner serves every batch size: traced once with the indices' length
            # unknown, not first for the first batch size and again, relaxed, for the
            # second (reduce_retracing), a second trace that cost the digits WRN ~10 s.
            self._train_chunk = tf.function(self._train_chunk_impl, input_signature=[
                tf.TensorSpec([num_members, None], tf.int32),
                tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
        else:
            self._train_chunk = tf.function(self._train_chunk_impl, jit_compile=whole_xla,
                                            reduce_retracing=True)
        if shared is None:
            self._eval_batch = tf.function(self._eval_batch_impl, reduce_retracing=True)
            self._traces = [0]  # one cell: a trace shared between shards counts for each
        self._compiled = {}  # (part, replica) -> tf.function(jit_compile=True)
        self.calls = 0  # calls that trained some steps

    @property
    def trace_count(self) -> int:
        """Traces of the chunk function (shared between the shards of one shape)."""
        return self._traces[0]

    def _bound(self, state) -> "_PackRunner":
        """This runner's computation on `state`'s variables (a shard's, passed in)."""
        bound = copy.copy(self)  # shallow: the engine, template and trace count shared
        bound.__dict__.update(zip(shards.STATE_NAMES, state))
        return bound

    def _shared_train_impl(self, state, indices, num_steps, batch_size=None):
        return self._bound(state)._train_chunk_impl(indices, num_steps, batch_size)

    def _shared_eval_impl(self, state, x, y, weights, states):
        return self._bound(state)._eval_batch_impl(x, y, weights, states)

    # -- state -----------------------------------------------------------------------
    def reset(self, members: Sequence[Member], total_steps: int) -> None:
        """Re-initialises every member in place for a new pack."""
        config = self.engine.config
        # One model per distinct seed, not per member (and none for a seed seen before).
        fresh = [self.engine.initial_values(m.seed) for m in members]
        for i, variable in enumerate(self.weights):
            variable.assign(_stack([trainable[i] for trainable, _ in fresh]))
        for i, variable in enumerate(self.states):
            if self._is_carried(i):  # zero at the start, and shaped by the global batch
                variable.assign(tf.zeros_like(variable))
            else:
                variable.assign(_stack([states[i] for _, states in fresh]))
        for accumulator in self.accumulators:
            accumulator.assign(tf.zeros_like(accumulator))
        self.base_lrs.assign([m.learning_rate for m in members])
        self.momenta.assign([m.momentum for m in members])
        self.seeds.assign([m.seed for m in members])
        self.total_steps.assign(float(total_steps))
        self.warmup_steps.assign(float(config.schedule.warmup_steps))
        self.step.assign(0)
        self.diverged_at.assign(-np.ones([self.num_members], np.int64))
        self.loss_sum.assign(np.zeros([self.num_members], np.float32))

    def _global_shape(self, j: int, shape) -> list:
        """A state's shape with the rows of every replica (the template has one replica's)."""
        shape = list(shape)
        if self._is_carried(j):
            shape[0] *= self.engine.replicas
        return shape

    def member_weights(self, k: int) -> list:
        """Member k's trainable weights as numpy arrays, in the template's order."""
        return [w.numpy()[k] for w in self.weights]

    def view(self) -> "_PackRunner":
        """The whole pack's variables (a checkpoint's and the noise probe's reading)."""
        return self

    def load_view(self) -> None:
        """After the view's variables were written (a restore): nothing to copy here."""

    def diverged(self) -> np.ndarray:
        """[K] step at which each member diverged, -1 while it has not."""
        return self.diverged_at.numpy()

    def take_loss_sum(self) -> np.ndarray:
        """[K] training losses summed since the last call; zeroes the sums."""
        sums = self.loss_sum.numpy()
        self.loss_sum.assign(np.zeros([self.num_members], np.float32))
        return sums

    # -- training --------------------------------------------------------------------
    def train_chunk(self, indices: np.ndarray, num_steps: int, batch_size: int) -> None:
        args = [tf.constant(indices, tf.int32), tf.constant(num_steps, tf.int32)]
        if self.static_batch is None:
            args.append(tf.constant(batch_size, tf.int32))
        self._train_chunk(*args)
        self.calls += num_steps > 0

    def warm(self, indices: np.ndarray, batch_size: int) -> bool:
        """Traces the chunk function (under XLA: and compiles it) in a call of no steps,
        which changes no state, so that the first chunk's time is its compute alone and
        the progress ETA learns the rate from a pack whose only chunk would have traced
        (the digits WRN's B = 512 pack: 28 steps); and the evaluation (trace_eval).
        False when it had traced already.

        Split XLA (split_xla) compiles its parts where they first run, inside the loop:
        there the first chunk with steps still compiles (see compiles_next).
        """
        if self.trace_count:
            return False
        self.train_chunk(indices, 0, batch_size)
        self.trace_eval()
        return True

    def trace_only(self, indices: np.ndarray, batch_size: int) -> None:
        """Traces the chunk function without running it (under XLA the compilation
        waits for the first call): shards.Shards traces in turn and compiles side by side."""
        args = [tf.constant(indices, tf.int32), tf.constant(0, tf.int32)]
        if self.static_batch is None:
            args.append(tf.constant(batch_size, tf.int32))
        self._train_chunk.get_concrete_function(*args)

    @property
    def compiles_next(self) -> bool:
        """The next chunk with steps pays a compilation (split XLA's first)."""
        return self.split_xla and not self.calls

    def _train_chunk_impl(self, indices, num_steps, batch_size=None):
        self._traces[0] += 1  # Python side effect: counts traces, not calls
        if batch_size is None:
            batch_size = self.static_batch
        strategy = self.engine.strategy
        bound = float(self.engine.config.train.divergence_loss)
        # A while loop, not `for i in tf.range(num_steps)`: AutoGraph gives a range loop
        # maximum_iterations=num_steps, which XLA must know at compile time, so every new
        # chunk length (the last chunk of a pack) would compile again.

        def one_step(i):
            # Samplers that stream (tf.data) fetch here, in cross-replica context.
            fetched = self.engine.sampler.fetch()
            per_replica = strategy.run(self._replica_step,
                                       args=(indices, i, batch_size, fetched))
            # Already all-reduced inside the step: every replica holds the same values.
            losses = strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
            finite = tf.math.is_finite(losses)
            bad = tf.logical_or(tf.logical_not(finite), losses > bound)
            newly = tf.logical_and(bad, self.diverged_at < 0)
            self.diverged_at.assign(tf.where(newly, self.step, self.diverged_at))
            self.loss_sum.assign_add(tf.where(finite, losses, tf.zeros_like(losses)))
            self.step.assign_add(1)

        # `unroll` steps per iteration (a Python loop: traced `unroll` times), then the
        # chunk's remainder one by one. Under XLA a one-step body copies most loop-carried
        # weights every step (the update overwrites a buffer the backward pass still
        # reads); in a two-step body those copies go (BENCHMARKS.md "Unrolled XLA loop").
        # Both loops run to a run-time bound, so one compilation serves every length.
        i = tf.constant(0, tf.int32)
        while i + self.unroll <= num_steps:
            for offset in range(self.unroll):
                one_step(i + offset)
            i += self.unroll
        while i < num_steps:
            one_step(i)
            i += 1

    def _compiled_for_replica(self, part: str, fn):
        """`fn` compiled with XLA for the calling replica (split_xla), else `fn` itself.

        One function per replica: a trace captures the variables of the replica it was
        traced on, so replica 0's trace reused on replica 1 would read device 0's copies
        (TF refuses: "Trying to access resource ... located in device CPU:1 from device
        CPU:0"). Each compiles once per shape, on its own device. On a TPU the replica id
        is not known at trace time and one function serves every replica.
        """
        if not self.split_xla:
            return fn
        replica = tf.get_static_value(
            tf.distribute.get_replica_context().replica_id_in_sync_group)
        key = (part, None if replica is None else int(replica))
        if key not in self._compiled:
            self._compiled[key] = tf.function(fn, jit_compile=True)
        return self._compiled[key]

    def _replica_step(self, indices, i, batch_size, fetched):
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        replica = context.replica_id_in_sync_group
        gradients = self._compiled_for_replica("gradients", self._replica_gradients)
        grads, losses, new_states = gradients(indices, i, batch_size, fetched)
        if replicas > 1:
            # Outside the compiled parts (see split_xla); every replica ends with the sums.
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            losses = context.all_reduce(tf.distribute.ReduceOp.SUM, losses)
            new_states = [_all_rows(context, s, replica, replicas)
                          if j in self.train_state_index
                          else s if j in self.eval_state_index  # untouched
                          else context.all_reduce(tf.distribute.ReduceOp.MEAN, s)
                          if s.dtype.is_floating else s
                          for j, s in enumerate(new_states)]
        self._compiled_for_replica("update", self._replica_update)(grads, new_states)
        return losses

    def _replica_gradients(self, indices, i, batch_size, fetched):
        """This replica's share: [K] losses and the members' gradients (summed over the
        replicas by the caller), and the states its forward pass leaves (its own rows of
        a carried state; the eval state as it was)."""
        engine = self.engine
        config, task = engine.config, engine.dataset.task
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        replica = context.replica_id_in_sync_group
        global_batch = tf.cast(batch_size, tf.float32)
        x, y = engine.sampler.train_batch(indices, i, batch_size, replica, replicas,
                                          self.step, self.seeds, fetched)
        if self.static_batch is not None:  # layers (ghost BN) decide on the static shape
            x, y = (tf.ensure_shape(t, [None, self.static_batch // replicas]
                                    + [None] * (len(t.shape) - 2)) for t in (x, y))
        weights = [w.read_value() for w in self.weights]
        states = [s.read_value() for s in self.states]
        if self.train_state_index:
            states = engine.sampler.reset_carried_state(states, self.train_state_index,
                                                        self.step, batch_size)
        # Each replica runs the streams of its rows (the template is shaped for them).
        local_states = [_replica_rows(s, replica, replicas) if self._is_carried(j) else s
                        for j, s in enumerate(states)]
        template = self.template

        def member_loss(args):
            member_weights, member_states, member_x, member_y = args
            outputs, new_states = template.stateless_call(
                list(member_weights), list(member_states), member_x, training=True)
            per_example = tasks.per_example_loss(task, outputs, member_y, member_x)
            return tf.reduce_sum(per_example), new_states

        with tf.GradientTape() as tape:
            tape.watch(weights)
            data_sums, new_states = _map_members(member_loss, (weights, local_states, x, y),
                                                 unrolled=self.unrolled)
            # Scaled by the global batch: gradients are summed across replicas.
            losses = data_sums / global_batch
            l2 = float(config.l2)
            if l2 > 0 and any(self.regularized):
                penalty = 0.5 * l2 * tf.add_n([_per_member_sq(w) for w, r in
                                               zip(weights, self.regularized) if r])
                losses += penalty / replicas
            total = tf.reduce_sum(losses)
        grads = tape.gradient(total, weights)
        new_states = list(new_states)
        if replicas > 1:
            for j in self.eval_state_index:
                new_states[j] = states[j]
        return grads, losses, new_states

    def _replica_update(self, grads, new_states):
        """Clipping (of the all-reduced gradient), the schedule and the momentum update."""
        config = self.engine.config
        clip = float(config.train.clip_grad_norm)
        if clip > 0:
            norms = tf.sqrt(tf.add_n([_per_member_sq(g) for g in grads]))
            scale = tf.minimum(1.0, clip / tf.maximum(norms, 1e-12))
            grads = [g * _expand(scale, g) for g in grads]
        # The paper's form: a <- m a + g ; w <- w - lr a (optimizers.PaperMomentum).
        factor = schedules.Schedule.from_config(config).factor(self.step, self.total_steps)
        learning_rates = self.base_lrs * factor
        own = self._own_copy
        for w, a, g in zip(self.weights, self.accumulators, grads):
            new_a = _expand(self.momenta, a) * a + g
            own(a).assign(new_a)
            own(w).assign_sub(_expand(learning_rates, w) * new_a)
        for s, new in zip(self.states, new_states):
            own(s).assign(tf.cast(new, s.dtype))

    def _own_copy(self, variable):
        """The calling replica's copy of a mirrored variable, in a compiled part.

        Every replica computes the same (all-reduced) update, so each writes its own copy:
        writing the mirrored variable from a nested function would need a merge_call,
        which MirroredStrategy cannot make there. Elsewhere (one replica, a TPU, no XLA),
        the variable itself.
        """
        replica = tf.get_static_value(
            tf.distribute.get_replica_context().replica_id_in_sync_group)
        if not self.split_xla or replica is None or self.engine.replicas == 1:
            return variable
        return self.engine.strategy.experimental_local_results(variable)[int(replica)]

    def _is_carried(self, j: int) -> bool:
        return j in self.train_state_index or j in self.eval_state_index

    # -- evaluation ------------------------------------------------------------------
    def _eval_states(self) -> list:
        """The states an evaluation pass starts from."""
        states = [s.read_value() for s in self.states]
        if self.eval_state_index:  # the evaluation streams' state: [K, eval batch, ...]
            streams = self.engine.eval_batch_size
            states = [tf.zeros([s.shape[0], streams] + s.shape[2:], s.dtype)
                      if j in self.eval_state_index else s for j, s in enumerate(states)]
        return states

    def trace_eval(self) -> None:
        """Traces the evaluation function on the test split's first batch (every batch
        of a split has its shape), as part of a new runner's one-off: the progress ETA
        prices a pack by kind (engine.one_offs), and the trace left in the pack's end
        made a compiling pack's engine time 0.30 s, which priced the plain packs to
        come, paying 0.06-0.11 s (BENCHMARKS.md, issue 13's ETA section)."""
        for x, y, weights, _ in self.engine.sampler.eval_batches("test", self.engine):
            self._eval_batch.get_concrete_function(tf.constant(x), tf.constant(y),
                                                   tf.constant(weights), self._eval_states())
            return

    def evaluate(self, split: str) -> np.ndarray:
        """Per-member sums [K, 3] over a whole split, no augmentation."""
        totals = np.zeros([self.num_members, len(tasks.SUM_NAMES)], np.float64)
        states = self._eval_states()
        for x, y, weights, carry in self.engine.sampler.eval_batches(split, self.engine):
            if not carry and self.eval_state_index:  # a new pass: fresh carried state
                states = [tf.zeros_like(s) if j in self.eval_state_index else s
                          for j, s in enumerate(states)]
            sums, states = self._eval_batch(tf.constant(x), tf.constant(y),
                                            tf.constant(weights), states)
            totals += sums.numpy()
        return totals

    def _eval_batch_impl(self, x, y, weights, states):
        strategy = self.engine.strategy
        per_replica = strategy.run(self._replica_eval, args=(x, y, weights, states))
        sums, new_states = per_replica
        sums = strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)
        # Every replica returns the same states (carried rows reassembled, the rest
        # untouched by an inference call): any one copy is the value.
        new_states = [strategy.experimental_local_results(s)[0] for s in new_states]
        return sums, new_states

    def _replica_eval(self, x, y, weights_mask, states):
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        replica = context.replica_id_in_sync_group
        sums, new_states = self._compiled_for_replica("eval", self._replica_eval_sums)(
            x, y, weights_mask, states)
        new_states = [_all_rows(context, s, replica, replicas) if j in self.eval_state_index
                      else states[j] for j, s in enumerate(new_states)]
        return sums, new_states

    def _replica_eval_sums(self, x, y, weights_mask, states):
        """This replica's rows of the batch: [K, 3] sums, and the states it leaves."""
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        replica = context.replica_id_in_sync_group
        local = tf.shape(x)[0] // replicas
        if x.shape[0] is not None:  # static slices for XLA
            local = x.shape[0] // replicas
        start = tf.cast(replica, tf.int32) * local
        # tf.slice with a static size: a slice t[a:a + n] by a run-time `a` has a dynamic
        # size for XLA (a TPU's replica id is only known at run time).
        x, y, weights_mask = (
            tf.slice(t, tf.stack([start] + [0] * (len(t.shape) - 1)),
                     [local] + [-1] * (len(t.shape) - 1)) for t in (x, y, weights_mask))
        task = self.engine.dataset.task
        template = self.template

        def member_eval(args):
            member_weights, member_states = args
            outputs, new_states = template.stateless_call(
                list(member_weights), list(member_states), x, training=False)
            return tasks.eval_sums(task, outputs, y, x, weights_mask), new_states

        weights = [w.read_value() for w in self.weights]
        local_states = [_replica_rows(s, replica, replicas) if self._is_carried(j) else s
                        for j, s in enumerate(states)]
        return _map_members(member_eval, (weights, local_states))


def _map_members(fn, stacked, unrolled: bool = False):
    """Vectorised over the member axis (member_map.vectorize); a pack of one calls `fn` directly.

    Big models train one member per pack, and for them the vectorisation machinery is pure
    overhead (and turns an LSTM's loop into a converted while_loop). `unrolled` calls `fn`
    once per member instead (for a model with collectives inside, which pfor cannot map).
    """
    members = tf.nest.flatten(stacked)[0].shape[0]
    if unrolled and members != 1:
        flat = [tf.unstack(t, members) for t in tf.nest.flatten(stacked)]
        outs = [fn(tf.nest.pack_sequence_as(stacked, [parts[k] for parts in flat]))
                for k in range(members)]
        return tf.nest.map_structure(lambda *parts: tf.stack(parts), *outs)
    if members != 1:
        # member_map.vectorize: tf.vectorized_map that XLA compiles once per shape and
        # that runs a pack's convolutions as one grouped convolution per layer.
        return member_map.vectorize(fn, stacked)
    # squeeze, not t[0]: its gradient is a free reshape, where a slice's gradient
    # (StridedSliceGrad) writes a fresh zero-padded copy of every weight's gradient.
    single = tf.nest.map_structure(lambda t: tf.squeeze(t, axis=0), stacked)
    return tf.nest.map_structure(lambda t: tf.expand_dims(t, 0), fn(single))


def _indices_of(variables, chosen) -> tuple:
    """Positions in `variables` of the variables in `chosen` (which may hold (h, c) pairs)."""
    flat = [v for item in chosen
            for v in (item if isinstance(item, (tuple, list)) else (item,))]
    chosen_ids = {id(v) for v in flat}
    return tuple(j for j, v in enumerate(variables) if id(v) in chosen_ids)


def _replica_rows(state, replica, replicas: int):
    """A replica's rows (streams) of a carried state [K, B, ...]: rows [r B/R, (r+1) B/R),
    the streams whose tokens it holds (token_windows.stream_batch gives it the same rows)."""
    if replicas == 1:
        return state
    local = state.shape[1] // replicas
    begin = [0, tf.cast(replica, tf.int32) * local] + [0] * (len(state.shape) - 2)
    return tf.slice(state, begin, [state.shape[0], local] + list(state.shape[2:]))


def _all_rows(context, local_state, replica, replicas: int):
    """Reassembles a carried state [K, B, ...] from every replica's rows [K, B/R, ...].

    Each replica places its rows in a zero tensor of the global shape and one all-reduce
    adds them (x + 0 is exact), which every strategy supports. The placing uses static
    shapes only (a select per replica block, no padding by a run-time amount) for XLA.
    """
    if replicas == 1:
        return local_state
    zeros = tf.zeros_like(local_state)
    placed = tf.concat([tf.where(tf.equal(replica, r), local_state, zeros)
                        for r in range(replicas)], axis=1)
    return context.all_reduce(tf.distribute.ReduceOp.SUM, placed)


def _per_member_sq(tensor):
    """Sum of squares over every axis but the leading member axis: shape [K]."""
    return tf.reduce_sum(tf.reshape(tf.square(tensor), [tf.shape(tensor)[0], -1]), axis=1)


def _expand(per_member, like):
    """[K] -> [K, 1, 1, ...] to broadcast against a stacked tensor."""
    return tf.reshape(tf.cast(per_member, like.dtype), [-1] + [1] * (len(like.shape) - 1))


# jit_compile="auto" off a TPU: XLA for these models up to these batch sizes, where it
# measured faster on CPU (tools/benchmark_xla.py; BENCHMARKS.md "XLA or not"). It fuses a
# dense pack's tiny per-member matmuls and the update into few kernels; at larger batches
# oneDNN's matmuls win. XLA also compiles once per batch size (1-15 s on a loaded CPU),
# while without it one trace serves every batch size: the MLP's steps are faster with
# XLA up to B = 64, but in the demo's 10-epoch sweep the time saved exceeds the compile
# only for B <= 4 (the whole sweep ran slower with 64). Convnets stay off (XLA's CPU
# grouped convolution is many times slower than oneDNN's), and so do LSTMs (no XLA form
# packed) and unmeasured models.
XLA_AUTO_MAX_BATCH = {"mlp": 4, "small_autoencoder": 4}
# ... and these convnets up to these batch sizes where TensorFlow's oneDNN kernels are off
# (its default on CPUs without AVX-512, e.g. AMD EPYC). Without oneDNN a pack's
# convolutions have no grouped gradient and run member by member, while under XLA on CPU
# they are batched matmuls (member_map.shifted_conv2d): the digits CNN's packs measured
# 4.5-5.7x faster at B = 32 and 128 and its whole experiment (B = 8-256) 2.7x; the WRN's
# packs 1.5x at B = 32 and 128, but its B = 512 pack under XLA took 6.5 min and 8 GB
# (BENCHMARKS.md, "Packed convolutions without oneDNN"), so larger WRN packs stay
# member by member. With oneDNN on, the grouped convolution without XLA stays.
XLA_AUTO_MAX_BATCH_WITHOUT_ONEDNN = {"small_cnn": 256, "small_wrn": 128}
# How much less an XLA pack's step costs than the same pack's without XLA, per batch size
# (the progress ETA prices the packs it has not seen by the work model): the demo's MLP
# packs with one intra-op thread, measured compute (ChunkReport.compute_s) side by side,
# 3.4x at B = 1, 2.1x at 2, 1.4x at 4 (BENCHMARKS.md, "The demo's ETA against the
# truth"; with TensorFlow's default threads 3.2-4.5x, 2.3-3.5x, 1.5-2.2x). The
# autoencoder's row in "the auto table" shows less at B = 1 (2.3x).
XLA_AUTO_SPEEDUP = {1: 3.4, 2: 2.1, 4: 1.4}
# A measured model's step cost in work units: (B + overhead examples) x (1 + B / knee),
# the knee where its cost per example grows as the batch outgrows the caches (None: none
# measured); a model not measured keeps progress.cell_work's steps x (B + 32). The ETA
# interpolates the measured rates per work unit between batch sizes, so the closer this
# shape, the better it prices a batch size it has not seen (BENCHMARKS.md, issue 13's
# "Each model's step cost"):
# - the demo's MLP packs (78 members, one thread, idle) cost 0.022 ms per work unit at
#   B = 8, 0.030 at 256 and 0.044 at 1024 ("What the packs cost"); with the other core
#   busy the rise starts earlier (2x from B = 32), which the ETA learns pack by pack;
# - the digits CNN's packs in two shards of 30 members on one thread each (its config;
#   oneDNN, AMD EPYC with AVX-512) cost 125-207 us per example at B = 8 to 32 and
#   216-257 at B = 128 and 256, in three recordings: (B + 4) x (1 + B / 500) replayed
#   them at worst 18-22% from 10% of the work, where the shape fitted to 42 members on
#   TensorFlow's default threads, (B + 20) x (1 + B / 160), read 22-36% low (its rate per
#   work unit rose 2x from B = 8 to 128; BENCHMARKS.md, "The CNN's step cost in shards");
# - the digits WRN's cost per example was flat from B = 32 to 512 on TensorFlow's default
#   threads (within 7%); in two shards on one thread each (its config since stop 23) its
#   B = 512 pack costs 1.16-1.57x B = 32's per example (median 1.33), B = 128 0.96-1.17x,
#   in six recordings. (B + 4) x (1 + B / 1000) puts them at 1.31x and 1.00x and replayed
#   three at worst 4-19% from 10% of the work, where (B + 4) flat read 42% and 55% high
#   after the first pack, B = 512 (BENCHMARKS.md, "The first pack's engine time, the
#   running pack's records, the WRN's step cost in shards").
WORK_SHAPE = {"mlp": (32, 1024), "small_cnn": (4, 500), "small_wrn": (4, 1000)}
# Engine.initial_values keeps the initial weights of recent seeds up to this many bytes.
INITIAL_VALUES_BYTES = 256 * 2**20


# config.train.unroll_steps="auto": training steps per loop iteration when the whole chunk
# is one XLA program. XLA's CPU while loop copies the weights that the step's update
# overwrites while its backward pass still reads them (4 of the demo MLP's 6 weights,
# 440 KB per step for 78 members); with two steps per iteration those copies go. Demo
# pack, one core: B = 1 270-295 -> 177-180 us per step (4: 159-162), B = 16 1,168 ->
# 1,042 (4: 945), B = 256 unchanged; compiling costs about 1 s more per shape (4: 3.3 s),
# and the demo's whole sweep took as long (BENCHMARKS.md "Unrolled XLA loop"). Without
# XLA (TensorFlow's executor) unrolling gained nothing measurable; split XLA steps
# (several replicas) compile per part, where the loop is not in the program.
AUTO_UNROLL_XLA = 2


def unroll_steps(config, whole_chunk_xla: bool) -> int:
    """config.train.unroll_steps resolved: an integer is obeyed; "auto" is AUTO_UNROLL_XLA
    when the chunk compiles as one XLA program, else 1."""
    from tf_sgd_regimes import experiments  # light: no TensorFlow import of its own

    value = experiments.auto_or_count(config.train.get("unroll_steps", "auto"),
                                      "train.unroll_steps")
    if value != "auto":
        return value
    return AUTO_UNROLL_XLA if whole_chunk_xla else 1


def use_xla(config, strategy, batch_size: Optional[int] = None) -> bool:
    """config.train.jit_compile resolved for a pack of global batch `batch_size`.

    True/False are obeyed. A TPU always runs XLA. Elsewhere "auto" follows the
    measurements (XLA_AUTO_MAX_BATCH); without a batch size, "auto" means no XLA.
    """
    from tf_sgd_regimes import experiments  # light: no TensorFlow import of its own

    jit = experiments.tri_state(config.train.jit_compile, "train.jit_compile")
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    if jit != "auto":
        return jit
    largest = XLA_AUTO_MAX_BATCH.get(config.model.get("name"), 0)
    if not member_map.onednn_enabled():
        largest = max(largest, XLA_AUTO_MAX_BATCH_WITHOUT_ONEDNN.get(config.model.get("name"), 0))
    # Measured on one device only: several replicas compile the step in parts.
    return (batch_size is not None and batch_size <= largest
            and strategy.num_replicas_in_sync == 1)


def cell_work(config, strategy, steps: int, batch_size: int) -> float:
    """The progress cost model of a cell: progress.cell_work, more at large batches of a
    measured model's shape (WORK_SHAPE), less for a pack that `auto` compiles with XLA on
    CPU (where it was measured to run faster)."""
    work = progress.cell_work(steps, batch_size, *WORK_SHAPE.get(
        config.model.get("name"), (progress.STEP_OVERHEAD_EXAMPLES, None)))
    automatic = experiments.tri_state(config.train.jit_compile, "train.jit_compile") == "auto"
    if (automatic and not isinstance(strategy, tf.distribute.TPUStrategy)
            and use_xla(config, strategy, batch_size)):
        work /= XLA_AUTO_SPEEDUP.get(batch_size, min(XLA_AUTO_SPEEDUP.values()))
    return work


class Engine:
    """Trains packs of members of one experiment under one strategy."""

    def __init__(self, config, dataset, strategy: tf.distribute.Strategy):
        self.config = config
        self.dataset = dataset
        self.strategy = strategy
        self.replicas = int(strategy.num_replicas_in_sync)
        self.jit_compile = use_xla(config, strategy)
        self.sampler = make_sampler(dataset, strategy, config)
        eval_batch = int(config.train.eval_batch_size)
        self.eval_batch_size = max(self.replicas, eval_batch - eval_batch % self.replicas)
        self._runners = {}
        self._shared_functions = {}  # shards.trace_key -> the functions shards of it share
        self._pool = None  # the shards' threads (_pack_runner), made when first needed
        self._shard_sets = {}  # ids of a pack's shard runners -> their shards.Shards
        self._initial = collections.OrderedDict()  # (seed, batch) -> initial values

    def build_model(self, seed: int) -> keras.Model:
        fields = dict(self.config.model)
        name = fields.pop("name")
        if self.dataset.ordering == "streams":
            # The carried state is shaped by the per-replica batch.
            fields["batch_size"] = self._batch_size // self.replicas
            fields["eval_batch_size"] = self.eval_batch_size // self.replicas
        return model_registry.get_model(name, self.dataset.input_shape,
                                        self.dataset.num_outputs, seed=seed, **fields)

    def initial_values(self, seed: int) -> tuple:
        """(trainable, non-trainable) initial values of a member with this seed, as numpy
        arrays in the template's order: build_model(seed)'s variables, read once per seed.

        The model registry's contract is that the seed fixes the initialisation, so the
        members of every pack that share a seed start from the same values; a sweep builds
        one Keras model per seed instead of one per member and pack (the demo built 858,
        about a quarter of its sweep time). The cache keeps the most recent seeds up to
        INITIAL_VALUES_BYTES (a big model trains one member per pack and is not held twice).
        """
        streams = self.dataset.ordering == "streams"
        key = (int(seed), self._batch_size if streams else None)
        if key in self._initial:
            self._initial.move_to_end(key)
            return self._initial[key]
        model = self.build_model(seed=seed)
        values = ([np.array(v) for v in model.trainable_variables],
                  [np.array(v) for v in model.non_trainable_variables])
        self._initial[key] = values
        held = lambda entry: sum(a.nbytes for part in entry for a in part)  # noqa: E731
        while (len(self._initial) > 1
               and sum(held(e) for e in self._initial.values()) > INITIAL_VALUES_BYTES):
            self._initial.popitem(last=False)
        return values

    def cell_work(self, steps: int, batch_size: int) -> float:
        return cell_work(self.config, self.strategy, steps, batch_size)

    def _ghost_batch_sizes(self) -> set:
        """The ghost sizes of the model's ghost batch norms (none: an empty set)."""
        if not hasattr(self, "_ghost_sizes"):
            model = self.build_model(seed=0)
            self._ghost_sizes = {layer.ghost_batch_size for layer in model._flatten_layers()
                                 if isinstance(layer, model_layers.GhostBatchNormalization)}
        return self._ghost_sizes

    def _runner_key(self, num_members: int, batch_size: int) -> tuple:
        """(members, static batch size or None, XLA): packs with one key share a runner."""
        # XLA (and so a TPU) needs static shapes, and an LSTM's carried state is shaped by
        # the batch; any other model keeps the batch dynamic so one trace serves every B.
        jit = use_xla(self.config, self.strategy, batch_size)
        # Ghost BN on several replicas: a known batch tells which groups stay on one replica.
        static = (jit or self.dataset.ordering == "streams"
                  or isinstance(self.strategy, tf.distribute.TPUStrategy)
                  or (self.replicas > 1 and bool(self._ghost_batch_sizes())))
        return (num_members, batch_size if static else None, jit)

    def one_offs(self, packs: Sequence[tuple]) -> List[Optional[str]]:
        """What each of `packs` ((members, batch size), in the order they will train,
        after the packs trained so far) pays once, for the progress ETA to price:

        - "compile": its chunk function traces and XLA compiles it (a new XLA runner:
          one per pack shape);
        - "trace": it traces without XLA (a new runner: one per pack size, whose one
          trace serves every batch size, or one per shape where the batch is static);
        - None: neither (a runner that has traced already).
        tests/test_engine.py checks this against the traces TensorFlow makes.
        """
        # A runner traces (and under XLA compiles) on its first call only: without XLA its
        # indices' length is left unknown, so one trace serves every batch size; with a
        # static batch its indices are always [members, steps_per_call x B].
        traced = {shards.trace_key(key) for key, runner in self._runners.items()
                  if runner.trace_count}
        kinds = []
        for members, batch_size in packs:
            keys = [shards.trace_key(key)
                    for key in self._shard_keys(int(members), int(batch_size))]
            if all(key in traced for key in keys):
                kinds.append(None)
                continue
            traced.update(keys)
            kinds.append("compile" if keys[0][2] else "trace")
        return kinds

    def _shard_sizes(self, num_members: int) -> List[int]:
        """Members per shard of a pack (member_shards), the first ones one larger."""
        count = shards.member_shards(self.config, self.strategy, self.sampler, num_members)
        return [num_members // count + (i < num_members % count) for i in range(count)]

    def _shard_keys(self, num_members: int, batch_size: int) -> List[tuple]:
        """The runner keys of a pack's shards: one runner per (shape, shard), one trace
        per shape (shards.trace_key)."""
        sizes = self._shard_sizes(num_members)
        if len(sizes) == 1:
            return [self._runner_key(num_members, batch_size)]
        return [self._runner_key(size, batch_size) + (i,) for i, size in enumerate(sizes)]

    def _pack_runner(self, num_members: int, batch_size: int):
        """The runner of a pack: a _PackRunner, or shards.Shards of several trained side by side."""
        sizes = self._shard_sizes(num_members)
        if len(sizes) == 1:
            return self._runner(num_members, batch_size)
        if self._pool is None or self._pool._max_workers < len(sizes):
            self._pool = concurrent.futures.ThreadPoolExecutor(
                len(sizes), thread_name_prefix="pack-shard")
        parts = [self._runner(size, batch_size, shard=i) for i, size in enumerate(sizes)]
        key = tuple(id(part) for part in parts)
        if key not in self._shard_sets:  # one facade per set of parts (its view's variables)
            self._shard_sets[key] = shards.Shards(parts, self._pool)
        return self._shard_sets[key]

    def _runner(self, num_members: int, batch_size: int,
                shard: Optional[int] = None) -> _PackRunner:
        key = self._runner_key(num_members, batch_size)
        if shard is not None:  # one runner per shard: shards run at once, on their own state
            key = key + (shard,)
        jit = key[2]
        if (jit and num_members > 1 and self.dataset.ordering == "streams"
                and not isinstance(self.strategy, tf.distribute.TPUStrategy)):
            # Vectorising the LSTM's time loop over members makes TensorLists that XLA
            # cannot size (TensorListReserve in a while loop), so it fails to compile.
            raise ValueError(
                f"config.train.jit_compile=True cannot compile a pack of {num_members} "
                "language models (the vectorised LSTM loop has no XLA form); use "
                "--config.train.jit_compile=auto (or false), or config.sweep.pack_size=1")
        if jit and self.replicas > 1 and not isinstance(self.strategy,
                                                        tf.distribute.TPUStrategy):
            spanning = sorted((size for size in self._ghost_batch_sizes()
                               if size is None or (batch_size // self.replicas) % size),
                              key=lambda size: size or 0)
            if spanning:
                # Those groups all-reduce their sums inside the forward pass, and XLA on
                # CPU/GPU here compiles no such collective (see _PackRunner.split_xla).
                size = spanning[0] or batch_size
                raise ValueError(
                    f"config.train.jit_compile=True: ghost batch norm groups of "
                    f"{size} examples span replicas at batch size {batch_size} on "
                    f"{self.replicas} replicas ({batch_size // self.replicas} examples "
                    f"each, ghost batch size {size}); XLA cannot compile their all-reduce "
                    f"under {type(self.strategy).__name__}. Use "
                    "--config.train.jit_compile=false (or auto), batch sizes of at least "
                    f"{self.replicas} x {size}, or fewer replicas")
        if key not in self._runners:
            shared = None
            if shard is not None:  # the shards of one shape share their functions
                shared = self._shared_functions.setdefault(shards.trace_key(key), {})
            self._runners[key] = _PackRunner(self, num_members, key[1], jit, shared)
        return self._runners[key]

    def train_pack(
        self,
        members: Sequence[Member],
        batch_size: int,
        total_steps: int,
        on_chunk: Optional[Callable[[ChunkReport], None]] = None,
        checkpoint: Optional["PackCheckpoint"] = None,
        should_stop: Optional[Callable[[], bool]] = None,
    ) -> List[MemberResult]:
        """Trains every member for `total_steps` steps and evaluates the survivors.

        Args:
          members: the pack's cells.
          batch_size: the global batch size.
          total_steps: the budget in steps (the schedule is laid out over it).
          on_chunk: called after every chunk of `steps_per_call` steps, and after a
            checkpoint has been written when checkpointing is on.
          checkpoint: where and how often to save the pack's state; a pack with a
            matching checkpoint resumes from it.
          should_stop: polled after every chunk; True saves a checkpoint and raises
            Preempted (e.g. on SIGTERM).
        """
        if batch_size % self.replicas and self.dataset.ordering != "streams":
            for size in self._ghost_batch_sizes():  # the ghost-BN message names its size
                model_layers.check_layout(batch_size, self.replicas, size)
        if batch_size % self.replicas:
            raise ValueError(f"batch size {batch_size} is not divisible by the "
                             f"{self.replicas} replicas; the batch size is the global batch: "
                             "pick config.sweep.batch_sizes that are multiples of it")
        self._batch_size = batch_size
        runner = self._pack_runner(len(members), batch_size)
        runner.reset(members, total_steps)
        identity = {"cells": [m.cell_id for m in members], "batch_size": batch_size,
                    "total_steps": total_steps}
        step = checkpoint.restore(runner, identity) if checkpoint is not None else 0
        steps_per_call = int(self.config.train.steps_per_call)
        seeds = [m.seed for m in members]
        # --- gradient noise scale hook (config.train.noise_scale; None when disabled):
        # B_simple of every member at step 0 and at total_steps // 2 (a chunk ends there).
        from tf_sgd_regimes import noise_probe

        probe = noise_probe.PackProbe.from_config(self, runner.view(), total_steps)

        def measure(step):
            if probe is not None and probe.due(step):
                probe.runner = runner.view()  # the whole pack's values as of now
                probe.measure_if_due(step)

        if probe is not None and checkpoint is not None:
            # A resumed pack keeps what it measured before.
            probe.values.update(checkpoint.restored_extra.get("noise_probe", {}))
        measure(step)
        # --- end of hook
        while step < total_steps:
            n = min(steps_per_call, total_steps - step)
            n = probe.clip(step, n) if probe is not None else n
            started = time.perf_counter()
            indices = self.sampler.host_indices(seeds, step, n, batch_size, steps_per_call)
            sampled_s, one_off_s = time.perf_counter() - started, None
            if runner.warm(indices, batch_size):  # the runner's first call: a one-off
                one_off_s = time.perf_counter() - started - sampled_s
            traces, compiles = runner.trace_count, runner.compiles_next
            started = time.perf_counter()
            runner.train_chunk(indices, n, batch_size)  # returns when done (synchronous eager)
            compute_s = (sampled_s + time.perf_counter() - started
                         if runner.trace_count == traces and not compiles else None)
            step += n
            measure(step)
            diverged_at = runner.diverged()
            loss_sum = runner.take_loss_sum()
            finished = step >= total_steps or bool(np.all(diverged_at >= 0))
            stop = should_stop is not None and should_stop()
            if checkpoint is not None and (stop or (not finished and checkpoint.due())):
                checkpoint.save(runner, identity, step,
                                extra={"noise_probe": probe.values} if probe else None)
            if on_chunk is not None:
                mean_loss = loss_sum / n
                mean_loss[diverged_at >= 0] = np.nan
                lr_factor = float(schedules.Schedule.from_config(self.config).factor_np(
                    step - 1, total_steps))
                on_chunk(ChunkReport(step, total_steps, mean_loss,
                                     np.array([m.effective_lr * lr_factor for m in members]),
                                     diverged_at.copy(), compute_s, one_off_s))
            if stop:
                raise Preempted(f"stopped at step {step} of {total_steps}; checkpoint saved")
            if finished:
                break
        results = self._final_results(runner, members, step)
        if probe is not None:
            probe.add_metrics(results)  # noise_scale_init / noise_scale_mid into the record
        if checkpoint is not None:
            checkpoint.clear()
        return results

    def _final_results(self, runner, members, steps_done) -> List[MemberResult]:
        dataset, task = self.dataset, self.dataset.task
        diverged_at = runner.diverged()
        alive = diverged_at < 0
        test = runner.evaluate("test") if alive.any() else None
        train = runner.evaluate("train") if alive.any() else None
        results = []
        for k, member in enumerate(members):
            metrics, status, diverged_step = {}, "complete", None
            if alive[k]:
                metrics.update(tasks.metrics_from_sums(task, test[k], dataset.split))
                metrics.update(tasks.metrics_from_sums(task, train[k], "train"))
                if self.config.l2 > 0 and any(runner.regularized):
                    penalty = 0.5 * float(self.config.l2) * sum(
                        float(np.sum(np.square(w))) for w, r in
                        zip(runner.member_weights(k), runner.regularized) if r)
                    metrics["train_data_loss"] = metrics["train_loss"]
                    metrics["train_loss"] = tasks.per_token_objective(
                        task, metrics["train_loss"], penalty, dataset.input_shape)
                if not all(np.isfinite(v) for v in metrics.values()):
                    status, diverged_step = "diverged", steps_done
            else:
                status, diverged_step = "diverged", int(diverged_at[k])
            if status == "diverged":
                metrics = {name: None for name in tasks.metric_names(task, dataset.split)}
            results.append(MemberResult(member.cell_id, status, metrics, diverged_step,
                                        steps_done))
        return results
