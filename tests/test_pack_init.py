"""A pack starts from its members' own initial weights, built once per seed.

Engine.initial_values builds one Keras model per distinct seed (not one per member and
pack) and keeps its values; these tests check, for every model family in the registry,
that a re-initialised pack holds exactly the values of a model built fresh with each
member's seed, as the per-member build did before.
"""

import numpy as np
import pytest
import tensorflow as tf

from test_engine_xla import tiny_pack_config, tiny_pack_dataset
from tf_sgd_regimes import engine as engine_lib
from tf_sgd_regimes import models


def _members(seeds):
    return [engine_lib.Member(f"m{k}", 0.05, 0.9, seed) for k, seed in enumerate(seeds)]


def _assert_pack_holds_fresh_builds(trainer, runner, seeds):
    for k, seed in enumerate(seeds):
        fresh, again = trainer.build_model(seed=seed), trainer.build_model(seed=seed)
        for variable, value in zip(runner.weights, fresh.trainable_variables):
            np.testing.assert_array_equal(variable.numpy()[k], np.asarray(value))
        for j, (variable, value, other) in enumerate(zip(
                runner.states, fresh.non_trainable_variables, again.non_trainable_variables)):
            if runner._is_carried(j):  # carried (LSTM) state starts at zero
                continue
            if not np.array_equal(np.asarray(value), np.asarray(other)):
                # Not fixed by the seed: Keras' LSTM makes an unseeded generator for its
                # own dropout (unused: the model's dropout is ReplicaDropout, seeded).
                assert value.path.endswith("seed_generator_state"), value.path
                continue
            np.testing.assert_array_equal(variable.numpy()[k], np.asarray(value))


@pytest.mark.parametrize("name", models.names())
def test_reset_pack_equals_per_member_builds(name, monkeypatch):
    batch = 2
    trainer = engine_lib.Engine(tiny_pack_config(name, False), tiny_pack_dataset(name, batch),
                                tf.distribute.get_strategy())
    trainer._batch_size = batch
    runner = trainer._runner(3, batch)
    built = []
    build = trainer.build_model
    monkeypatch.setattr(trainer, "build_model", lambda seed: built.append(seed) or build(seed))
    first, second = [3, 5, 3], [5, 7, 3]
    runner.reset(_members(first), 10)
    assert sorted(built) == [3, 5]  # one model per distinct seed
    monkeypatch.setattr(trainer, "build_model", build)
    _assert_pack_holds_fresh_builds(trainer, runner, first)
    # Distinct seeds really start apart (else the comparison above could not fail).
    assert not np.array_equal(runner.weights[0].numpy()[0], runner.weights[0].numpy()[1])
    # The next pack reuses seeds 5 and 3 and builds only 7.
    monkeypatch.setattr(trainer, "build_model", lambda seed: built.append(seed) or build(seed))
    runner.reset(_members(second), 10)
    assert sorted(built) == [3, 5, 7]
    # A one-byte budget keeps just the newest seed: seed 9 is built again after 11 evicted
    # it, and the pack still holds the right values.
    monkeypatch.setattr(engine_lib, "INITIAL_VALUES_BYTES", 1)
    third = [9, 11, 9]
    runner.reset(_members(third), 10)
    assert sorted(built) == [3, 5, 7, 9, 9, 11] and [k[0] for k in trainer._initial] == [9]
    monkeypatch.setattr(trainer, "build_model", build)
    _assert_pack_holds_fresh_builds(trainer, runner, third)
