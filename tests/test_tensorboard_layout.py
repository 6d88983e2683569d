"""TensorBoard layouts: a run per cell for small sweeps, a run per grid point above
config.tensorboard.per_cell_sessions_max (means over seeds, seeds' tags), and the export
of per-cell runs for a subset. Checked with TensorBoard's own event reader."""

import io
import json
import os

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tf_sgd_regimes import experiments
from tf_sgd_regimes.sweep import ledger, summaries
from tf_sgd_regimes.sweep import loop as sweep_lib


def nqm(rates=3, seeds=3, *extra):
    lrs = ",".join(repr(2.0 ** (-4 + 2 * i)) for i in range(rates))
    return experiments.apply_overrides(
        experiments.get_config("nqm_epoch_budget"),
        (f"sweep.effective_lrs=({lrs},)", f"sweep.seeds=({','.join(map(str, range(seeds)))},)",
         f"analysis.num_seeds={seeds}", "analysis.best_k=1",
         "sweep.batch_sizes=(16,64)") + tuple(extra))


def load(run_directory):
    """TensorBoard's own reading of a run: (tag -> [(step, value)], session start info)."""
    acc = event_accumulator.EventAccumulator(run_directory, size_guidance={
        event_accumulator.TENSORS: 0})
    acc.Reload()
    scalars = {tag: [(e.step, float(e.tensor_proto.float_val[0])) for e in acc.Tensors(tag)]
               for tag in acc.Tags()["tensors"] if not tag.startswith("_hparams_")}
    start = None
    if "_hparams_/session_start_info" in acc.Tags()["tensors"]:
        content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
        start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return scalars, start


def run_sweep(workdir, config):
    return sweep_lib.Sweep(config, str(workdir), stream=io.StringIO()).run()


@pytest.mark.parametrize("pack_size", [0, 2])  # 2: a point's 3 seeds span two packs
def test_large_sweeps_get_one_run_per_grid_point_with_means_over_seeds(tmp_path, pack_size):
    config = nqm(3, 3, "tensorboard.per_cell_sessions_max=10", f"sweep.pack_size={pack_size}")
    records = run_sweep(tmp_path, config)
    assert len(records) == 2 * 2 * 3 * 3
    root = summaries.tensorboard_dir(str(tmp_path))
    assert summaries.read_layout(str(tmp_path)) == "point"
    points = {}
    for record in records:
        points.setdefault(summaries.point_id(record["cell_id"]), []).append(record)
    runs = sorted(os.path.join(group, name) for group in os.listdir(root)
                  if os.path.isdir(os.path.join(root, group))
                  for name in os.listdir(os.path.join(root, group)))
    assert len(runs) == len(points) == 12  # 2 optimizers x 2 batch sizes x 3 rates
    for run in runs:
        seeds = points[os.path.basename(run)]
        scalars, start = load(os.path.join(root, run))
        h = seeds[0]["hparams"]
        assert start.group_name == os.path.basename(run)
        assert set(start.hparams) == set(summaries.HPARAM_NAMES) - {"seed"}
        assert start.hparams["effective_lr"].number_value == h["effective_lr"]
        # The point's metrics at its last step: means over all its seeds' ledger records.
        assert scalars["final/seeds"][-1] == (3, 3.0)
        completed = [r for r in seeds if r["status"] == "complete"]
        assert scalars["final/diverged"][-1][1] == pytest.approx(
            1 - len(completed) / 3, abs=1e-6)
        if completed:
            mean = sum(r["metrics"]["test_loss"] for r in completed) / len(completed)
            assert scalars["final/test_loss"][-1][1] == pytest.approx(mean, rel=1e-6)
        for record in seeds:  # each seed's own tags, once each
            seed = record["hparams"]["seed"]
            assert [v for _, v in scalars[f"s{seed}/final/diverged"]] == [
                float(record["status"] == "diverged")]
            steps = [s for s, _ in scalars[f"s{seed}/train/loss"]]
            assert steps == sorted(set(steps)) and steps[-1] <= h["steps"]
    # A directory per point, and a final file per pack that held its seeds.
    split = 0
    for run in runs:
        packs = {r["pack_id"] for r in points[os.path.basename(run)]}
        assert len(os.listdir(os.path.join(root, run))) == len(packs)
        split += len(packs) > 1
    assert split == (0 if pack_size == 0 else 12)  # packs of 2 cut every 3-seed point
    with open(os.path.join(root, summaries.LAYOUT_FILE)) as f:
        assert json.load(f)["layout"] == "point"


def test_small_sweeps_keep_a_run_per_cell_and_a_layout_once_chosen(tmp_path):
    config = nqm(2, 2, "tensorboard.per_cell_sessions_max=16")  # 16 cells: at the limit
    records = run_sweep(tmp_path, config)
    assert summaries.read_layout(str(tmp_path)) == "cell"
    for record in records:
        scalars, start = load(summaries.run_dir(str(tmp_path), record))
        assert start.group_name == record["cell_id"]
        assert start.hparams["seed"].number_value == record["hparams"]["seed"]
    # The grid grows past the limit: the sweep keeps its per-cell runs.
    grown = run_sweep(tmp_path, nqm(2, 3, "tensorboard.per_cell_sessions_max=16"))
    assert len(grown) == 24 and summaries.read_layout(str(tmp_path)) == "cell"
    assert all(os.path.isdir(summaries.run_dir(str(tmp_path), r)) for r in grown)


def test_a_bad_limit_is_refused_naming_the_field(tmp_path):
    with pytest.raises(experiments.ConfigError, match="tensorboard.per_cell_sessions_max"):
        sweep_lib.Sweep(nqm(2, 2, "tensorboard.per_cell_sessions_max=-1"), str(tmp_path),
                        stream=io.StringIO())


def test_export_writes_per_cell_sessions_for_a_subset(tmp_path, capsys):
    workdir = str(tmp_path / "w")
    records = run_sweep(workdir, nqm(2, 3, "tensorboard.per_cell_sessions_max=0"))
    wanted = sorted(r["cell_id"] for r in records if r["cell_id"].startswith("momentum_B00016"))
    assert summaries.main(["--workdir", workdir, "--cells", "momentum_B00016_*"]) == 0
    out = os.path.join(workdir, "tensorboard_cells")
    assert f"{len(wanted)} cells exported" in capsys.readouterr().out
    by_id = {r["cell_id"]: r for r in records}
    point_runs = {}
    for cell_id in wanted:
        record = by_id[cell_id]
        scalars, start = load(os.path.join(out, summaries.run_name(record["hparams"], cell_id)))
        assert start.group_name == cell_id
        assert start.hparams["seed"].number_value == record["hparams"]["seed"]
        for name, value in record["metrics"].items():
            if value is not None:
                assert scalars[f"final/{name}"][-1][1] == pytest.approx(value, rel=1e-6)
        # The curve is the seed's curve in its grid point's run.
        point = summaries.run_dir(workdir, record)
        point_scalars = point_runs.setdefault(point, load(point)[0])
        seed = record["hparams"]["seed"]
        assert scalars["train/loss"] == point_scalars[f"s{seed}/train/loss"]
    assert sorted(os.listdir(os.path.join(out, "momentum_B00016"))) == wanted
    assert summaries.main(["--workdir", workdir, "--cells", "nothing_*"]) == 2
    assert "no recorded cell" in capsys.readouterr().err
    assert ledger.read(workdir) == sorted(records, key=lambda r: r["cell_id"])
