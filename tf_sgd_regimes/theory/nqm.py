"""The noisy quadratic model (Zhang et al. 2019): exact expected-loss dynamics, simulation, cells.

Model. Loss L(w) = 1/2 sum_i h_i w_i^2 with a diagonal Hessian, h_i = h_max * i^(-power),
i = 1..dim. A minibatch gradient at batch size B is g = H w + xi with xi ~ N(0, C / B),
C = noise_scale * H (diagonal). Training starts from w_i = init_scale (deterministic), a = 0.

Optimizers, in the paper's form: SGD w <- w - lr g; Momentum a <- m a + g, w <- w - lr a,
with lr = effective_lr * (1 - m). SGD is Momentum with m = 0 (then a is just g).

Exact dynamics. Eigen-directions are independent, and per direction the state (w, a) evolves
linearly with additive Gaussian noise, so its first moments (E w, E a) and second moments
(E w^2, E w a, E a^2) obey a closed linear recursion. The learning rate is piecewise constant
(the paper's schedule), so k steps inside one piece compose in closed form by doubling: a
whole budget costs O(pieces * log steps) elementwise 2x2 products, vectorised over directions
and over many cells at once.

Seeds. Because the dynamics are linear-Gaussian from a fixed start, the final w is exactly
Gaussian with the mean and variance above, independently per direction. train_cells draws each
seed's final w from that law (identical in distribution to running the stochastic simulation
to the end, at no cost), so "test_loss" varies by seed as a real run does and best-k-of-n
statistics are meaningful; "expected_loss" is the exact expectation. The NQM has a single
loss, so "train_loss" carries the same per-seed value.
"""

import functools

import numpy as np

OPTIMIZERS = ("sgd", "momentum")
SCHEDULES = ("paper", "constant")


def default_config() -> dict:
    """A spectrum, noise level and budget that show both batch-size regimes on lr grids 2^k.

    On B = 2^0..2^12 and effective_lr = 2^-8..2^6 (constant epoch budget) the optimal
    effective_lr doubles with B up to B ~ 64 (SGD) and ~ 1024 (Momentum 0.9), then stays at
    the largest stable grid point; SGD and Momentum tie at small B, Momentum wins at large B.
    """
    return {
        "dim": 300,  # number of eigen-directions
        # Largest curvature. Stability edges 2/h_max (SGD) and 2(1+m)/((1-m) h_max) (Momentum,
        # effective lr) are not powers of 2, so no grid point sits exactly on an edge.
        "h_max": 1.5,
        "power": 1.0,  # h_i = h_max * i^-power
        "noise_scale": 1.0,  # per-example gradient covariance C = noise_scale * H
        "init_scale": 1.0,  # w_i at step 0
        "train_size": 16384,  # nominal N: steps = epochs * N / B (constant epoch budget)
        "epochs": 4.0,
        "decay_factor": 2.0,  # gamma of the paper's schedule
        "schedule": "paper",  # "paper" or "constant"
        "divergence_bound": 1e3,  # expected loss above bound * initial loss means diverged
        "num_evals": 100,  # points of the loss curve (divergence is detected on them)
        "seed_mode": "gaussian",  # "gaussian": per-seed draw of the exact final law; "expected"
    }


def _check_config(config: dict) -> None:
    missing = sorted(set(default_config()) - set(config))
    if missing:
        raise ValueError(f"nqm config lacks {missing}; start from nqm.default_config()")
    if config["schedule"] not in SCHEDULES:
        raise ValueError(f"unknown schedule {config['schedule']!r}; known: {sorted(SCHEDULES)}")
    if config["seed_mode"] not in ("gaussian", "expected"):
        raise ValueError(f"seed_mode must be 'gaussian' or 'expected', got {config['seed_mode']!r}")


def spectrum(config: dict):
    """Returns (h, c, w0): curvatures, per-example noise variances and the start, shape [dim]."""
    index = np.arange(1, int(config["dim"]) + 1, dtype=np.float64)
    h = float(config["h_max"]) * index ** (-float(config["power"]))
    c = float(config["noise_scale"]) * h
    w0 = np.full_like(h, float(config["init_scale"]))
    return h, c, w0


def initial_loss(config: dict) -> float:
    h, _, w0 = spectrum(config)
    return float(0.5 * np.sum(h * w0**2))


def schedule_factors(steps: int, decay_factor: float = 2.0, schedule: str = "paper") -> np.ndarray:
    """Learning-rate multiplier at each step 0..steps-1 (paper appendix B.1).

    "paper": 1 for the first half of the budget, then divided by decay_factor at steps/2 and
    again every steps/20, so the last twentieth runs at decay_factor^-10.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {sorted(SCHEDULES)}")
    # The training step's own definition (schedules.py), in its numpy form.
    from tf_sgd_regimes import schedules

    rule = schedules.Schedule(decay_factor=float(decay_factor),
                              constant=schedule == "constant")
    return rule.factor_np(np.arange(int(steps)), int(steps))


def _pieces(steps: int, decay_factor: float, schedule: str):
    """[(start, stop, factor)]: the maximal runs of steps with a constant multiplier."""
    factors = schedule_factors(steps, decay_factor, schedule)
    starts = np.flatnonzero(np.r_[True, factors[1:] != factors[:-1]])
    stops = np.r_[starts[1:], len(factors)]
    return [(int(a), int(b), float(factors[a])) for a, b in zip(starts, stops)]


def learning_rate(optimizer: str, effective_lr: float, momentum: float) -> float:
    """The paper-form step size lr from an effective learning rate lr / (1 - m)."""
    if optimizer == "sgd":
        return float(effective_lr)
    if optimizer == "momentum":
        return float(effective_lr) * (1.0 - float(momentum))
    raise ValueError(f"unknown optimizer {optimizer!r}; known: {sorted(OPTIMIZERS)}")


def epoch_budget_steps(epochs: float, train_size: int, batch_size: int) -> int:
    """Steps of a constant (or variable) epoch budget: epochs * N / B, at least 1."""
    return max(1, int(round(float(epochs) * int(train_size) / int(batch_size))))


# Per direction, one step maps the state s = (w, a) to A s + b xi with
#   A = [[1 - lr h, -lr m], [h, m]],  b = (-lr, 1),  Var(xi) = sigma^2 = c / B,
# so the mean goes to A mean and the second-moment matrix X = E[s s^T] to A X A^T + sigma^2 b b^T.
# k steps are (A^k, S_k) with S_k = sum_{j<k} A^j S_1 A^jT; a pair composes in closed form, so
# k steps cost O(log k) 2x2 products. Matrices are tuples of arrays (entries row by row; a
# symmetric one as (x11, x12, x22)) so every product is elementwise over cells x directions.


def _one_step(lr, m, h, noise_var):
    """(A, S_1) of one step; all inputs broadcast to the same shape."""
    lr, m, h, noise_var = np.broadcast_arrays(lr, m, h, noise_var)
    matrix = (1.0 - lr * h, -lr * m, h + 0.0 * lr, m + 0.0 * lr)
    noise = (lr**2 * noise_var, -lr * noise_var, noise_var + 0.0 * lr)
    return matrix, noise


def _matmul(p, q):
    return (
        p[0] * q[0] + p[1] * q[2],
        p[0] * q[1] + p[1] * q[3],
        p[2] * q[0] + p[3] * q[2],
        p[2] * q[1] + p[3] * q[3],
    )


def _congruence(p, x):
    """p x p^T for symmetric x."""
    r0, r1 = p[0] * x[0] + p[1] * x[1], p[0] * x[1] + p[1] * x[2]  # first row of p x
    r2, r3 = p[2] * x[0] + p[3] * x[1], p[2] * x[1] + p[3] * x[2]  # second row
    return (r0 * p[0] + r1 * p[1], r0 * p[2] + r1 * p[3], r2 * p[2] + r3 * p[3])


def _then(first, second):
    """The map `first` followed by `second`, each (A^k, S_k)."""
    x = _congruence(second[0], first[1])
    return _matmul(second[0], first[0]), tuple(u + v for u, v in zip(x, second[1]))


def _apply(block, mean, moment):
    """Advances (mean (w, a), second moments (ww, wa, aa)) by a block (A^k, S_k)."""
    matrix, noise = block
    mean = (matrix[0] * mean[0] + matrix[1] * mean[1], matrix[2] * mean[0] + matrix[3] * mean[1])
    moment = tuple(u + v for u, v in zip(_congruence(matrix, moment), noise))
    return mean, moment


def expected_dynamics(config, learning_rates, momenta, batch_sizes, steps, eval_steps=None):
    """Exact moments of the NQM for many (lr, m, B) cells sharing one step budget.

    Args:
      config: an NQM config (see default_config).
      learning_rates, momenta, batch_sizes: arrays [L] of paper-form lr, momentum m, batch B.
      steps: the budget (the schedule depends on it).
      eval_steps: increasing step counts in 1..steps at which to report the loss; default
        config["num_evals"] evenly spaced points ending at `steps`.
    Returns:
      dict with "eval_steps" [E], "expected_loss" [L, E], and at the final step "mean_w",
      "var_w" [L, dim] (the exact Gaussian law of w per direction).
    """
    _check_config(config)
    h, c, w0 = spectrum(config)
    lr = np.asarray(learning_rates, np.float64).reshape(-1, 1)
    m = np.asarray(momenta, np.float64).reshape(-1, 1)
    noise_var = c / np.asarray(batch_sizes, np.float64).reshape(-1, 1)
    if eval_steps is None:
        count = min(int(config["num_evals"]), steps)
        eval_steps = np.unique(np.ceil(np.linspace(0, steps, count + 1)[1:]).astype(int))
    eval_steps = np.asarray(eval_steps, int)
    if eval_steps.size == 0 or eval_steps[0] < 1 or eval_steps[-1] > steps:
        raise ValueError(f"eval_steps must lie in 1..{steps}, got {eval_steps}")
    shape = (lr.shape[0], h.size)
    mean = (np.broadcast_to(w0, shape), np.zeros(shape))
    moment = (np.broadcast_to(w0**2, shape), np.zeros(shape), np.zeros(shape))
    losses = np.empty((lr.shape[0], eval_steps.size))
    done, next_eval = 0, 0
    with np.errstate(over="ignore", invalid="ignore"):
        for _, stop, factor in _pieces(steps, config["decay_factor"], config["schedule"]):
            doublings = [_one_step(lr * factor, m, h, noise_var)]  # 2^j steps at index j
            blocks = {}  # k steps of this piece; evaluation points reuse equal-length blocks
            while done < stop:
                target = stop
                if next_eval < eval_steps.size and eval_steps[next_eval] <= stop:
                    target = int(eval_steps[next_eval])
                k = target - done
                if k not in blocks:
                    while 2 ** len(doublings) <= k:
                        doublings.append(_then(doublings[-1], doublings[-1]))
                    bits = [doublings[j] for j in range(len(doublings)) if (k >> j) & 1]
                    blocks[k] = functools.reduce(_then, bits)
                mean, moment = _apply(blocks[k], mean, moment)
                done = target
                if next_eval < eval_steps.size and eval_steps[next_eval] == done:
                    losses[:, next_eval] = 0.5 * np.sum(h * moment[0], axis=-1)
                    next_eval += 1
        mean_w = mean[0]
        var_w = np.maximum(moment[0] - mean_w**2, 0.0)
    return {"eval_steps": eval_steps, "expected_loss": losses, "mean_w": mean_w, "var_w": var_w}


def expected_loss_curve(config, lr: float, momentum: float, batch_size: float, steps: int):
    """E[L] after each of steps 1..steps, one step at a time (plain loop; reference for tests)."""
    _check_config(config)
    h, c, w0 = spectrum(config)
    noise_var = c / float(batch_size)
    factors = schedule_factors(steps, config["decay_factor"], config["schedule"])
    mw, ma, ww, wa, aa = w0.copy(), np.zeros_like(h), w0**2, np.zeros_like(h), np.zeros_like(h)
    curve = np.empty(steps)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            step = lr * factors[t]
            alpha, beta = 1.0 - step * h, -step * momentum
            mw, ma = alpha * mw + beta * ma, h * mw + momentum * ma
            ww, wa, aa = (
                alpha**2 * ww + 2 * alpha * beta * wa + beta**2 * aa + step**2 * noise_var,
                alpha * h * ww + (alpha * momentum + beta * h) * wa + beta * momentum * aa
                - step * noise_var,
                h**2 * ww + 2 * h * momentum * wa + momentum**2 * aa + noise_var,
            )
            curve[t] = 0.5 * np.sum(h * ww)
    return curve


def simulate(config, lr: float, momentum: float, batch_size: float, steps: int, runs: int,
             seed: int = 0):
    """Stochastic simulation of `runs` independent trainings with Gaussian gradient noise.

    Returns:
      dict with "loss" [runs, steps] (loss after each step) and "w" [runs, dim] (final w).
    """
    _check_config(config)
    h, c, w0 = spectrum(config)
    noise_std = np.sqrt(c / float(batch_size))
    factors = schedule_factors(steps, config["decay_factor"], config["schedule"])
    rng = np.random.default_rng(seed)
    w = np.tile(w0, (int(runs), 1))
    a = np.zeros_like(w)
    loss = np.empty((int(runs), steps))
    for t in range(steps):
        a = momentum * a + h * w + noise_std * rng.standard_normal(w.shape)
        w = w - lr * factors[t] * a
        loss[:, t] = 0.5 * np.sum(h * w**2, axis=1)
    return {"loss": loss, "w": w}


_CELL_FIELDS = ("optimizer", "momentum", "batch_size", "effective_lr", "seed", "steps")


def _check_cell(index: int, cell: dict) -> None:
    missing = [name for name in _CELL_FIELDS if name not in cell]
    if missing:
        raise ValueError(f"cell {index} lacks {missing}; a cell needs {list(_CELL_FIELDS)}")
    if cell["optimizer"] not in OPTIMIZERS:
        raise ValueError(
            f"cell {index}: unknown optimizer {cell['optimizer']!r}; known: {sorted(OPTIMIZERS)}"
        )
    if int(cell["steps"]) < 1 or int(cell["batch_size"]) < 1 or float(cell["effective_lr"]) <= 0:
        raise ValueError(f"cell {index}: steps, batch_size and effective_lr must be positive")


def train_cells(nqm_config: dict, cells: list) -> list:
    """Trains NQM cells (exact dynamics); one result per cell, in order.

    Args:
      nqm_config: see default_config.
      cells: dicts {"optimizer": "sgd"|"momentum", "momentum", "batch_size", "effective_lr",
        "seed", "steps"}.
    Returns:
      dicts {"metrics": {"test_loss", "train_loss", "expected_loss"}, "diverged_step",
      "steps_done", "loss_curve": {"steps": [...], "expected_loss": [...]}}. A cell whose
      expected loss is non-finite or above divergence_bound * initial loss at an evaluation
      point diverged there: its metrics are None and steps_done = diverged_step.
    """
    _check_config(nqm_config)
    for index, cell in enumerate(cells):
        _check_cell(index, cell)
    h, _, _ = spectrum(nqm_config)
    bound = float(nqm_config["divergence_bound"]) * initial_loss(nqm_config)
    results = [None] * len(cells)
    by_steps = {}
    for index, cell in enumerate(cells):
        by_steps.setdefault(int(cell["steps"]), []).append(index)
    for steps, indices in by_steps.items():
        group = [cells[i] for i in indices]
        momenta = [float(c["momentum"]) if c["optimizer"] == "momentum" else 0.0 for c in group]
        keys = [
            (learning_rate(c["optimizer"], c["effective_lr"], m), m, int(c["batch_size"]))
            for c, m in zip(group, momenta)
        ]
        unique = sorted(set(keys))  # seeds share one exact computation
        row_of = {key: row for row, key in enumerate(unique)}
        out = expected_dynamics(nqm_config, *np.array(unique).T, steps)
        for index, cell, key in zip(indices, group, keys):
            row = row_of[key]
            curve = out["expected_loss"][row]
            bad = np.flatnonzero(~np.isfinite(curve) | (curve > bound))
            result = {
                "loss_curve": {
                    "steps": out["eval_steps"].tolist(),
                    "expected_loss": [float(v) if np.isfinite(v) else None for v in curve],
                },
            }
            if bad.size:
                step = int(out["eval_steps"][bad[0]])
                metrics = {"test_loss": None, "train_loss": None, "expected_loss": None}
                result.update(metrics=metrics, diverged_step=step, steps_done=step)
            else:
                expected = float(curve[-1])
                loss = expected
                if nqm_config["seed_mode"] == "gaussian":
                    # One seed = one draw of the exact final law; same seed, same normal draws.
                    z = np.random.default_rng(int(cell["seed"])).standard_normal(h.size)
                    w = out["mean_w"][row] + np.sqrt(out["var_w"][row]) * z
                    loss = float(0.5 * np.sum(h * w**2))
                metrics = {"test_loss": loss, "train_loss": loss, "expected_loss": expected}
                result.update(metrics=metrics, diverged_step=None, steps_done=steps)
            results[index] = result
    return results


def optimal_effective_lr(nqm_config: dict, optimizer: str, momentum: float, batch_size: int,
                         steps: int, effective_lrs) -> float:
    """The effective lr among `effective_lrs` with the lowest exact expected final loss.

    The noise-free answer a sweep estimates: no seeds, and as fine an lr grid as asked for.
    Diverged cells (see train_cells) never win.
    """
    config = dict(nqm_config, seed_mode="expected")
    cells = [{"optimizer": optimizer, "momentum": momentum, "batch_size": int(batch_size),
              "effective_lr": float(lr), "seed": 0, "steps": int(steps)}
             for lr in effective_lrs]
    losses = [r["metrics"]["expected_loss"] for r in train_cells(config, cells)]
    losses = np.array([np.inf if v is None else v for v in losses])
    if not np.isfinite(losses).any():
        raise ValueError(f"every effective lr diverged at B={batch_size}; try smaller ones")
    return float(np.asarray(effective_lrs, dtype=float)[int(np.argmin(losses))])
