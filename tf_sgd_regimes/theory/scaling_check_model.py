"""The linear-scaling check (appendix A) on a registered Keras model: the digits MLP.

Same procedures and statistics as scaling_check.py (n SGD steps at (eps, B) vs one step at
(n eps, n B) vs n/2 steps at (2 eps, 2 B), all from the same start), measured by simulation:
`runs` independent SGD trajectories advance together (weights stacked on a leading axis and
evaluated by `stateless_call` under `tf.vectorized_map`, as in engine.py), each drawing its
own minibatches with replacement at constant learning rate. The displacement is projected on
a few random unit directions and on the two directions where the rule should break first:
the full-batch gradient and the Hessian's top eigenvector. eps_crit = 2 / lambda_max, the
full-batch stability edge, with lambda_max from power iteration on Hessian-vector products.

    python -m tf_sgd_regimes.theory.scaling_check --model=digits_mlp   # ~1 min on 2 CPU cores
"""

import numpy as np
import tensorflow as tf
from scipy import stats

from tf_sgd_regimes import data as data_registry
from tf_sgd_regimes import experiments
from tf_sgd_regimes import models as model_registry
from tf_sgd_regimes import tasks
from tf_sgd_regimes.models import regularization
from tf_sgd_regimes.theory import scaling_check

MODELS = {"digits_mlp": "digits_mlp_epoch_budget"}  # model name -> experiment it comes from


class Problem:
    """A model at its initial weights (seed 0) on its training set, with its objective."""

    def __init__(self, model: str = "digits_mlp"):
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; known: {sorted(MODELS)}")
        config = experiments.get_config(MODELS[model])
        fields = dict(config.data)
        self.dataset = data_registry.get_dataset(fields.pop("name"), **fields)
        if self.dataset.task != "classification":
            raise ValueError(f"{model}: the scaling check supports classification only")
        model_fields = dict(config.model)
        self.template = model_registry.get_model(
            model_fields.pop("name"), self.dataset.input_shape, self.dataset.num_outputs,
            seed=0, **model_fields)
        self.weights = [tf.convert_to_tensor(w) for w in self.template.trainable_variables]
        self.states = [tf.convert_to_tensor(v) for v in self.template.non_trainable_variables]
        marked = {id(w) for w in regularization.regularized_weights(self.template,
                                                                     config.l2_scope)}
        self.regularized = [id(w) in marked for w in self.template.trainable_variables]
        self.l2 = float(config.l2)
        self.train_x = tf.constant(self.dataset.train_x)
        self.train_y = tf.constant(self.dataset.train_y)
        self._step = tf.function(self._step_impl, reduce_retracing=True)

    def loss(self, weights, x, y):
        """Mean data loss over (x, y) plus the L2 term: the training objective."""
        outputs, _ = self.template.stateless_call(list(weights), list(self.states), x,
                                                  training=True)
        value = tf.reduce_mean(tasks.per_example_loss(self.dataset.task, outputs, y, x))
        penalty = [tf.reduce_sum(tf.square(w)) for w, r in zip(weights, self.regularized) if r]
        return value + (0.5 * self.l2 * tf.add_n(penalty) if penalty and self.l2 else 0.0)

    def full_gradient(self):
        with tf.GradientTape() as tape:
            tape.watch(self.weights)
            value = self.loss(self.weights, self.train_x, self.train_y)
        return tape.gradient(value, self.weights)

    def top_eigen(self, iterations: int = 30, seed: int = 0):
        """(lambda_max, unit eigenvector) of the full-batch Hessian by power iteration."""
        rng = np.random.default_rng(seed)
        vector = _unit([tf.constant(rng.standard_normal(w.shape), w.dtype)
                        for w in self.weights])
        value = 0.0
        for _ in range(iterations):
            product = self._hvp(vector)
            value = float(_dot(vector, product))
            vector = _unit(product)
        return value, vector

    @tf.function(reduce_retracing=True)
    def _hvp(self, vector):
        with tf.GradientTape() as outer:
            outer.watch(self.weights)
            with tf.GradientTape() as inner:
                inner.watch(self.weights)
                value = self.loss(self.weights, self.train_x, self.train_y)
            grads = inner.gradient(value, self.weights)
            projected = _dot(grads, vector)
        return outer.gradient(projected, self.weights)

    def _step_impl(self, stacked, index, lr):
        x, y = tf.gather(self.train_x, index), tf.gather(self.train_y, index)  # [R, b, ...]
        with tf.GradientTape() as tape:
            tape.watch(stacked)
            losses = tf.vectorized_map(lambda a: self.loss(a[0], a[1], a[2]), (stacked, x, y))
            total = tf.reduce_sum(losses)  # runs are independent: per-run gradients
        return [w - lr * g for w, g in zip(stacked, tape.gradient(total, stacked))]

    def displacements(self, lr: float, batch_size: int, steps: int, runs: int, seed: int):
        """[runs, ...] per weight: w_end - w_start after `steps` SGD steps, fresh draws."""
        rng = np.random.default_rng(seed)
        stacked = [tf.repeat(w[None], runs, axis=0) for w in self.weights]
        for _ in range(steps):
            index = rng.integers(0, len(self.dataset.train_x), size=(runs, batch_size))
            stacked = self._step(stacked, tf.constant(index, tf.int32),
                                 tf.constant(lr, tf.float32))
        return [s - w[None] for s, w in zip(stacked, self.weights)]


def _dot(a, b):
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b)])


def _unit(vector):
    norm = tf.sqrt(_dot(vector, vector))
    return [v / norm for v in vector]


def _project(displacement, directions):
    """[runs, num_directions]: each run's displacement on each unit direction."""
    flat = tf.concat([tf.reshape(d, [d.shape[0], -1]) for d in displacement], axis=1)
    units = tf.stack([tf.concat([tf.reshape(u, [-1]) for u in direction], axis=0)
                      for direction in directions], axis=1)
    return tf.matmul(flat, units).numpy().astype(np.float64)


def directions(problem: Problem, count: int, seed: int = 0):
    """(names, unit directions): `count` random ones, the gradient and the top eigenvector."""
    rng = np.random.default_rng(seed)
    chosen = [_unit([tf.constant(rng.standard_normal(w.shape), w.dtype)
                     for w in problem.weights]) for _ in range(count)]
    names = [f"random {i}" for i in range(count)] + ["gradient", "top eigenvector"]
    return names, chosen + [_unit(problem.full_gradient()), problem.top_eigen()[1]]


def compare(problem: Problem, ratio: float, critical_lr: float, units, n: int = 4,
            batch_size: int = 8, runs: int = 400, seed: int = 0) -> dict:
    """Compares the procedures at n eps = ratio * critical_lr (format of scaling_check.compare,
    with mean_gap and std_ratio measured from the samples instead of an exact law)."""
    if n < 2 or n % 2:
        raise ValueError(f"n must be an even number >= 2, got {n}")
    lr = ratio * critical_lr / n

    def sample(name, offset):
        lr_mult, batch_mult, steps = scaling_check._procedure(name, n)
        moved = problem.displacements(lr * lr_mult, int(batch_size * batch_mult), steps, runs,
                                      seed + offset)
        return _project(moved, units)

    reference = sample("n_steps", 1)
    ref_std = reference.std(axis=0, ddof=1)
    result = {"ratio": float(ratio), "lr": lr}
    for offset, name in enumerate(("one_step", "half_steps_double"), start=2):
        other = sample(name, offset)
        p_values = [stats.ks_2samp(reference[:, j], other[:, j]).pvalue
                    for j in range(reference.shape[1])]
        std_ratio = other.std(axis=0, ddof=1) / ref_std
        result[name] = {
            "p_value": float(min(1.0, len(p_values) * min(p_values))),
            "mean_gap": float(np.max(np.abs(other.mean(axis=0) - reference.mean(axis=0))
                                     / ref_std)),
            "std_ratio": float(std_ratio[np.argmax(np.abs(np.log(std_ratio)))]),
        }
    return result


def sweep(model: str = "digits_mlp", ratios=None, random_directions: int = 4, **kwargs):
    """(results over ratios n eps / eps_crit (default 2^-6 .. 2^1), eps_crit)."""
    problem = Problem(model)
    critical_lr = 2.0 / problem.top_eigen()[0]
    _, units = directions(problem, random_directions)
    ratios = 2.0 ** np.arange(-6, 2) if ratios is None else ratios
    return [compare(problem, float(r), critical_lr, units, **kwargs) for r in ratios], critical_lr
