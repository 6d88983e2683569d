"""The command line, run as a user runs it: python -m tf_sgd_regimes.run ..."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from tf_sgd_regimes.sweep import ledger

TINY = ["--config.model.hidden=(16,)", "--config.budget.epochs=1",
        "--config.sweep.batch_sizes=(64,128)", "--config.sweep.effective_lrs=(0.0625,0.25,1.0)",
        "--config.sweep.seeds=(0,1)", "--config.analysis.best_k=1",
        "--config.analysis.num_seeds=2"]


def cli(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "tf_sgd_regimes.run", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("flag", ["--experiment=list", "--list"])
def test_list_prints_every_experiment(flag):
    from tf_sgd_regimes import experiments

    done = cli(flag)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    for name in experiments.names():
        line = next(x for x in lines if x.startswith(name))
        assert experiments.get_config(name).cost in line


def test_list_answers_without_loading_tensorflow():
    code = ("import runpy, sys\n"
            "sys.argv = ['run', '--list']\n"
            "try:\n"
            "    runpy.run_module('tf_sgd_regimes.run', run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert "TF_NOT_LOADED" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


def test_unknown_experiment_exits_2_listing_the_known_ones(tmp_path):
    done = cli("--experiment=digits_mpl", f"--workdir={tmp_path / 'w'}")
    assert done.returncode == 2
    assert "'digits_mpl'" in done.stderr and "digits_mlp_epoch_budget" in done.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("override, field", [
    ("--config.sweep.batch_size=(8,)", "sweep.batch_size"),
    ("--config.budget.epochs=lots", "budget.epochs"),
    ("--config.sweep.effective_lrs=(0.5,-1.0)", "config.sweep.effective_lrs"),
])
def test_bad_override_exits_2_before_any_training(tmp_path, override, field):
    workdir = tmp_path / "w"
    done = cli(override, f"--workdir={workdir}")
    assert done.returncode == 2
    assert field in done.stderr
    assert "[sweep]" not in done.stdout
    assert not workdir.exists()  # refused before the sweep touched anything


def test_a_bucket_workdir_is_refused_with_what_to_do_instead(tmp_path):
    done = cli("--workdir=gs://bucket/sweep", *TINY)
    assert done.returncode == 2
    assert "gs://bucket/sweep" in done.stderr and "local" in done.stderr
    assert "gsutil -m rsync" in done.stderr
    assert "[sweep]" not in done.stdout and not (REPO / "gs:").exists()


@pytest.mark.slow
def test_tiny_full_run_prints_table_and_paths(tmp_path):
    workdir = tmp_path / "run"
    done = cli(f"--workdir={workdir}", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "[sweep] cells 24/24" in out
    # One table per optimizer with a row per batch size.
    for title in ("## SGD", "## Momentum"):
        section = out.split(title, 1)[1]
        assert "batch size" in section
        assert re.search(r"^64 ", section, re.M) and re.search(r"^128 ", section, re.M)
    assert "24 records" in out
    figure = re.search(r"figure \(test_vs_batch\): (\S+\.png)", out)
    assert figure, out[-2000:]
    png = figure.group(1)
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 1000
    lr_figure = re.search(r"figure \(optimal_lr_vs_batch\): (\S+\.png)", out)
    assert lr_figure and os.path.exists(lr_figure.group(1))
    report = re.search(r"report: (\S+)", out)
    assert report and os.path.exists(report.group(1))
    tensorboard = re.search(r"tensorboard --logdir (\S+)", out)
    assert tensorboard and os.path.isdir(tensorboard.group(1))
    runs = [d for d, _, files in os.walk(tensorboard.group(1))  # <optimizer>_B<B>/<cell>
            if d != tensorboard.group(1) and any("tfevents" in f for f in files)]
    assert len(runs) == 24
    assert len(ledger.read(str(workdir))) == 24

    # A different config in the same work directory is refused, naming the field.
    changed = cli(f"--workdir={workdir}", *TINY, "--config.model.hidden=(8,)")
    assert changed.returncode == 2
    assert "model.hidden" in changed.stderr and "--workdir" in changed.stderr
