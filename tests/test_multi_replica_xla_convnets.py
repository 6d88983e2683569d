"""XLA under MirroredStrategy for the registry's convnets (on a CPU their packs' convolutions
compile as batched matmuls, member_map.shifted_conv2d): on 2 logical CPU replicas,
compiled, each gives the one-device result, compiles each part once per shape, and a
diverged member leaves the other's kernels alone. The other families:
test_multi_replica_xla.py; the subprocess: tests/multi_replica_xla_runs.py.
"""

import pytest

import multi_replica_xla_runs as xr

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs():
    return xr.run(xr.CONVNETS, refusal=False)


@pytest.mark.parametrize("name", xr.CONVNETS)
def test_convnet_under_xla_on_2_replicas_matches_one_device(runs, name):
    xr.check_family_matches_one_device(runs[0][name])


def test_each_compiled_part_compiles_once_per_shape_and_never_again_in_a_later_pack(runs):
    xr.check_compiled_once_per_shape(runs[1], xr.CONVNETS)


@pytest.mark.parametrize("name", xr.CONVNETS)
def test_a_diverged_member_leaves_the_other_members_weights_alone(runs, name):
    xr.check_diverged_member_leaves_the_other_alone(runs[0][name]["beside"])
