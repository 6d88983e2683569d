"""Several training steps per iteration of the chunk's loop (config.train.unroll_steps).

Unrolling is a speed choice for XLA's CPU loop (engine.AUTO_UNROLL_XLA): these tests check
that it trains the same steps (same count, same divergence bookkeeping, weights equal to
round-off) whatever the factor and the chunk's length, that it is resolved as documented,
and that the reason for it holds: the unrolled body copies fewer weights per step.
Every model family under XLA with the default unroll is compared with the step without
XLA in tests/test_engine_xla.py.
"""

import re

import numpy as np
import pytest
import tensorflow as tf

from conftest import engine_config, tiny_dataset
from tf_sgd_regimes import engine as engine_lib
from tf_sgd_regimes import experiments

ConfigError = experiments.ConfigError


def _config(unroll, jit=True, steps_per_call=7):
    config = engine_config(steps_per_call=steps_per_call)
    config.unlock()
    return experiments.apply_overrides(
        config, [f"train.jit_compile={'true' if jit else 'false'}",
                 f"train.unroll_steps={unroll}"])


# Member "hot" diverges within the first steps (its loss passes the bound), so the
# unrolled loop must record the exact step at which it did, as the one-step loop does.
MEMBERS = [engine_lib.Member("calm", 0.05, 0.9, 0), engine_lib.Member("sgd", 0.1, 0.0, 1),
           engine_lib.Member("hot", 400.0, 0.9, 2)]


def _train(unroll, jit=True, steps=11, batch=4):
    config = _config(unroll, jit)
    trainer = engine_lib.Engine(config, tiny_dataset(), tf.distribute.get_strategy())
    results = trainer.train_pack(MEMBERS, batch, steps)  # chunks of 7 and 4 steps
    runner = trainer._runner(len(MEMBERS), batch)
    return runner, results


@pytest.fixture(scope="module")
def one_step_body():
    return _train(1)


@pytest.mark.parametrize("unroll", [2, 3])
def test_unrolled_loop_trains_the_same_steps_as_one_step_per_iteration(one_step_body, unroll):
    reference, reference_results = one_step_body
    runner, results = _train(unroll)
    assert runner.unroll == unroll and reference.unroll == 1
    # 11 steps in chunks of 7 and 4: with 3 per iteration each chunk ends in the
    # remainder loop; with 2 the chunk of 7 does.
    assert int(runner.step.numpy()) == int(reference.step.numpy()) == 11
    statuses = [r.status for r in results]
    assert statuses == [r.status for r in reference_results] == [
        "complete", "complete", "diverged"]
    assert [r.diverged_step for r in results] == [r.diverged_step for r in reference_results]
    np.testing.assert_array_equal(runner.diverged_at.numpy(), reference.diverged_at.numpy())
    for k in (0, 1):  # the members that did not diverge
        for got, want in zip(runner.member_weights(k), reference.member_weights(k)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert results[k].metrics["test_loss"] == pytest.approx(
            reference_results[k].metrics["test_loss"], rel=1e-5)
    # One trace (and so one compilation) serves both chunk lengths.
    assert runner._train_chunk.experimental_get_tracing_count() == 1


def test_unrolling_without_xla_trains_the_same_steps(one_step_body):
    reference, _ = one_step_body
    runner, results = _train(2, jit=False)
    assert runner.unroll == 2 and not runner.jit_compile
    assert int(runner.step.numpy()) == 11
    for got, want in zip(runner.member_weights(0), reference.member_weights(0)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)  # XLA vs not


def _copies_per_step(unroll):
    """Copy instructions of weight-sized buffers in the optimised while body, per step."""
    config = _config(unroll, steps_per_call=8)
    trainer = engine_lib.Engine(config, tiny_dataset(), tf.distribute.get_strategy())
    trainer._batch_size = 4
    runner = trainer._runner(len(MEMBERS), 4)
    runner.reset(MEMBERS, 100)
    indices = trainer.sampler.host_indices([m.seed for m in MEMBERS], 0, 8, 4, 8)
    hlo = runner._train_chunk.experimental_get_compiler_ir(
        tf.constant(indices, tf.int32), tf.constant(8, tf.int32), None)(stage="optimized_hlo")
    bodies = re.findall(r"body=%?([\w.\-]+)", hlo)
    weight_shapes = {"f32[" + ",".join(str(d) for d in w.shape) + "]" for w in runner.weights}
    # The first loop is the unrolled one (the second runs the chunk's remainder).
    body = hlo[hlo.index("\n%" + bodies[0] + " ") if ("\n%" + bodies[0] + " ") in hlo
               else hlo.index("\n" + bodies[0] + " "):]
    body = body[: body.index("\n}")]
    copies = [shape for shape in re.findall(r"= (f32\[[\d,]+\])\{[\d,]*\} copy\(", body)
              if shape in weight_shapes]
    return len(copies) / unroll


def test_the_two_step_body_copies_fewer_weights_per_step_than_the_one_step_body():
    # Why AUTO_UNROLL_XLA is 2 (engine.py): XLA copies weights that a one-step body
    # overwrites while its backward pass still reads them. If a TensorFlow upgrade stops
    # doing so, this fails and the default should be measured again.
    one, two = _copies_per_step(1), _copies_per_step(2)
    assert one > 0, "the one-step body copies no weights: re-measure AUTO_UNROLL_XLA"
    assert two < one


def test_auto_unrolls_only_a_chunk_that_is_one_xla_program():
    config = engine_config()
    assert config.train.unroll_steps == "auto"
    assert engine_lib.unroll_steps(config, whole_chunk_xla=True) == engine_lib.AUTO_UNROLL_XLA
    assert engine_lib.unroll_steps(config, whole_chunk_xla=False) == 1
    fixed = _config(3)
    assert engine_lib.unroll_steps(fixed, whole_chunk_xla=False) == 3
    # A runner: XLA on one device unrolls; no XLA does not.
    for jit, expected in ((True, engine_lib.AUTO_UNROLL_XLA), (False, 1)):
        trainer = engine_lib.Engine(_config("auto", jit), tiny_dataset(),
                                    tf.distribute.get_strategy())
        assert trainer._runner(2, 4).unroll == expected


@pytest.mark.parametrize("text, expected", [("auto", "auto"), ("AUTO", "auto"),
                                            (" Auto ", "auto"), ("1", 1), ("4", 4)])
def test_unroll_override_parses_auto_or_a_count(text, expected):
    config = _config(text)
    assert config.train.unroll_steps == expected
    experiments.validate(config)


@pytest.mark.parametrize("text", ["0", "-2", "two", "1.5", "true"])
def test_a_bad_unroll_is_refused_naming_the_field(text):
    with pytest.raises(ConfigError, match=r"train\.unroll_steps"):
        _config(text)


def test_a_bad_unroll_written_in_a_config_function_is_refused_by_validate():
    config = engine_config()
    config.unlock()
    with config.ignore_type():
        config.train.unroll_steps = 0
    with pytest.raises(ConfigError, match=r"train\.unroll_steps"):
        experiments.validate(config)


def test_unroll_is_part_of_a_cells_identity():
    # XLA fuses across the unrolled steps: the last bits differ, and a chaotic member can
    # end elsewhere, so a sweep does not resume under another factor unnoticed.
    assert experiments.config_hash(_config(1)) != experiments.config_hash(_config(2))
    assert "unroll_steps" in experiments.compare_for_resume(
        experiments.to_dict(_config(1)), _config(2))
