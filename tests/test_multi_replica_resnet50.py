"""The ResNet-50 on 2 and 4 replicas gives the one-device result, with ghost groups of 8
in a global batch of 16: local groups on 2 replicas, groups spanning replicas on 4; and a
global batch that 4 replicas cannot share out is refused, naming the layout.

Its own file (see tests/multi_replica_runs.py): on 4 replicas it is the slowest family.
"""

import pytest

import multi_replica_runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs():
    return multi_replica_runs.run(("resnet50",), extras=False)


def test_resnet50_matches_one_device_on_2_and_4_replicas(runs):
    multi_replica_runs.check_family(runs["families"]["resnet50"])


def test_layout_replicas_cannot_share_is_refused_naming_batch_replicas_and_ghost(runs):
    message = runs["refused"]
    assert "18" in message and "4 replicas" in message and "ghost batch size 8" in message
