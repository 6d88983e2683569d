"""The training loop: K packed members advance together in one compiled step.

A pack is a set of cells that share model family, data set, batch size and budget and
differ in effective learning rate, momentum and seed. Each member has its own model
(initialised from its seed), its own optimizer (the paper's form, optimizers.py) and its
own data order (a permutation of the training set per epoch, drawn from its seed). One
tf.function runs `steps_per_call` steps of all members per call, so the Python dispatch
cost is paid once per chunk rather than once per member and step.

The compiled function is reused across packs: models and optimizers live in a runner
that is re-initialised in place for the next pack (new weights from the member's seed,
zeroed accumulators, new learning rates), so a sweep of many batch sizes traces once
when the batch size can stay dynamic (no XLA, no batch-shaped state).
"""

import dataclasses
import time
from typing import Callable, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_sgd_regimes import models as model_registry
from tf_sgd_regimes import optimizers
from tf_sgd_regimes import schedules
from tf_sgd_regimes import tasks
from tf_sgd_regimes.models import regularization


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


class _MemberSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The paper's schedule with its base rate and budget held in variables.

    Variables rather than Python numbers let one compiled step serve every pack.
    """

    def __init__(self, base_lr, total_steps, decay_factor, warmup_steps):
        self.base_lr = base_lr
        self.total_steps = total_steps
        self.decay_factor = decay_factor
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        factor = schedules.schedule_factor(
            tf.cast(step, tf.float32), self.total_steps, self.decay_factor, self.warmup_steps)
        return tf.cast(self.base_lr, tf.float32) * factor

    def get_config(self):  # pragma: no cover - engine-internal, never serialised
        return {}


class _PackRunner:
    """K models + K optimizers + the compiled chunk and evaluation functions."""

    def __init__(self, engine: "Engine", num_members: int, batch_size: Optional[int]):
        self.engine = engine
        self.num_members = num_members
        self.static_batch = batch_size  # None: the batch size is a tensor argument
        config, dataset, strategy = engine.config, engine.dataset, engine.strategy
        with strategy.scope():
            self.models = [engine.build_model(seed=k) for k in range(num_members)]
            self.base_lrs = [tf.Variable(0.0, trainable=False, name=f"base_lr_{k}")
                             for k in range(num_members)]
            self.total_steps = tf.Variable(1.0, trainable=False, name="total_steps")
            self.warmup_steps = tf.Variable(0.0, trainable=False, name="warmup_steps")
            self.optimizers = []
            for k in range(num_members):
                schedule = _MemberSchedule(self.base_lrs[k], self.total_steps,
                                           float(config.schedule.decay_factor), self.warmup_steps)
                optimizer = optimizers.PaperMomentum(learning_rate=schedule, momentum=0.0)
                optimizer.build(self.models[k].trainable_variables)
                self.optimizers.append(optimizer)
            self.seeds = tf.Variable(tf.zeros([num_members], tf.int64), trainable=False)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.diverged_at = tf.Variable(-tf.ones([num_members], tf.int64), trainable=False)
            self.loss_sum = tf.Variable(tf.zeros([num_members]), trainable=False)
        self.regularized = [regularization.regularized_weights(m, config.l2_scope)
                            for m in self.models]
        jit = engine.jit_compile
        self._train_chunk = tf.function(self._train_chunk_impl, jit_compile=jit,
                                        reduce_retracing=True)
        self._eval_batch = tf.function(self._eval_batch_impl, reduce_retracing=True)
        self.trace_count = 0

    # -- state -----------------------------------------------------------------------
    def reset(self, members: Sequence[Member], total_steps: int) -> None:
        """Re-initialises every member in place for a new pack."""
        config = self.engine.config
        for k, member in enumerate(members):
            fresh = self.engine.build_model(seed=member.seed)
            self.models[k].set_weights(fresh.get_weights())
            optimizer = self.optimizers[k]
            optimizer.iterations.assign(0)
            for accumulator in optimizer.accumulators:
                accumulator.assign(tf.zeros_like(accumulator))
            optimizer.momentum_variable.assign(member.momentum)
            self.base_lrs[k].assign(member.learning_rate)
        self.total_steps.assign(float(total_steps))
        self.warmup_steps.assign(float(config.schedule.warmup_steps))
        self.seeds.assign([m.seed for m in members])
        self.step.assign(0)
        self.diverged_at.assign(-np.ones([self.num_members], np.int64))
        self.loss_sum.assign(np.zeros([self.num_members], np.float32))

    # -- training --------------------------------------------------------------------
    def train_chunk(self, indices: np.ndarray, num_steps: int, batch_size: int) -> None:
        args = [tf.constant(indices, tf.int32), tf.constant(num_steps, tf.int32)]
        if self.static_batch is None:
            args.append(tf.constant(batch_size, tf.int32))
        self._train_chunk(*args)

    def _train_chunk_impl(self, indices, num_steps, batch_size=None):
        self.trace_count += 1  # Python side effect: counts traces, not calls
        if batch_size is None:
            batch_size = self.static_batch
        engine = self.engine
        bound = float(engine.config.train.divergence_loss)
        for i in tf.range(num_steps):
            per_replica = engine.strategy.run(self._replica_step, args=(indices, i, batch_size))
            losses = engine.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            finite = tf.math.is_finite(losses)
            bad = tf.logical_or(tf.logical_not(finite), losses > bound)
            newly = tf.logical_and(bad, self.diverged_at < 0)
            self.diverged_at.assign(tf.where(newly, self.step, self.diverged_at))
            self.loss_sum.assign_add(tf.where(finite, losses, tf.zeros_like(losses)))
            self.step.assign_add(1)

    def _replica_step(self, indices, i, batch_size):
        engine = self.engine
        config, dataset = engine.config, engine.dataset
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        replica = context.replica_id_in_sync_group
        global_batch = tf.cast(batch_size, tf.float32)
        l2 = float(config.l2)
        clip = float(config.train.clip_grad_norm)
        losses = []
        for k in range(self.num_members):
            x, y = engine.sampler.train_batch(k, indices, i, batch_size, replica, replicas,
                                              self.step, self.seeds)
            model = self.models[k]
            with tf.GradientTape() as tape:
                outputs = model(x, training=True)
                per_example = tasks.per_example_loss(dataset.task, outputs, y, x)
                # Scaled by the global batch: the optimizer sums gradients across replicas.
                loss = tf.reduce_sum(per_example) / global_batch
                if l2 > 0 and self.regularized[k]:
                    penalty = 0.5 * l2 * tf.add_n(
                        [tf.reduce_sum(tf.square(w)) for w in self.regularized[k]])
                    loss += penalty / replicas
            variables = model.trainable_variables
            grads = tape.gradient(loss, variables)
            if clip > 0:
                grads = _clip_global(grads, clip, context, replicas)
            self.optimizers[k].apply_gradients(zip(grads, variables))
            losses.append(loss)
        return tf.stack(losses)

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, x: np.ndarray, y: Optional[np.ndarray]) -> np.ndarray:
        """Per-member sums [K, 3] over a whole split, in eval batches, no augmentation."""
        engine = self.engine
        batch = engine.eval_batch_size
        totals = np.zeros([self.num_members, len(tasks.SUM_NAMES)], np.float64)
        for start in range(0, len(x), batch):
            xb = x[start:start + batch]
            yb = y[start:start + batch] if y is not None else np.zeros([len(xb)], np.int32)
            weights = np.ones([batch], np.float32)
            if len(xb) < batch:  # pad so every replica gets an equal slice
                pad = batch - len(xb)
                weights[len(xb):] = 0.0
                xb = np.concatenate([xb, np.repeat(xb[:1], pad, axis=0)])
                yb = np.concatenate([yb, np.repeat(yb[:1], pad, axis=0)])
            totals += self._eval_batch(tf.constant(xb), tf.constant(yb),
                                       tf.constant(weights)).numpy()
        return totals

    def _eval_batch_impl(self, x, y, weights):
        per_replica = self.engine.strategy.run(self._replica_eval, args=(x, y, weights))
        return self.engine.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def _replica_eval(self, x, y, weights):
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        replica = context.replica_id_in_sync_group
        local = tf.shape(x)[0] // replicas
        start = replica * local
        x, y, weights = (t[start:start + local] for t in (x, y, weights))
        task = self.engine.dataset.task
        sums = []
        for model in self.models:
            outputs = model(x, training=False)
            sums.append(tasks.eval_sums(task, outputs, y, x, weights))
        return tf.stack(sums)


def _clip_global(grads, clip_norm, context, replicas):
    """Clips by the global norm of the *all-reduced* gradient.

    The optimizer sums gradients across replicas, so we sum here, clip the total and
    hand each replica total/replicas: the optimizer's sum then gives back the clipped total.
    """
    if replicas > 1:
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    grads, _ = tf.clip_by_global_norm(grads, clip_norm)
    if replicas > 1:
        grads = [g / replicas for g in grads]
    return grads


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
            self.train_y = tf.constant(dataset.train_y)
        self._permutations = {}

    def _permutation(self, seed: int, epoch: int) -> np.ndarray:
        key = (seed, epoch)
        if key not in self._permutations:
            if len(self._permutations) > 64:
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
            row = np.empty_like(within, dtype=np.int32)
            for epoch in np.unique(epochs):
                mask = epochs == epoch
                row[mask] = self._permutation(int(seed), int(epoch))[within[mask]]
            out[k, : len(row)] = row
        return out

    def train_batch(self, k, indices, i, batch_size, replica, replicas, step, seeds):
        local = batch_size // replicas
        start = i * batch_size + replica * local
        idx = indices[k, start:start + local]
        x = tf.gather(self.train_x, idx)
        y = tf.gather(self.train_y, idx)
        if self.dataset.augment is not None:
            seed = tf.stack([seeds[k], step * 64 + tf.cast(replica, tf.int64)])
            x = self.dataset.augment(x, seed)
        return x, y


class StreamSampler:
    """Language models: B parallel streams, consecutive windows, no shuffling."""

    def __init__(self, dataset, strategy):
        from tf_sgd_regimes.data import streams  # only language models need it

        self._streams = streams
        self.dataset = dataset
        with strategy.scope():
            self.tokens = tf.constant(dataset.train_x, tf.int32)

    def host_indices(self, seeds, start_step, num_steps, batch_size, padded_steps):
        return np.zeros([len(seeds), 0], np.int32)

    def train_batch(self, k, indices, i, batch_size, replica, replicas, step, seeds):
        return self._streams.stream_batch(self.tokens, batch_size, self.dataset.unroll,
                                          step, replica, replicas)


class Engine:
    """Trains packs of members of one experiment under one strategy."""

    def __init__(self, config, dataset, strategy: tf.distribute.Strategy):
        self.config = config
        self.dataset = dataset
        self.strategy = strategy
        self.replicas = int(strategy.num_replicas_in_sync)
        jit = config.train.jit_compile
        # XLA on CPU pays off only for long compiled loops; it also needs static shapes.
        self.jit_compile = bool(jit) if jit != "auto" else False
        sampler_cls = StreamSampler if dataset.ordering == "streams" else ShuffleSampler
        self.sampler = sampler_cls(dataset, strategy)
        eval_batch = int(config.train.eval_batch_size)
        self.eval_batch_size = max(self.replicas, eval_batch - eval_batch % self.replicas)
        self._runners = {}

    def build_model(self, seed: int) -> keras.Model:
        fields = dict(self.config.model)
        name = fields.pop("name")
        return model_registry.get_model(name, self.dataset.input_shape,
                                        self.dataset.num_outputs, seed=seed, **fields)

    def _runner(self, num_members: int, batch_size: int) -> _PackRunner:
        static = self.jit_compile or self.dataset.ordering == "streams"
        key = (num_members, batch_size if static else None)
        if key not in self._runners:
            self._runners[key] = _PackRunner(self, num_members, key[1])
        return self._runners[key]

    def train_pack(
        self,
        members: Sequence[Member],
        batch_size: int,
        total_steps: int,
        on_chunk: Optional[Callable[[ChunkReport], None]] = None,
    ) -> List[MemberResult]:
        """Trains every member for `total_steps` steps and evaluates the survivors."""
        if batch_size % self.replicas:
            raise ValueError(f"batch size {batch_size} is not divisible by the "
                             f"{self.replicas} replicas")
        runner = self._runner(len(members), batch_size)
        runner.reset(members, total_steps)
        steps_per_call = int(self.config.train.steps_per_call)
        seeds = [m.seed for m in members]
        step = 0
        while step < total_steps:
            n = min(steps_per_call, total_steps - step)
            indices = self.sampler.host_indices(seeds, step, n, batch_size, steps_per_call)
            runner.train_chunk(indices, n, batch_size)
            step += n
            diverged_at = runner.diverged_at.numpy()
            if on_chunk is not None:
                mean_loss = runner.loss_sum.numpy() / n
                mean_loss[diverged_at >= 0] = np.nan
                lr_factor = float(schedules.schedule_factor(
                    float(step - 1), float(total_steps), float(self.config.schedule.decay_factor),
                    float(self.config.schedule.warmup_steps)))
                on_chunk(ChunkReport(step, total_steps, mean_loss,
                                     np.array([m.effective_lr * lr_factor for m in members]),
                                     diverged_at.copy()))
            runner.loss_sum.assign(np.zeros([len(members)], np.float32))
            if np.all(diverged_at >= 0):
                break
        return self._final_results(runner, members, step)

    def _final_results(self, runner, members, steps_done) -> List[MemberResult]:
        dataset, task = self.dataset, self.dataset.task
        diverged_at = runner.diverged_at.numpy()
        alive = diverged_at < 0
        test = runner.evaluate(dataset.test_x, dataset.test_y) if alive.any() else None
        train = runner.evaluate(dataset.train_x, dataset.train_y) if alive.any() else None
        results = []
        for k, member in enumerate(members):
            metrics, status, diverged_step = {}, "complete", None
            if alive[k]:
                metrics.update(tasks.metrics_from_sums(task, test[k], dataset.split))
                metrics.update(tasks.metrics_from_sums(task, train[k], "train"))
                if self.config.l2 > 0 and runner.regularized[k]:
                    penalty = 0.5 * float(self.config.l2) * sum(
                        float(tf.reduce_sum(tf.square(w))) for w in runner.regularized[k])
                    metrics["train_data_loss"] = metrics["train_loss"]
                    metrics["train_loss"] = metrics["train_loss"] + penalty
                if not all(np.isfinite(v) for v in metrics.values()):
                    status, diverged_step = "diverged", steps_done
            else:
                status, diverged_step = "diverged", int(diverged_at[k])
            if status == "diverged":
                metrics = {name: None for name in metrics}
            results.append(MemberResult(member.cell_id, status, metrics, diverged_step,
                                        steps_done))
        return results


def wall_clock() -> float:
    return time.perf_counter()
