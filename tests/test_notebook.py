"""The Colab notebook's Python cells run as written (shell and magic lines aside), shrunk."""

import json

import IPython.display

from conftest import REPO, shrunk_config

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
