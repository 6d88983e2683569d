"""XLA (jit_compile=True, the TPU's compiler) under MirroredStrategy: every model family of the
registry but the convnets (test_multi_replica_xla_convnets.py) trains on 2 logical CPU
replicas, compiled, and gives the one-device result; each compiled part compiles once per
shape; a diverged member leaves the others' weights alone; ghost groups spanning replicas
are refused. The subprocess and what it checks: tests/multi_replica_xla_runs.py.
"""

import pytest

import multi_replica_xla_runs as xr
from tf_sgd_regimes import models

FAMILIES = [name for name in xr.FAMILIES if name not in xr.CONVNETS]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs():
    return xr.run(FAMILIES, refusal=True)


def test_families_cover_every_task_and_the_convnets():
    tasks = {models.TASKS[name] for name in xr.FAMILIES}
    assert {"classification", "language_model", "autoencoder"} <= tasks, xr.FAMILIES
    assert set(xr.CONVNETS) == {"small_cnn", "small_wrn", "wide_resnet", "resnet50"}
    assert {"language_model", "autoencoder"} <= {models.TASKS[name] for name in FAMILIES}


@pytest.mark.parametrize("name", FAMILIES)
def test_family_under_xla_on_2_replicas_matches_one_device(runs, name):
    xr.check_family_matches_one_device(runs[0][name])


def test_each_compiled_part_compiles_once_per_shape_and_never_again_in_a_later_pack(runs):
    xr.check_compiled_once_per_shape(runs[1], FAMILIES)


@pytest.mark.parametrize("name", [n for n in FAMILIES if models.TASKS[n] != "language_model"])
def test_a_diverged_member_leaves_the_other_members_weights_alone(runs, name):
    xr.check_diverged_member_leaves_the_other_alone(runs[0][name]["beside"])


def test_ghost_groups_spanning_replicas_are_refused_under_xla_naming_the_layout(runs):
    message = runs[0]["refused"]
    assert "batch size 8" in message and "2 replicas" in message
    assert "ghost batch size 8" in message and "jit_compile" in message
