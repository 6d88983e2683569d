"""The gradient noise scale B_simple of a Keras model's weights, measured in training.

B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018; estimator in theory/noise_scale.py)
from squared gradient norms at two batch sizes. The big batch is K = batch_big / batch_small
micro-batches whose gradients are averaged, so it fits on one device whatever batch_big is.
Micro-batches draw examples uniformly WITH replacement, so the estimates are unbiased for
the training set's own per-example gradient distribution (finite-population corrections
of sampling without replacement would otherwise shrink tr(Sigma) by (N - b) / (N - 1)).
The gradient is that of the training objective: data loss plus the L2 term, if any (the
L2 term adds to G and cancels in tr(Sigma)). Weights are evaluated through
`template.stateless_call(weights, states, x, training=True)`, vectorised over stacked
members as in engine.py; updated non-trainable state (BN statistics) is discarded.
"""

import weakref
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tf_sgd_regimes import tasks
from tf_sgd_regimes.theory import noise_scale

_COMPILED = weakref.WeakKeyDictionary()  # template -> {loss key: tf.function}
# engine -> {(distinct seeds, settings): step-0 results}. Initial weights depend on the
# seed alone and the step-0 draw of examples is fixed, so every pack of a sweep with the
# same seeds measures the same values at step 0: measured once per engine.
_AT_INIT = weakref.WeakKeyDictionary()
# engine -> the template its probes run through. An engine's runners (one per XLA batch
# size) have templates of the same structure, and tracing the probe's function costs
# seconds where a measurement costs 0.1 s: one template per engine, one trace.
_TEMPLATE = weakref.WeakKeyDictionary()


def _check(dataset, batch_small: int, batch_big: int, num_batches: int) -> int:
    if getattr(dataset, "ordering", "shuffle") == "streams" or \
            getattr(dataset, "train_x", None) is None:
        raise ValueError(
            "config.train.noise_scale: the noise probe needs an in-memory, shuffled training "
            f"set (data set {getattr(dataset, 'name', '?')!r} is streamed); set "
            "config.train.noise_scale.enabled=False")
    if not 0 < batch_small < batch_big or batch_big % batch_small:
        raise ValueError(
            f"config.train.noise_scale: need 0 < batch_small < batch_big with batch_big a "
            f"multiple of batch_small, got batch_small={batch_small}, batch_big={batch_big}")
    if num_batches < 1:
        raise ValueError(f"config.train.noise_scale.num_batches={num_batches}: must be >= 1")
    return batch_big // batch_small


def _per_member_sq(tensor):
    return tf.reduce_sum(tf.reshape(tf.square(tensor), [tf.shape(tensor)[0], -1]), axis=1)


def _compiled(template, loss: Union[str, Callable], l2: float, regularized: tuple):
    """A tf.function (weights, states, x [K,b,...], y [K,b]) -> (mean_k |g_k|^2, |mean_k g_k|^2)."""
    cache = _COMPILED.setdefault(template, {})
    key = (loss, float(l2), regularized)
    if key in cache:
        return cache[key]
    per_example = loss if callable(loss) else (
        lambda outputs, targets, inputs: tasks.per_example_loss(loss, outputs, targets, inputs))

    def gradients(weights, states, x, y):
        def member_loss(args):
            member_weights, member_states = args
            outputs, _ = template.stateless_call(list(member_weights), list(member_states), x,
                                                 training=True)
            return tf.reduce_mean(tf.cast(per_example(outputs, y, x), tf.float32))

        with tf.GradientTape() as tape:
            tape.watch(weights)
            losses = tf.vectorized_map(member_loss, (weights, states))
            if l2 > 0 and any(regularized):
                losses += 0.5 * l2 * tf.add_n([_per_member_sq(w) for w, r in
                                               zip(weights, regularized) if r])
            total = tf.reduce_sum(losses)  # members are independent: per-member gradients
        return tape.gradient(total, weights)

    def sq_norms(weights, states, x, y):
        count = tf.shape(x)[0]
        members = tf.shape(weights[0])[0]
        sum_sq = tf.zeros([members], tf.float32)
        grad_sum = [tf.zeros_like(w) for w in weights]
        for k in tf.range(count):
            grads = gradients(weights, states, x[k], y[k])
            sum_sq += tf.add_n([tf.cast(_per_member_sq(g), tf.float32) for g in grads])
            grad_sum = [s + g for s, g in zip(grad_sum, grads)]
        scale = tf.cast(count, tf.float32)
        big = tf.add_n([tf.cast(_per_member_sq(s), tf.float32) for s in grad_sum]) / scale**2
        return sum_sq / scale, big

    cache[key] = tf.function(sq_norms, reduce_retracing=True)
    return cache[key]


def measure_stacked(template, weights: Sequence, states: Sequence, dataset, task,
                    batch_small: int, batch_big: int, num_batches: int, seed: int,
                    l2: float = 0.0, regularized: Optional[Sequence[bool]] = None) -> List[dict]:
    """B_simple for each of M members whose weights are stacked on a leading axis.

    Args:
      template: a Keras model whose variables define the computation.
      weights, states: the template's trainable / non-trainable variables' values, each
        stacked [M, ...] (e.g. engine._PackRunner.weights).
      dataset: an in-memory data set (train_x, train_y; train_y None for an autoencoder).
      task: a task name of tasks.py, or a callable (outputs, targets, inputs) -> loss [b].
      batch_small, batch_big: the two batch sizes; batch_big a multiple of batch_small.
      num_batches: big batches drawn; the estimates are averaged over them.
      seed: seeds the choice of examples.
      l2, regularized: the L2 coefficient and which weights it covers (engine's mask).
    Returns:
      per member a dict with b_simple (None if the |G|^2 estimate is not positive),
      grad_sq, trace_sigma (averages over big batches) and their standard errors,
      sq_norm_small, sq_norm_big, batch_small, batch_big, num_batches.
    """
    count = _check(dataset, batch_small, batch_big, num_batches)
    regularized = tuple(bool(r) for r in (regularized or [False] * len(weights)))
    function = _compiled(template, task, l2, regularized)
    train_x = np.asarray(dataset.train_x)
    train_y = dataset.train_y
    if train_y is None:  # autoencoder: the inputs are the targets
        train_y = np.zeros([len(train_x)], np.int32)
    rng = np.random.default_rng(seed)
    weights = [tf.convert_to_tensor(w) for w in weights]
    states = [tf.convert_to_tensor(s) for s in states]
    small, big = [], []
    for _ in range(int(num_batches)):
        index = rng.integers(0, len(train_x), size=batch_big)
        x = train_x[index].reshape((count, batch_small) + train_x.shape[1:])
        y = np.asarray(train_y)[index].reshape((count, batch_small) + np.shape(train_y)[1:])
        sq_small, sq_big = function(weights, states, tf.constant(x), tf.constant(y))
        small.append(sq_small.numpy().astype(np.float64))
        big.append(sq_big.numpy().astype(np.float64))
    small, big = np.array(small), np.array(big)  # [num_batches, M]
    with np.errstate(invalid="ignore", over="ignore"):  # diverged members: NaN weights
        grad_sq, trace_sigma = noise_scale.unbiased_estimates(small, big, batch_small,
                                                              batch_big)
    results = []
    for m in range(small.shape[1]):
        g, t = grad_sq[:, m], trace_sigma[:, m]
        se = (lambda v: float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan"))
        ratio = float(t.mean() / g.mean()) if np.isfinite(g.mean()) and g.mean() > 0 else None
        results.append({
            "b_simple": ratio if ratio is None or np.isfinite(ratio) else None,
            "grad_sq": float(g.mean()), "trace_sigma": float(t.mean()),
            "grad_sq_se": se(g), "trace_sigma_se": se(t),
            "sq_norm_small": float(small[:, m].mean()), "sq_norm_big": float(big[:, m].mean()),
            "batch_small": int(batch_small), "batch_big": int(batch_big),
            "num_batches": int(num_batches)})
    return results


def measure(template, weights: Sequence, states: Sequence, dataset, task, batch_small: int,
            batch_big: int, num_batches: int, seed: int, l2: float = 0.0,
            regularized: Optional[Sequence[bool]] = None) -> dict:
    """B_simple for one set of weights (the template's order, unstacked); see measure_stacked."""
    return measure_stacked(template, [np.asarray(w)[None] for w in weights],
                           [np.asarray(s)[None] for s in states], dataset, task, batch_small,
                           batch_big, num_batches, seed, l2, regularized)[0]


class PackProbe:
    """Engine hook: B_simple of every member of a pack at step 0 and at step total // 2.

    The engine asks `clip` to end a chunk exactly at the middle step, calls `measure_if_due`
    after every chunk (and once before the first), and `add_metrics` on its results, which
    gain noise_scale_{init,mid} (B_simple; None when the |G|^2 estimate is not positive)
    and noise_scale_{init,mid}_{grad_sq,trace_sigma}, so a report can pool several runs as
    a ratio of averages. At step 0 members with the same seed share their weights, so
    only one per seed is measured.
    """

    def __init__(self, settings, engine, runner, total_steps: int):
        self.settings = settings
        self.engine = engine
        self.runner = runner
        self.middle = max(1, int(total_steps) // 2)
        self.values = {}  # "init" / "mid" -> list of per-member result dicts

    @classmethod
    def from_config(cls, engine, runner, total_steps: int) -> Optional["PackProbe"]:
        """None unless config.train.noise_scale.enabled."""
        settings = engine.config.train.get("noise_scale")
        if settings is None or not settings.enabled:
            return None
        _check(engine.dataset, int(settings.batch_small), int(settings.batch_big),
               int(settings.num_batches))
        return cls(settings, engine, runner, total_steps)

    def clip(self, step: int, num_steps: int) -> int:
        """Steps for the next chunk so that one chunk ends at the middle step."""
        if step < self.middle < step + num_steps:
            return self.middle - step
        return num_steps

    def due(self, step: int) -> bool:
        """measure_if_due(step) would measure (the engine refreshes what it reads)."""
        when = {0: "init", self.middle: "mid"}.get(int(step))
        return when is not None and when not in self.values

    def measure_if_due(self, step: int) -> None:
        if not self.due(step):
            return
        when = {0: "init", self.middle: "mid"}[int(step)]
        runner, config = self.runner, self.engine.config
        members = np.arange(runner.num_members)
        if when == "init":  # initial weights depend on the seed alone
            _, first, members = np.unique(runner.seeds.numpy(), return_index=True,
                                          return_inverse=True)
        else:
            first = members
        sizes = (int(self.settings.batch_small), int(self.settings.batch_big),
                 int(self.settings.num_batches))
        known = _AT_INIT.setdefault(self.engine, {})
        key = (tuple(int(s) for s in runner.seeds.numpy()[first]), sizes)
        if when == "init" and key in known:
            results = known[key]
        else:
            pick = lambda v: tf.gather(v.read_value(), first)  # noqa: E731
            template = _TEMPLATE.setdefault(self.engine, runner.template)
            results = measure_stacked(
                template, [pick(w) for w in runner.weights],
                [pick(s) for s in runner.states], self.engine.dataset,
                self.engine.dataset.task, *sizes, seed=int(step), l2=float(config.l2),
                regularized=runner.regularized)
            if when == "init":
                known[key] = results
        self.values[when] = [dict(results[i]) for i in np.ravel(members)]

    def add_metrics(self, results) -> None:
        for k, result in enumerate(results):
            if result.status != "complete":
                continue  # a diverged cell's metrics stay None: its weights are not finite
            for when in ("init", "mid"):
                values = self.values.get(when)
                value = {} if values is None else values[k]
                result.metrics[f"noise_scale_{when}"] = value.get("b_simple")
                for part in ("grad_sq", "trace_sigma"):
                    number = value.get(part)
                    finite = number is not None and np.isfinite(number)
                    result.metrics[f"noise_scale_{when}_{part}"] = number if finite else None
