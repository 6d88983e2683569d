"""The Colab notebook's Python cells run as written (shell and magic lines aside), shrunk."""

import json
import subprocess
import sys
import textwrap
import zipfile

import IPython.display

from conftest import REPO, run_python, shrunk_config

from tf_sgd_regimes import experiments


def _code_cells():
    with open(REPO / "notebooks" / "colab_tpu_sweep.ipynb") as f:
        notebook = json.load(f)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            # `!pip ...` and `%magic` lines are IPython's, not Python.
            yield "".join(line for line in cell["source"]
                          if not line.lstrip().startswith(("!", "%")))


def test_notebook_cells_run_and_show_every_png_figure(tmp_path, monkeypatch):
    requested = []
    shrunk = shrunk_config(lock=False)

    def get_config(name):  # the notebook's experiment, shrunk to seconds
        requested.append(name)
        return shrunk

    monkeypatch.setattr(experiments, "get_config", get_config)
    shown = []  # what the notebook displays
    monkeypatch.setattr(IPython.display, "Image", lambda filename: filename)
    monkeypatch.setattr(IPython.display, "display", shown.append)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for source in _code_cells():
        exec(compile(source, "colab_tpu_sweep.ipynb", "exec"), namespace)
    assert requested == [experiments.DEFAULT_EXPERIMENT]
    assert "## Momentum" in namespace["result"]["text"]
    figures = namespace["result"]["figures"]
    pngs = [str(path) for _, paths in sorted(figures.items()) for path in paths
            if str(path).endswith(".png")]
    assert len(pngs) == len(figures) >= 3 and shown == pngs  # one PNG per figure


_MIRRORED_NOTEBOOK = textwrap.dedent("""
    import json, os, sys, tempfile
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, "tests")
    import IPython.display
    from conftest import shrunk_config
    from tf_sgd_regimes import experiments
    import test_notebook
    shrunk = shrunk_config(lock=False)
    experiments.get_config = lambda name: shrunk
    IPython.display.Image = lambda filename: filename
    IPython.display.display = lambda item: None
    cells = list(test_notebook._code_cells())
    os.chdir(tempfile.mkdtemp())
    namespace = {}
    for source in cells:
        source = source.replace('STRATEGY = "auto"', 'STRATEGY = "mirrored"')
        exec(compile(source, "colab_tpu_sweep.ipynb", "exec"), namespace)
    print("RESULT" + json.dumps({
        "replicas": namespace["strategy_"].num_replicas_in_sync,
        "strategy": namespace["config"].strategy,
        "statuses": sorted({r["status"] for r in namespace["records"]})}))
""")


def test_notebook_cells_run_under_mirrored_strategy_on_two_logical_devices():
    done = run_python(_MIRRORED_NOTEBOOK)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")][-1]
    out = json.loads(line[len("RESULT"):])
    assert out == {"replicas": 2, "strategy": "mirrored", "statuses": ["complete"]}


def test_notebook_installs_a_wheel_that_holds_the_package_and_its_configs(tmp_path):
    # What the notebook's install cell installs: a wheel built from the repository.
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("tf_sgd_regimes-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"tf_sgd_regimes/strategy.py", "tf_sgd_regimes/engine.py",
            "tf_sgd_regimes/configs/embedded.py"} <= names
    notebook = "".join(line for cell in json.load(open(REPO / "notebooks" /
                                                      "colab_tpu_sweep.ipynb"))["cells"]
                       for line in cell["source"])
    assert "tf_sgd_regimes-*.whl" in notebook and "pip install" in notebook
