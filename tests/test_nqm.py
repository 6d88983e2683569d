"""Tests of the noisy quadratic model: closed form vs simulation, stability edges, regimes."""

from fractions import Fraction

import numpy as np
import pytest

from tf_sgd_regimes.theory import nqm


def small_config(**changes):
    config = dict(nqm.default_config(), dim=20)
    config.update(changes)
    return config


def reference_moments(config, lr, momentum, batch_size, steps):
    """E[w] and E[s s^T] per direction by explicit 2x2 matrices, one step at a time."""
    dim = config["dim"]
    h = config["h_max"] * np.arange(1, dim + 1) ** (-config["power"])
    noise_var = config["noise_scale"] * h / batch_size
    losses, means, variances = [], [], []
    for i in range(dim):
        mean = np.array([config["init_scale"], 0.0])
        second = np.outer(mean, mean)
        curve = []
        for t in range(steps):
            step = lr * reference_factor(t, steps, config["decay_factor"])
            # w' = w - step (m a + h w + xi) ; a' = m a + h w + xi
            a_matrix = np.array([[1 - step * h[i], -step * momentum], [h[i], momentum]])
            b = np.array([-step, 1.0])
            mean = a_matrix @ mean
            second = a_matrix @ second @ a_matrix.T + noise_var[i] * np.outer(b, b)
            curve.append(0.5 * h[i] * second[0, 0])
        losses.append(curve)
        means.append(mean[0])
        variances.append(second[0, 0] - mean[0] ** 2)
    return np.sum(losses, axis=0), np.array(means), np.array(variances)


def reference_factor(t, steps, gamma):
    """Paper schedule from its definition: one decay at steps/2 + k steps/20, k = 0..9."""
    decays = sum(1 for k in range(10) if t >= Fraction(steps, 2) + Fraction(k * steps, 20))
    return gamma ** (-decays)


@pytest.mark.parametrize("steps", [20, 37, 200, 1001])
def test_schedule_factors_follow_the_definition(steps):
    expected = [reference_factor(t, steps, 2.0) for t in range(steps)]
    np.testing.assert_array_equal(nqm.schedule_factors(steps, 2.0), expected)
    assert nqm.schedule_factors(steps, 2.0)[-1] == 2.0**-10 or steps < 20


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.0), ("momentum", 0.9)])
def test_exact_dynamics_match_explicit_matrices(optimizer, momentum):
    config = small_config(dim=6)
    lr, steps = nqm.learning_rate(optimizer, 0.8, momentum), 120
    losses, means, variances = reference_moments(config, lr, momentum, 8, steps)
    eval_steps = [1, 2, 17, 60, 61, 65, 113, 120]
    out = nqm.expected_dynamics(config, [lr], [momentum], [8], steps, eval_steps)
    expected = losses[np.array(eval_steps) - 1]
    np.testing.assert_allclose(out["expected_loss"][0], expected, rtol=1e-10)
    np.testing.assert_allclose(out["mean_w"][0], means, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(out["var_w"][0], variances, rtol=1e-10, atol=1e-14)
    step_curve = nqm.expected_loss_curve(config, lr, momentum, 8, steps)
    np.testing.assert_allclose(step_curve, losses, rtol=1e-10)


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.0), ("momentum", 0.9)])
def test_closed_form_matches_simulation_mean(optimizer, momentum):
    config = small_config()
    lr, steps, runs = nqm.learning_rate(optimizer, 0.5, momentum), 200, 4000
    eval_steps = np.array([10, 90, 100, 101, 150, 200])  # crosses the decays from step 100 on
    out = nqm.expected_dynamics(config, [lr], [momentum], [4], steps, eval_steps)
    sim = nqm.simulate(config, lr, momentum, 4, steps, runs, seed=3)
    sample = sim["loss"][:, eval_steps - 1]
    standard_error = sample.std(axis=0, ddof=1) / np.sqrt(runs)
    z = (sample.mean(axis=0) - out["expected_loss"][0]) / standard_error
    assert np.all(np.abs(z) < 4.5), z
    # The per-direction law of the final w, which train_cells samples seeds from.
    w = sim["w"]
    z_mean = (w.mean(axis=0) - out["mean_w"][0]) / np.sqrt(out["var_w"][0] / runs)
    assert np.all(np.abs(z_mean) < 4.5), z_mean
    np.testing.assert_allclose(w.var(axis=0, ddof=1), out["var_w"][0], rtol=0.12)


@pytest.mark.parametrize(
    "optimizer,momentum,edge",
    [("sgd", 0.0, 2.0 / 1.5), ("momentum", 0.9, 2.0 * 1.9 / 1.5)],  # edge in paper-form lr
)
def test_full_batch_stability_edge(optimizer, momentum, edge):
    config = small_config(noise_scale=0.0, schedule="constant")
    steps = 3000
    lrs = [0.98 * edge, 1.02 * edge]
    out = nqm.expected_dynamics(config, lrs, [momentum] * 2, [1, 1], steps)
    start = nqm.initial_loss(config)
    below, above = out["expected_loss"]
    assert np.all(np.isfinite(below)) and below.max() <= 2.0 * start
    assert not np.isfinite(above[-1]) or above[-1] > 1e20 * start
    cells = [
        dict(optimizer=optimizer, momentum=momentum, batch_size=1, seed=0, steps=steps,
             effective_lr=lr / (1.0 - momentum))
        for lr in lrs
    ]
    stable, unstable = nqm.train_cells(config, cells)
    assert stable["diverged_step"] is None and stable["steps_done"] == steps
    assert unstable["diverged_step"] is not None and unstable["metrics"]["test_loss"] is None
    assert unstable["steps_done"] == unstable["diverged_step"] < steps


def test_vectorised_sweep_equals_one_at_a_time():
    config = small_config(dim=50)
    lrs = [0.01, 0.1, 0.5, 1.0, 1.6]  # the last diverges for SGD
    momenta = [0.0, 0.9, 0.0, 0.9, 0.0]
    batches = [1, 4, 16, 64, 2]
    together = nqm.expected_dynamics(config, lrs, momenta, batches, 300)
    for row, (lr, m, b) in enumerate(zip(lrs, momenta, batches)):
        alone = nqm.expected_dynamics(config, [lr], [m], [b], 300)
        np.testing.assert_array_equal(together["expected_loss"][row], alone["expected_loss"][0])
    cells = [
        dict(optimizer=opt, momentum=0.9, batch_size=b, effective_lr=lr, seed=s, steps=n)
        for opt in ("sgd", "momentum")
        for b, n in ((2, 50), (16, 80))
        for lr in (0.25, 4.0)
        for s in (0, 1)
    ]
    batch_results = nqm.train_cells(config, cells)
    assert [nqm.train_cells(config, [cell])[0] for cell in cells] == batch_results


def test_seeds_draw_the_exact_final_law():
    config = small_config(dim=100)
    cells = [
        dict(optimizer="sgd", momentum=0.0, batch_size=4, effective_lr=0.5, seed=s, steps=400)
        for s in range(600)
    ]
    results = nqm.train_cells(config, cells)
    losses = np.array([r["metrics"]["test_loss"] for r in results])
    expected = results[0]["metrics"]["expected_loss"]
    assert all(r["metrics"]["expected_loss"] == expected for r in results)
    assert len(set(losses.tolist())) == len(cells)  # the seed matters
    assert np.abs(losses.mean() - expected) < 4 * losses.std() / np.sqrt(len(losses))
    again = nqm.train_cells(config, cells[:3])
    assert [r["metrics"]["test_loss"] for r in again] == losses[:3].tolist()
    expected_mode = nqm.train_cells(dict(config, seed_mode="expected"), cells[:2])
    assert [r["metrics"]["test_loss"] for r in expected_mode] == [expected, expected]


def _best_lr_and_loss(config, optimizer, momentum, batch_size, lrs):
    steps = nqm.epoch_budget_steps(config["epochs"], config["train_size"], batch_size)
    rates = [nqm.learning_rate(optimizer, lr, momentum) for lr in lrs]
    count = len(lrs)
    out = nqm.expected_dynamics(config, rates, [momentum] * count, [batch_size] * count, steps)
    bound = config["divergence_bound"] * nqm.initial_loss(config)
    curves = out["expected_loss"]
    final = np.where(np.all(np.isfinite(curves) & (curves < bound), axis=1), curves[:, -1], np.inf)
    best = int(np.argmin(final))
    assert 0 < best < len(lrs) - 1, f"optimum on the grid edge at B={batch_size}"
    return np.log2(lrs[best]), final[best]


def test_default_config_shows_both_regimes():
    config = nqm.default_config()
    batch_sizes = 2 ** np.arange(0, 13)
    lrs = 2.0 ** np.arange(-8, 7)
    best = {
        name: [_best_lr_and_loss(config, name, m, b, lrs) for b in batch_sizes]
        for name, m in (("sgd", 0.0), ("momentum", 0.9))
    }
    log_b = np.log2(batch_sizes)
    # SGD's optimum stops growing at B ~ 64, Momentum's (larger stable lr) at B ~ 1024.
    for name, small, large in (("sgd", slice(0, 5), slice(7, 13)),
                               ("momentum", slice(0, 5), slice(10, 13))):
        log_lr = np.array([lr for lr, _ in best[name]])
        slope_small = np.polyfit(log_b[small], log_lr[small], 1)[0]
        slope_large = np.polyfit(log_b[large], log_lr[large], 1)[0]
        assert 0.7 < slope_small < 1.3, (name, slope_small)
        assert abs(slope_large) < 0.3, (name, slope_large)
    sgd_loss = np.array([loss for _, loss in best["sgd"]])
    momentum_loss = np.array([loss for _, loss in best["momentum"]])
    assert abs(momentum_loss[0] / sgd_loss[0] - 1.0) < 0.01  # equal at the smallest B
    assert np.all(momentum_loss[7:] < 0.6 * sgd_loss[7:])  # Momentum clearly ahead at large B


def test_bad_cells_and_configs_are_refused():
    config = small_config()
    good = dict(optimizer="sgd", momentum=0.0, batch_size=2, effective_lr=0.1, seed=0, steps=5)
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        nqm.train_cells(config, [dict(good, optimizer="adam")])
    with pytest.raises(ValueError, match="lacks \\['seed'\\]"):
        nqm.train_cells(config, [{k: v for k, v in good.items() if k != "seed"}])
    with pytest.raises(ValueError, match="unknown schedule"):
        nqm.train_cells(dict(config, schedule="cosine"), [good])
    with pytest.raises(ValueError, match="nqm config lacks"):
        nqm.train_cells({"dim": 3}, [good])
