"""keras-tuner chief/worker mode on localhost: a chief and two workers, one killed mid-pack."""

import json
import os
import socket
import subprocess
import time

import pytest

import sweep_fixtures as fx
from tf_sgd_regimes import experiments
from tf_sgd_regimes import pack_checkpoint
from tf_sgd_regimes.sweep import distributed, grid, resume
from tf_sgd_regimes.sweep import loop as sweep_lib

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir, port, *role):
    return subprocess.Popen(fx.cli_args(workdir) + [f"--oracle_address=127.0.0.1:{port}"]
                            + list(role), env=fx.env(), cwd=fx.REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _checkpointed_pack(workdir, tuner_id):
    """The cells of the worker's pack once that pack has a checkpoint, else None."""
    try:
        with open(os.path.join(workdir, "workers", f"{tuner_id}.json")) as f:
            cells = json.load(f)["cells"]
    except (FileNotFoundError, ValueError):
        return None
    root = resume.checkpoints_dir(workdir)
    for name in os.listdir(root) if os.path.isdir(root) else ():
        try:
            with open(os.path.join(root, name, pack_checkpoint.MANIFEST)) as f:
                if json.load(f)["cells"] == cells:
                    return cells
        except (FileNotFoundError, ValueError):
            continue
    return None


def test_chief_and_two_workers_finish_the_grid_each_cell_once_despite_a_killed_worker(
        tmp_path):
    workdir = str(tmp_path / "shared")
    port = _free_port()
    chief = _start(workdir, port, "--role=chief")
    workers = {name: _start(workdir, port, "--role=worker", f"--tuner_id={name}")
               for name in ("tuner0", "tuner1")}
    deadline = time.monotonic() + 240
    killed_pack = None
    while killed_pack is None:
        assert time.monotonic() < deadline and workers["tuner0"].poll() is None
        killed_pack = _checkpointed_pack(workdir, "tuner0")
        time.sleep(0.02)
    workers["tuner0"].kill()  # mid-pack, after a checkpoint
    workers["tuner0"].communicate()
    assert not any(os.path.exists(os.path.join(workdir, "ledger", f"{c}.json"))
                   for c in killed_pack)
    workers["tuner0"] = _start(workdir, port, "--role=worker", "--tuner_id=tuner0")
    outputs = {}
    for name, process in list(workers.items()) + [("chief", chief)]:
        outputs[name], _ = process.communicate(timeout=300)
        assert process.returncode == 0, (name, outputs[name][-3000:])
    assert "every cell has ended" in outputs["chief"]
    assert "resumed from checkpoint" in outputs["tuner0"]

    records = fx.read_records(workdir)
    config = fx.config()
    dataset = sweep_lib.load_dataset(config)
    assert set(records) == {c.cell_id for c in grid.all_cells(config, dataset.steps_per_epoch)}
    assert all(r["status"] == "complete" and 0 < r["metrics"]["test_accuracy"] <= 1
               for r in records.values())
    # The killed worker's cells were retried by it after restart, from the checkpoint...
    for cell_id in killed_pack:
        record = records[cell_id]
        assert record["attempt"] == 2 and record["resumed_from_step"] > 0
        assert record["pack_id"].startswith("tuner0-")
    # ...and no other cell was ever started twice (no worker got another's cell).
    assert {c: r["attempt"] for c, r in records.items()} == {
        c: 2 if c in killed_pack else 1 for c in records}
    # Per-pack resume state is gone once every cell of the pack has its record.
    assert not os.listdir(resume.cells_dir(workdir))
    assert {r["pack_id"].split("-")[0] for r in records.values()} == {"tuner0", "tuner1"}


def test_role_comes_from_keras_tuner_environment_variables():
    assert distributed.role_from_env({}) == "standalone"
    address = {"KERASTUNER_ORACLE_IP": "10.0.0.2", "KERASTUNER_ORACLE_PORT": "8000"}
    assert distributed.role_from_env(dict(address, KERASTUNER_TUNER_ID="chief")) == "chief"
    assert distributed.role_from_env(dict(address, KERASTUNER_TUNER_ID="tuner3")) == "worker"
    with pytest.raises(experiments.ConfigError, match="KERASTUNER_TUNER_ID"):
        distributed.role_from_env(address)
    with pytest.raises(experiments.ConfigError, match="HOST:PORT"):
        distributed.set_address("no-port")
