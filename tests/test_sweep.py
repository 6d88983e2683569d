"""A sweep end to end on the real default config, shrunk: records, resume, TensorBoard."""

import io
import itertools
import os
import shutil

import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import shrunk_config
from tf_sgd_regimes import experiments
from tf_sgd_regimes.sweep import grid, ledger, summaries
from tf_sgd_regimes.sweep import loop as sweep_lib

NUM_TRAIN = 1437  # digits: 1,797 images, 20% held out (stratified)
GRID = dict(optimizers=("sgd", "momentum"), batch_sizes=(64, 128),
            effective_lrs=(0.0625, 0.25, 1.0), seeds=(0, 1))
SCHEMA = {"cell_id", "experiment", "status", "hparams", "metrics", "diverged_step", "error",
          "steps_done", "wall_time_s", "attempt", "config_hash", "versions", "created",
          "pack_id"}


def run_sweep(config, workdir, **kwargs):
    stream = io.StringIO()
    packs = []
    records = sweep_lib.Sweep(config, str(workdir), stream=stream, **kwargs).run(
        on_pack=packs.append)
    return records, packs, stream.getvalue()


def record_mtimes(workdir):
    directory = ledger.ledger_dir(str(workdir))
    return {name: os.stat(os.path.join(directory, name)).st_mtime_ns
            for name in os.listdir(directory)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(workdir, records, progress text) of the shrunk default sweep, run once."""
    workdir = tmp_path_factory.mktemp("sweep")
    records, packs, text = run_sweep(shrunk_config(), workdir)
    return workdir, records, packs, text


def copy_of(finished, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(finished[0], target)
    return target


def test_exactly_one_record_per_cell(finished):
    workdir, records, packs, _ = finished
    assert len(records) == 2 * 2 * 3 * 2 == 24
    combos = {(r["hparams"]["optimizer"], r["hparams"]["batch_size"],
               r["hparams"]["effective_lr"], r["hparams"]["seed"]) for r in records}
    assert combos == set(itertools.product(*GRID.values()))
    assert len({r["cell_id"] for r in records}) == 24
    assert records == ledger.read(str(workdir))
    assert sum(len(p) for p in packs) == 24
    # Packs share batch size: one pack per batch size, every lr, seed and optimizer in it.
    assert sorted(len(p) for p in packs) == [12, 12]
    for pack in packs:
        assert len({r["hparams"]["batch_size"] for r in pack}) == 1
        assert len({r["pack_id"] for r in pack}) == 1


def test_records_follow_the_schema(finished):
    _, records, _, _ = finished
    config = shrunk_config()
    for r in records:
        assert SCHEMA <= set(r), SCHEMA - set(r)
        # The data set's fingerprint is part of the record and of its config hash.
        assert r["data"]["name"] == "digits" and r["data"]["num_test"] == 360
        expected_hash = experiments.config_hash(config, r["data"])
        assert r["status"] == "complete" and r["error"] is None and r["diverged_step"] is None
        assert r["attempt"] == 1 and r["config_hash"] == expected_hash
        assert r["experiment"] == "digits_mlp_epoch_budget"
        assert {"tensorflow", "keras", "keras_tuner", "python", "tf_sgd_regimes"} <= set(
            r["versions"])
        h = r["hparams"]
        momentum = 0.9 if h["optimizer"] == "momentum" else 0.0
        assert h["momentum"] == momentum
        assert h["learning_rate"] == pytest.approx(h["effective_lr"] * (1 - momentum))
        # Constant epoch budget: steps = epochs * N / B, rounded.
        assert h["epochs"] == 1.0
        assert h["steps"] == round(NUM_TRAIN / h["batch_size"]) == r["steps_done"]
        m = r["metrics"]
        assert 0.0 <= m["test_accuracy"] <= 1.0 and 0.0 <= m["train_accuracy"] <= 1.0
        assert m["train_loss"] > 0 and m["test_loss"] > 0
        assert r["wall_time_s"] >= 0


def test_learning_happens(finished):
    # Not a constant-guessing stub: a moderate rate beats chance (10 classes) clearly.
    _, records, _, _ = finished
    best = max(r["metrics"]["test_accuracy"] for r in records)
    assert best > 0.5
    assert len({round(r["metrics"]["test_accuracy"], 6) for r in records}) > 4


def test_progress_is_reported(finished):
    _, _, _, text = finished
    assert "cells 24/24" in text
    assert "ETA" in text and "elapsed" in text


def test_second_run_trains_nothing(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    before = record_mtimes(workdir)
    tensorboard_before = sorted(os.listdir(summaries.tensorboard_dir(str(workdir))))
    records, packs, _ = run_sweep(shrunk_config(), workdir)
    assert sum(len(p) for p in packs) == 0
    assert record_mtimes(workdir) == before
    assert len(records) == 24
    assert sorted(os.listdir(summaries.tensorboard_dir(str(workdir)))) == tensorboard_before


def test_changed_config_is_refused_naming_the_field(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    before = record_mtimes(workdir)
    with pytest.raises(experiments.ConfigError) as info:
        sweep_lib.Sweep(shrunk_config(["model.hidden=(32,)"]), str(workdir),
                        stream=io.StringIO())
    message = str(info.value)
    assert "model.hidden" in message and "--workdir" in message
    with pytest.raises(experiments.ConfigError, match="sweep.seeds"):
        sweep_lib.Sweep(shrunk_config(["sweep.seeds=(0,)"]), str(workdir),
                        stream=io.StringIO())
    assert record_mtimes(workdir) == before


def test_grown_grid_runs_only_the_new_cells(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    before = record_mtimes(workdir)
    grown = shrunk_config(["sweep.effective_lrs=(0.0625,0.25,1.0,4.0)"])
    records, packs, _ = run_sweep(grown, workdir)
    new = [r for pack in packs for r in pack]
    assert len(new) == 2 * 2 * 1 * 2
    assert {r["hparams"]["effective_lr"] for r in new} == {4.0}
    assert len(records) == 32
    after = record_mtimes(workdir)
    assert {k: after[k] for k in before} == before
    # The cells are the grid's, as grid.all_cells lists them.
    data = sweep_lib.load_dataset(grown)
    assert {c.cell_id for c in grid.all_cells(grown, data.steps_per_epoch)} == {
        r["cell_id"] for r in records}


def test_diverging_learning_rates_are_recorded_and_the_sweep_finishes(tmp_path):
    config = shrunk_config(["sweep.batch_sizes=(64,)", "sweep.effective_lrs=(0.25,4096.0)"])
    records, _, _ = run_sweep(config, tmp_path)
    assert len(records) == 2 * 1 * 2 * 2
    for r in records:
        if r["hparams"]["effective_lr"] == 4096.0:
            assert r["status"] == "diverged"
            assert isinstance(r["diverged_step"], int)
            assert 0 <= r["diverged_step"] < r["hparams"]["steps"]
            assert all(v is None for v in r["metrics"].values())
        else:
            assert r["status"] == "complete" and r["metrics"]["test_accuracy"] is not None


def hparams_of_run(run_dir):
    """The hparams (session start info) and scalar tags of one TensorBoard run."""
    found, tags = {}, set()
    for name in os.listdir(run_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(run_dir, name)):
            for value in event.summary.value:
                tags.add(value.tag)
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        for key, v in data.session_start_info.hparams.items():
                            found[key] = v.string_value or v.number_value
    return found, tags


def test_tensorboard_run_per_cell_with_hparams(finished):
    workdir, records, _, _ = finished
    root = summaries.tensorboard_dir(str(workdir))
    # Runs grouped by (optimizer, batch size): <optimizer>_B<B>/<cell_id>, one per cell.
    runs = {os.path.relpath(d, root) for d, _, files in os.walk(root)
            if d != root and any("tfevents" in f for f in files)}
    assert runs == {f"{r['hparams']['optimizer']}_B{r['hparams']['batch_size']:05d}/"
                    f"{r['cell_id']}" for r in records}
    for r in records:  # a pack that ends in one go leaves one event file per run
        assert [f for f in os.listdir(summaries.run_dir(str(workdir), r)) if "tfevents" in f
                ] == [summaries.FINAL_EVENTS_FILE]
    for r in records[::5]:
        found, tags = hparams_of_run(summaries.run_dir(str(workdir), r))
        h = r["hparams"]
        assert found["optimizer"] == h["optimizer"]
        assert found["batch_size"] == h["batch_size"]
        assert found["effective_lr"] == pytest.approx(h["effective_lr"])
        assert found["seed"] == h["seed"]
        assert "train/loss" in tags and "final/test_accuracy" in tags
    # The experiment (domains and metrics) is declared once at the log root.
    root_events = [f for f in os.listdir(root) if f.startswith("events.out")]
    assert root_events
