"""Every model family gives the one-device result on 2 and 4 replicas (MirroredStrategy over
logical CPU devices), cell by cell; ghost batch norm groups the global batch.

The subprocess (tests/multi_replica_runs.py) trains each family's tiny pack on 1, 2 and 4
replicas; this file runs every family but the ResNet-50 (test_multi_replica_resnet50.py),
plus the ghost-BN layer on its own and several sweeps in one process (a notebook).
"""

import numpy as np
import pytest

import multi_replica_runs

FAMILIES = tuple(f for f in multi_replica_runs.FAMILIES if f != "resnet50")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs():
    return multi_replica_runs.run(FAMILIES, extras=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_one_device_on_2_and_4_replicas(runs, family):
    multi_replica_runs.check_family(runs["families"][family])


def test_some_member_diverges_so_the_divergence_step_is_compared(runs):
    steps = [r["diverged_step"] for family in runs["families"].values()
             for r in family["1"] if r["status"] == "diverged"]
    assert steps and all(s is not None for s in steps)


def test_ghost_batch_norm_over_the_global_batch_equals_one_device(runs):
    one, two = runs["ghost"]["1"], runs["ghost"]["2"]
    for key in ("y", "dx", "dgamma", "moving_mean", "moving_variance"):
        np.testing.assert_allclose(np.array(two[key]), np.array(one[key]), rtol=1e-5,
                                   atol=1e-5, err_msg=key)
    # And one device is the closed form: one group of all 16 examples.
    x = np.random.default_rng(3).normal(2.0, 3.0, size=(16, 4, 4, 3)).astype(np.float64)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(np.array(one["y"]), (x - mean) / np.sqrt(var + 1e-5), atol=1e-4)
    np.testing.assert_allclose(one["moving_mean"], 0.5 * mean, rtol=1e-5)


def test_several_sweeps_in_one_process_under_one_strategy(runs):
    assert runs["notebook_replicas"] == 4
    assert set(runs["notebook"]) == {"digits_wrn_epoch_budget", "synthetic_lstm_epoch_budget",
                                     "digits_cnn_epoch_budget"}
    for experiment, records in runs["notebook"].items():
        assert records and all(status == "complete" for status, _ in records), (
            experiment, records)


def test_augmentation_of_a_replica_share_is_that_rows_share_of_the_global_batch():
    import tensorflow as tf

    from tf_sgd_regimes.data import augment

    images = tf.constant(np.random.default_rng(5).normal(size=(8, 6, 6, 2)), tf.float32)
    seed = tf.constant([7, 11])
    whole = augment.pad_crop_flip(images, seed, pad=2)
    shares = [augment.pad_crop_flip(images[r * 2:(r + 1) * 2], seed, pad=2, rows=(r * 2, 8))
              for r in range(4)]
    np.testing.assert_array_equal(np.concatenate(shares), whole.numpy())
    # Not vacuous: the crops differ between examples.
    assert not np.array_equal(whole.numpy()[0], images.numpy()[0])
