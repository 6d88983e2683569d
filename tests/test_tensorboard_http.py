"""A finished sweep seen the way a user sees it: a real `tensorboard` server, its hparams API."""

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import sweep_fixtures as fx
from tf_sgd_regimes.sweep import loop as sweep_lib
from tf_sgd_regimes.sweep import summaries

pytestmark = pytest.mark.slow

HPARAMS = ("optimizer", "batch_size", "effective_lr", "momentum", "seed", "epochs", "steps")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(base, route, body):
    request = urllib.request.Request(f"{base}/data/plugin/hparams/{route}",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """8 cells, two of which diverge at step 1."""
    workdir = str(tmp_path_factory.mktemp("tb"))
    config = fx.config("sweep.effective_lrs=(0.2,128.0)", "train.divergence_loss=5.0")
    records = sweep_lib.Sweep(config, workdir, stream=io.StringIO()).run()
    return workdir, config, records


@pytest.fixture(scope="module")
def server(finished_sweep):
    workdir, _, _ = finished_sweep
    port = _free_port()
    tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    process = subprocess.Popen(
        [tensorboard, f"--logdir={summaries.tensorboard_dir(workdir)}", "--host=127.0.0.1",
         f"--port={port}", "--reload_interval=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=fx.env())
    base = f"http://127.0.0.1:{port}"
    try:
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def _session_groups(base, metric_tags, expected):
    """The hparams dashboard's own request: every hparam and metric column, all groups."""
    body = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                            "STATUS_RUNNING"],
        "colParams": ([{"hparam": name, "includeInResult": True} for name in HPARAMS]
                      + [{"metric": {"tag": tag, "group": ""}, "includeInResult": True}
                         for tag in metric_tags]),
        "startIndex": 0,
        "sliceSize": 1000,
        "includeMetrics": True,
    }
    deadline = time.monotonic() + 120
    while True:  # the server loads event files in the background
        try:
            groups = _post(base, "session_groups", body).get("sessionGroups", [])
            if len(groups) >= expected:
                return groups
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "TensorBoard never listed every session group"
        time.sleep(0.5)


def test_every_cell_appears_with_its_hparams_and_metrics(finished_sweep, server):
    workdir, config, records = finished_sweep
    base, process = server
    assert len(records) == 8 and sum(r["status"] == "diverged" for r in records) == 4
    tags = summaries.metric_names("classification", "test")
    groups = _session_groups(base, tags, len(records))
    assert process.poll() is None
    assert len(groups) == len(records)
    by_name = {group["name"]: group for group in groups}
    assert set(by_name) == {r["cell_id"] for r in records}  # one session group per cell
    for record in records:
        group = by_name[record["cell_id"]]
        for name in HPARAMS:
            assert group["hparams"][name] == pytest.approx(record["hparams"][name]), name
        metrics = {m["name"]["tag"]: m["value"] for m in group.get("metricValues", [])}
        diverged = record["status"] == "diverged"
        assert metrics["final/diverged"] == (1.0 if diverged else 0.0)
        if diverged:
            assert metrics["final/diverged_step"] == record["diverged_step"]
            assert "final/test_accuracy" not in metrics
        else:
            for name in ("test_accuracy", "test_loss", "train_loss"):
                assert metrics[f"final/{name}"] == pytest.approx(record["metrics"][name],
                                                                 rel=1e-6)


def test_the_experiment_declares_every_hparam_domain_and_metric(finished_sweep, server):
    _, config, _ = finished_sweep
    base, _ = server
    experiment = _post(base, "experiment", {"experimentName": "", "includeMetrics": True})
    hparams = {h["name"]: h for h in experiment["hparamInfos"]}
    assert set(hparams) == set(HPARAMS)
    assert hparams["batch_size"]["domainDiscrete"] == [16, 32]
    assert hparams["optimizer"]["domainDiscrete"] == ["momentum"]
    assert hparams["effective_lr"]["domainInterval"] == {"minValue": 0.2, "maxValue": 128.0}
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"final/test_accuracy", "final/train_loss", "final/diverged"} <= metrics
