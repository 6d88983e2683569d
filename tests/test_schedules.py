"""Tests for the paper's learning-rate schedule against an independent numpy reference."""

import json
from fractions import Fraction

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_sgd_regimes import schedules

BUDGETS = [1, 3, 7, 20, 30, 100, 157, 390, 1000, 1001]


def reference_schedule(initial_lr, total_steps, gamma=2.0, warmup_steps=0, num_steps=None):
    """Numpy reference written from appendix B.1, looping over exact decay boundaries.

    The budget is split into 20 equal (real-valued) parts; the rate is held for the first
    10 and divided by gamma at the start of each later part. Boundaries are exact
    fractions so a step that lands on one is classified without rounding doubt.
    """
    num_steps = total_steps if num_steps is None else num_steps
    rates = np.full(num_steps, float(initial_lr))
    for part in range(10, 20):
        boundary = Fraction(total_steps * part, 20)
        for step in range(num_steps):
            if step >= boundary:
                rates[step] /= gamma
    for step in range(min(warmup_steps, num_steps)):
        rates[step] *= (step + 1) / warmup_steps
    return rates


@pytest.mark.parametrize("total_steps", BUDGETS)
def test_matches_reference_at_every_step(total_steps):
    values = schedules.schedule_values(0.3, total_steps)
    np.testing.assert_allclose(values, reference_schedule(0.3, total_steps), rtol=1e-6)


@pytest.mark.parametrize(
    "total_steps,gamma,warmup", [(100, 2.0, 5), (157, 3.0, 80), (1000, 10.0, 999), (20, 1.0, 3)]
)
def test_matches_reference_with_gamma_and_warmup(total_steps, gamma, warmup):
    values = schedules.schedule_values(0.05, total_steps, gamma, warmup)
    expected = reference_schedule(0.05, total_steps, gamma, warmup)
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_large_budget_boundaries_are_exact():
    # The ImageNet-sized budget (~450k steps) has boundaries float32 cannot place by
    # division; check the steps either side of every boundary exactly.
    total = 450_357
    schedule = schedules.PaperSchedule(1.0, total)
    steps = []
    for part in range(10, 20):
        boundary = Fraction(total * part, 20)
        first = int(np.ceil(boundary))
        steps += [first - 1, first]
    got = np.asarray(schedule(tf.constant(steps, tf.int64)))
    expected = [sum(1 for p in range(10, 20) if s >= Fraction(total * p, 20)) for s in steps]
    np.testing.assert_allclose(got, 2.0 ** -np.array(expected, float), rtol=1e-7)


@pytest.mark.parametrize("total_steps", [20, 100, 157, 1000])
def test_last_step_is_ten_decays(total_steps):
    schedule = schedules.PaperSchedule(0.8, total_steps, decay_factor=2.0)
    np.testing.assert_allclose(float(schedule(total_steps - 1)), 0.8 / 2**10, rtol=1e-7)
    # Beyond the budget the last value is kept.
    np.testing.assert_allclose(float(schedule(5 * total_steps)), 0.8 / 2**10, rtol=1e-7)


def test_tiny_budget_last_step_follows_the_rule():
    # T = 3: boundaries at 1.5 + k·0.15, so step 2 is past 4 of them (k = 0..3).
    assert float(schedules.PaperSchedule(1.0, 3)(2)) == pytest.approx(2.0**-4)


def test_first_half_is_constant_and_first_decay_at_half():
    values = schedules.schedule_values(1.0, 100)
    assert np.all(values[:50] == 1.0)
    assert values[50] == 0.5 and values[54] == 0.5 and values[55] == 0.25


def test_warmup_convention():
    values = schedules.schedule_values(1.0, 100, warmup_steps=4)
    np.testing.assert_allclose(values[:6], [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_schedule_factor_broadcasts_and_floors_float_steps():
    factor = schedules.schedule_factor(tf.constant([0.0, 49.9, 50.0, 54.99]), 100)
    assert factor.dtype == tf.float32
    np.testing.assert_allclose(factor.numpy(), [1.0, 1.0, 0.5, 0.5])
    # Several budgets at once (e.g. members of a pack).
    per_budget = schedules.schedule_factor(60, tf.constant([100, 200, 61]))
    expected = [reference_schedule(1.0, total, num_steps=61)[60] for total in (100, 200, 61)]
    np.testing.assert_allclose(per_budget.numpy(), expected, rtol=1e-7)


def test_config_round_trips_give_identical_values():
    schedule = schedules.PaperSchedule(0.1, 157, decay_factor=3.0, warmup_steps=7, name="s")
    config = schedule.get_config()
    assert config == {
        "initial_learning_rate": 0.1,
        "total_steps": 157,
        "decay_factor": 3.0,
        "warmup_steps": 7,
        "name": "s",
    }
    steps = tf.range(200)
    expected = schedule(steps).numpy()
    copies = [
        schedules.PaperSchedule.from_config(config),
        keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule)),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule)),
    ]
    for copy in copies:
        assert isinstance(copy, schedules.PaperSchedule)
        assert copy.get_config() == config
        np.testing.assert_array_equal(copy(steps).numpy(), expected)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(initial_learning_rate=0.0), "initial_learning_rate"),
        (dict(initial_learning_rate=-1.0), "initial_learning_rate"),
        (dict(initial_learning_rate=float("nan")), "initial_learning_rate"),
        (dict(total_steps=0), "total_steps"),
        (dict(total_steps=10.5), "total_steps"),
        (dict(decay_factor=0.5), "decay_factor"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(warmup_steps=100), "warmup_steps"),
    ],
)
def test_invalid_arguments_name_the_field(kwargs, field):
    arguments = dict(initial_learning_rate=0.1, total_steps=100)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=field):
        schedules.PaperSchedule(**arguments)


def test_schedule_factor_rejects_bad_python_numbers():
    with pytest.raises(ValueError, match="total_steps"):
        schedules.schedule_factor(3, 0)
    with pytest.raises(ValueError, match="decay_factor"):
        schedules.schedule_factor(3, 10, decay_factor=0.5)


def test_tensor_arguments_in_tf_function_trace_once():
    traces = []

    @tf.function
    def factor(step, total_steps):
        traces.append(1)  # runs only while tracing
        return schedules.schedule_factor(step, total_steps)

    cases = [(0, 100), (50, 100), (99, 100), (80, 157), (156, 157), (19, 20)]
    for step, total in cases:
        got = factor(tf.constant(step, tf.int64), tf.constant(total, tf.int64))
        expected = reference_schedule(1.0, total)[step]
        assert float(got) == pytest.approx(expected, rel=1e-6)
    assert len(traces) == 1

    # tf.Variables (float step, int budget), reassigned between calls, also trace once.
    step_var = tf.Variable(0.0)
    total_var = tf.Variable(100, dtype=tf.int64)

    @tf.function
    def from_variables():
        traces.append(1)
        return schedules.schedule_factor(step_var, total_var, decay_factor=2.0, warmup_steps=0)

    for step, total in cases:
        step_var.assign(float(step))
        total_var.assign(total)
        expected = reference_schedule(1.0, total)[step]
        assert float(from_variables()) == pytest.approx(expected, rel=1e-6)
    assert len(traces) == 2


def test_schedule_in_keras_optimizer_uses_iterations():
    schedule = schedules.PaperSchedule(1.0, 20)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    variable = keras.Variable(np.zeros(1, np.float32))
    rates = []
    for _ in range(20):
        rates.append(float(optimizer.learning_rate))
        optimizer.apply_gradients([(tf.ones(1), variable)])
    np.testing.assert_allclose(rates, reference_schedule(1.0, 20), rtol=1e-6)


def test_compiles_with_xla():
    # The engine may compile its training loop with XLA; int64 boundary arithmetic must lower.
    total = tf.Variable(157.0)  # a float budget variable, as an engine may hold it
    warmup = tf.Variable(10.0)

    @tf.function(jit_compile=True)
    def factors(steps):
        return schedules.schedule_factor(steps, total, 3.0, warmup)

    got = factors(tf.range(157, dtype=tf.float32)).numpy()
    np.testing.assert_allclose(got, reference_schedule(1.0, 157, 3.0, 10), rtol=1e-6)


@pytest.mark.parametrize("total,gamma,warmup", [(1, 2.0, 0), (7, 2.0, 0), (100, 2.0, 0),
                                                (1000, 3.0, 25), (156_250, 2.0, 0),
                                                (2_000_003, 10.0, 1000), (999, 1.0, 998)])
def test_numpy_and_tf_forms_agree(total, gamma, warmup):
    # The numpy form (NQM, progress lines) and the TF form (training step) are one definition
    # run on two array libraries: they must agree at every step, boundaries included.
    steps = np.unique(np.concatenate([
        np.arange(min(total, 300)), np.linspace(0, total + 5, 400).astype(np.int64),
        # every decay boundary and its neighbours
        (np.arange(10, 21)[:, None] * total // 20 + np.arange(-1, 2)[None]).ravel()]))
    steps = steps[steps >= 0]
    tf_form = schedules.schedule_factor(tf.constant(steps, tf.int64), total, gamma,
                                        warmup).numpy()
    np_form = schedules.schedule_factor_np(steps, total, gamma, warmup)
    np.testing.assert_allclose(tf_form, np_form, rtol=1e-6)
    # Independent closed form (appendix B.1): floor(20 s / T) - 9 decays, clipped to 0..10.
    decays = np.clip((20 * steps) // total - 9, 0, 10)
    ramp = np.minimum(1.0, (steps + 1.0) / warmup) if warmup else 1.0
    np.testing.assert_allclose(np_form, ramp * float(gamma) ** -decays, rtol=1e-12)


def test_schedule_from_config_drives_every_consumer():
    from tf_sgd_regimes.configs import common
    from tf_sgd_regimes.theory import nqm

    config = common.base_config()
    config.schedule.decay_factor = 3.0
    rule = schedules.Schedule.from_config(config)
    assert rule == schedules.Schedule(decay_factor=3.0, warmup_steps=0)
    assert schedules.Schedule.from_config(json.loads(config.to_json())) == rule
    steps = np.arange(140)
    np.testing.assert_allclose(rule.factor(tf.constant(steps), 140).numpy(),
                               rule.factor_np(steps, 140), rtol=1e-6)
    # The NQM's schedule is the same definition.
    np.testing.assert_array_equal(nqm.schedule_factors(140, 3.0, "paper"),
                                  rule.factor_np(steps, 140))
    np.testing.assert_array_equal(nqm.schedule_factors(140, 3.0, "constant"), np.ones(140))
    with pytest.raises(ValueError, match="decay_factor"):
        schedules.Schedule(decay_factor=0.5)
