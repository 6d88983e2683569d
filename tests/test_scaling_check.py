"""Tests of the linear-scaling check on the noisy quadratic model (known answers)."""

import numpy as np
import pytest

from tf_sgd_regimes.theory import nqm, scaling_check


def small_config():
    return dict(nqm.default_config(), dim=60)


@pytest.mark.parametrize("name", sorted(scaling_check.PROCEDURES))
def test_exact_law_matches_simulated_displacements(name):
    config, runs = small_config(), 4000
    sample = scaling_check.displacements(config, name, 0.05, 2.0, 8, runs, seed=5)
    mean, var = scaling_check.exact_law(config, name, 0.05, 2.0, 8)
    z = (sample.mean(axis=0) - mean) / np.sqrt(var / runs)
    assert np.all(np.abs(z) < 4.5), np.abs(z).max()
    np.testing.assert_allclose(sample.var(axis=0, ddof=1), var, rtol=0.15)


def test_one_sgd_step_law_by_hand():
    # One step from w0: displacement = -lr (h w0 + xi), xi ~ N(0, c / B).
    config = small_config()
    h, c, w0 = nqm.spectrum(config)
    mean, var = scaling_check.exact_law(config, "one_step", 0.01, 3.0, 5)  # (0.05, B = 15)
    np.testing.assert_allclose(mean, -0.05 * h * w0)
    np.testing.assert_allclose(var, 0.05**2 * c / 15.0)


def test_procedures_agree_when_n_lr_is_small_and_part_when_not():
    config = small_config()
    small, large = (scaling_check.compare(config, r, n=4, runs=1500) for r in (2.0**-7, 2.0))
    for name in ("one_step", "half_steps_double"):
        assert small[name]["p_value"] > 0.01, (name, small[name])
        assert small[name]["mean_gap"] < 0.05 and abs(small[name]["std_ratio"] - 1) < 0.05
        assert large[name]["p_value"] < 1e-6, (name, large[name])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown procedure 'two_steps'"):
        scaling_check.exact_law(small_config(), "two_steps", 0.1, 1.0, 4)
    with pytest.raises(ValueError, match="even number"):
        scaling_check.compare(small_config(), 0.1, n=3)


def test_digits_mlp_steps_eigenvalue_and_verdicts():
    import tensorflow as tf

    from tf_sgd_regimes.theory import scaling_check_model as model_check

    problem = model_check.Problem("digits_mlp")
    # One SGD step moves by -lr g_B, whose mean over draws is -lr G (full gradient).
    grad = problem.full_gradient()
    unit = model_check._unit(grad)
    moved = model_check._project(problem.displacements(0.01, 8, 1, 300, seed=1), [unit])[:, 0]
    expected = -0.01 * float(tf.sqrt(model_check._dot(grad, grad)))
    assert abs(moved.mean() - expected) < 4.5 * moved.std(ddof=1) / np.sqrt(300)
    # Power iteration: H v = lambda v at the top of the spectrum.
    value, vector = problem.top_eigen(iterations=40)
    residual = [h - value * v for h, v in zip(problem._hvp(vector), vector)]
    assert float(tf.sqrt(model_check._dot(residual, residual))) < 0.05 * value
    critical = 2.0 / value
    _, units = model_check.directions(problem, 2)
    small, large = (model_check.compare(problem, r, critical, units, runs=300)
                    for r in (2.0**-5, 2.0))
    for name in ("one_step", "half_steps_double"):
        assert small[name]["p_value"] > 0.01, (name, small[name])
    assert large["one_step"]["p_value"] < 1e-6 and large["one_step"]["mean_gap"] > 1.0
