"""The README's "Add your own workload" section, run as written from a directory outside
the package: its files are written there, its commands and its script are run."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO
from tf_sgd_regimes.sweep import ledger

SECTION = "## Add your own workload"
# Appended to the README's commands: the same study on a grid of seconds.
SHRINK = ["--config.sweep.batch_sizes=(8,32)", "--config.sweep.effective_lrs=(0.03,0.3)",
          "--config.sweep.seeds=(0,1)", "--config.sweep.optimizers=('sgd',)",
          "--config.analysis.best_k=1", "--config.analysis.num_seeds=2",
          "--config.budget.epochs=1"]


def section_blocks():
    """(language, code) of every fenced block in the section, in order."""
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    body = text[start:end if end > 0 else len(text)]
    return re.findall(r"```(\w+)\n(.*?)```", body, flags=re.S)


def env():
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="2")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The section's files written into a fresh directory; its commands and scripts."""
    directory = tmp_path_factory.mktemp("study")
    assert not str(directory).startswith(str(REPO))
    commands, scripts = [], []
    for language, code in section_blocks():
        first = code.splitlines()[0]
        if language == "python" and re.fullmatch(r"# [\w.]+\.py", first):
            (directory / first[2:]).write_text(code)
        elif language == "python":
            scripts.append(code)
        elif language == "sh":
            for line in code.replace("\\\n", " ").splitlines():
                if line.strip().startswith("python -m tf_sgd_regimes.run"):
                    commands.append(shlex.split(line))
    return directory, commands, scripts


def test_the_section_has_the_two_files_two_commands_and_a_script(study):
    directory, commands, scripts = study
    assert {p.name for p in directory.iterdir()} == {"my_workload.py", "my_experiment.py"}
    assert [c[3].split(":")[1] for c in commands] == ["classification", "regression"]
    assert len(scripts) == 1


@pytest.mark.slow
@pytest.mark.parametrize("index, metric", [(0, "test_accuracy"), (1, "test_mse")])
def test_readme_commands_run_and_report(study, index, metric):
    directory, commands, _ = study
    command = [sys.executable] + commands[index][1:] + SHRINK
    done = subprocess.run(command, cwd=directory, env=env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    workdir = directory / next(a.split("=", 1)[1] for a in command if a.startswith("--workdir"))
    records = ledger.read(str(workdir))
    assert len(records) == 8 and all(r["status"] == "complete" for r in records)
    assert all(metric in r["metrics"] for r in records)
    report = (workdir / "report" / "report.txt").read_text()
    assert f"selection: {metric}" in report and "## SGD" in report
    assert f"[run] report: {workdir / 'report' / 'report.txt'}" in done.stdout


@pytest.mark.slow
def test_readme_script_runs_with_its_own_loss(study):
    directory, _, (script,) = study
    (directory / "script.py").write_text(script)
    done = subprocess.run([sys.executable, "script.py"], cwd=directory, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "selection: test_mae on the test split (lower is better)" in done.stdout
    records = ledger.read(str(directory / "runs" / "line_huber"))
    assert len(records) == 12
    for record in records:
        assert set(record["metrics"]) >= {"test_loss", "test_mae", "train_loss", "train_mae"}
        assert record["data"]["name"] == "line_huber" and record["data"]["task"] == "huber"
