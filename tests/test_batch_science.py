"""Tests for batch_science.py: import of a fixture in their layout, round trip, CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tf_sgd_regimes import batch_science, report
from tf_sgd_regimes.report import analysis
from tf_sgd_regimes.sweep import ledger

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "batch_science")
WORKLOAD = os.path.join(FIXTURE, "fashion_mnist", "simple_cnn_base", "nesterov_momentum")


def _by_trial(records):
    return {(r["hparams"]["batch_size"], r["source"]["trial_id"]): r for r in records}


def test_import_fixture_maps_status_parameters_and_metrics(tmp_path):
    workdir = str(tmp_path / "imported")
    records = batch_science.import_studies(FIXTURE, workdir)
    assert len(records) == 8 and len(ledger.read(workdir)) == 8
    trials = _by_trial(records)
    # Hand-computed from the fixture's README table.
    expected = {(64, 1): ("complete", 0.2, 0.87), (64, 2): ("complete", 1.0, 0.90),
                (64, 3): ("diverged", 50.0, None), (64, 4): ("failed", 0.01, None),
                (64, 5): ("complete", 0.02, 0.80), (512, 1): ("complete", 1.0, 0.85),
                (512, 2): ("complete", 4.0, 0.86), (512, 3): ("diverged", 30.0, None)}
    for key, (status, effective_lr, accuracy) in expected.items():
        record = trials[key]
        assert record["status"] == status, key
        assert record["hparams"]["effective_lr"] == effective_lr, key
        assert record["hparams"]["optimizer"] == "nesterov_momentum"
        assert record["hparams"]["seed"] == key[1]  # no seeds in their data: the trial id
        assert record["metrics"].get("test_accuracy") == (
            None if accuracy is None else pytest.approx(accuracy, abs=1e-12))
    best = trials[(64, 2)]["metrics"]
    assert best["validation_accuracy"] == pytest.approx(0.91)
    assert best["train_loss"] == pytest.approx(0.21) and best["test_loss"] == pytest.approx(0.33)
    assert trials[(64, 2)]["hparams"]["learning_rate"] == 0.05
    assert trials[(64, 2)]["hparams"]["momentum"] == 0.95
    assert trials[(64, 3)]["metrics"]["test_accuracy"] is None  # diverged: no values
    assert trials[(64, 3)]["diverged_step"] == 300
    assert trials[(64, 4)]["metrics"] == {} and "INCOMPLETE" in trials[(64, 4)]["error"]

    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    assert config["analysis"]["selection_metric"] == "test_accuracy"
    assert config["analysis"]["best_k"] == 1
    assert "effective_lrs" not in config["sweep"]  # random search: not a product grid
    settings = analysis.settings_from(config["analysis"])
    optimal = analysis.optima(analysis.cell_stats(records, settings), settings)
    optimal = optimal.set_index("batch_size")
    assert optimal["optimal_lr"].to_dict() == {64: 1.0, 512: 4.0}
    assert optimal["test_accuracy_mean"].to_dict() == pytest.approx({64: 0.90, 512: 0.86})
    assert optimal["edge"].isna().all()  # diverged rates above both optima

    result = report.generate(workdir, config)
    assert os.path.exists(result["tables"]["nesterov_momentum"]["md"])
    assert "partial sweep" not in result["text"]


def test_import_options_selection_metric_epochs_and_perplexity(tmp_path):
    records = batch_science.import_studies(
        WORKLOAD, str(tmp_path / "w"), perplexity=True, num_train_examples=50000,
        selection_metric="validation_loss")
    record = _by_trial(records)[(512, 2)]
    assert record["hparams"]["epochs"] == pytest.approx(200 * 512 / 50000)
    assert record["metrics"]["test_perplexity"] == pytest.approx(np.exp(0.47))
    with open(tmp_path / "w" / "config.json") as f:
        chosen = json.load(f)["analysis"]
    assert chosen["selection_metric"] == "validation_loss" and chosen["selection_mode"] == "min"


def test_import_refuses_mixed_workloads_and_bad_files(tmp_path):
    root = tmp_path / "mixed"
    for model in ("a", "b"):
        study = root / "mnist" / model / "sgd" / "8"
        (study / "1").mkdir(parents=True)
        (study / "study.json").write_text(json.dumps(
            {"batch_size": 8, "dataset": "mnist", "model": model, "optimizer": "sgd",
             "train_steps": 1}))
        (study / "1" / "metadata.json").write_text(json.dumps(
            {"parameters": {"lr": 0.1}, "status": "COMPLETE", "steps": 1, "trial_id": 1}))
    with pytest.raises(ValueError, match="several workloads"):
        batch_science.import_studies(str(root), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="parameters.learning_rate"):
        batch_science.import_studies(str(root / "mnist" / "a"), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="no study.json"):
        batch_science.find_studies(str(root / "mnist" / "a" / "sgd" / "8" / "1"))


# ------------------------------------------------------------------ round trip of our data


def our_records(rng):
    """A small sweep in our schema: SGD and Momentum, two B, five rates, three seeds."""
    records = []
    for optimizer, momentum in (("sgd", 0.0), ("momentum", 0.9)):
        for batch_size, log2_opt in ((16, -3), (128, -1)):
            for log2_lr in range(-5, 1):
                for seed in range(3):
                    lr = 2.0 ** log2_lr
                    cell = f"{optimizer}_B{batch_size:05d}_lr{lr:.6g}_E5_s{seed}"
                    hparams = {"optimizer": optimizer, "momentum": momentum,
                               "batch_size": batch_size, "effective_lr": lr,
                               "learning_rate": lr * (1 - momentum), "seed": seed,
                               "epochs": 5.0, "steps": 4000 // batch_size}
                    base = {"cell_id": cell, "experiment": "synthetic", "hparams": hparams,
                            "steps_done": hparams["steps"], "error": None,
                            "diverged_step": None}
                    if log2_lr > log2_opt + 1:
                        names = ("test_loss", "test_accuracy", "train_loss", "train_accuracy")
                        records.append(dict(base, status="diverged", diverged_step=7,
                                            metrics={n: None for n in names}))
                        continue
                    if (optimizer, batch_size, log2_lr, seed) == ("sgd", 16, -5, 2):
                        records.append(dict(base, status="failed", metrics={}, error="OOM"))
                        continue
                    accuracy = 0.9 - 0.03 * (log2_lr - log2_opt) ** 2 + 0.01 * rng.normal()
                    data_loss = 0.3 + 0.05 * (log2_lr - log2_opt) ** 2 + 0.01 * rng.random()
                    records.append(dict(base, status="complete", metrics={
                        "test_accuracy": accuracy, "test_loss": data_loss + 0.05,
                        "train_accuracy": accuracy + 0.05, "train_data_loss": data_loss,
                        "train_loss": data_loss + 0.01}))
    return records


CONFIG = {"name": "synthetic", "data": {"name": "digits"}, "model": {"name": "mlp"},
          "analysis": {"selection_metric": "test_accuracy", "selection_mode": "max",
                       "best_k": 2, "num_seeds": 3, "train_metric": "train_loss"}}


@pytest.fixture()
def sweep_dir(tmp_path):
    workdir = str(tmp_path / "ours")
    records = our_records(np.random.default_rng(0))
    for record in records:
        ledger.append(workdir, record)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    return workdir, records


def test_export_writes_their_layout(sweep_dir, tmp_path):
    workdir, records = sweep_dir
    out = str(tmp_path / "export")
    studies = batch_science.export(workdir, out, scalars=False)
    assert sorted(os.path.relpath(s, out) for s in studies) == [
        f"digits/mlp/{o}/{b}" for o in ("momentum", "sgd") for b in (128, 16)]
    study_dir = os.path.join(out, "digits", "mlp", "momentum", "16")
    with open(os.path.join(study_dir, "study.json")) as f:
        study = json.load(f)
    assert {"batch_size", "dataset", "early_stopping", "model", "optimizer",
            "parameter_configs", "train_steps"} <= set(study)
    assert study["batch_size"] == 16 and study["train_steps"] == 250
    assert study["parameter_configs"]["momentum"]["feasible_points"] == [0.9]
    trials = sorted(os.listdir(study_dir))
    assert trials == sorted(["study.json"] + [str(i) for i in range(1, 19)])
    with open(os.path.join(study_dir, "1", "metadata.json")) as f:
        meta = json.load(f)
    source = next(r for r in records if r["cell_id"] == meta["_cell_id"])
    assert meta["parameters"] == {"learning_rate": 2.0 ** -5 * (1 - 0.9), "momentum": 0.9,
                                  "seed": 0}
    assert meta["status"] == "COMPLETE" and meta["trial_id"] == 1 and meta["steps"] == 250
    frame = pd.read_csv(os.path.join(study_dir, "1", "measurements.csv"))
    assert list(frame["step"]) == [250]
    row = frame.iloc[0]
    assert row["test/classification_error"] == pytest.approx(
        1 - source["metrics"]["test_accuracy"])
    assert row["train/cross_entropy_error"] == source["metrics"]["train_data_loss"]
    assert row["train/loss"] == source["metrics"]["train_loss"]  # includes the L2 term
    statuses = [json.load(open(os.path.join(study_dir, t, "metadata.json")))["status"]
                for t in trials if t.isdigit()]
    assert statuses.count("INFEASIBLE") == 2 * 3  # 2^-1 and 2^0: above optimum 2^-3 + 1
    with pytest.raises(ValueError, match="already holds a study"):
        batch_science.export(workdir, out, scalars=False)


def test_round_trip_gives_the_same_records_and_optima(sweep_dir, tmp_path):
    workdir, records = sweep_dir
    out, back = str(tmp_path / "export"), str(tmp_path / "back")
    batch_science.export(workdir, out, scalars=False)
    imported = batch_science.import_studies(out, back)
    assert len(imported) == len(records)
    originals = {r["cell_id"]: r for r in records}
    for record in imported:
        original = originals[record["cell_id"]]
        assert record["status"] == original["status"]
        assert record["hparams"] == original["hparams"]
        assert set(record["metrics"]) == set(original["metrics"])
        for name, value in original["metrics"].items():
            assert record["metrics"][name] == (None if value is None else
                                               pytest.approx(value, abs=1e-12))
    settings = analysis.settings_from(CONFIG["analysis"])
    with open(os.path.join(back, "config.json")) as f:
        config = json.load(f)
    assert config["analysis"] == CONFIG["analysis"]  # ours travelled in study.json
    assert config["sweep"]["effective_lrs"] == [2.0 ** e for e in range(-5, 1)]
    want = analysis.optima(analysis.cell_stats(records, settings), settings)
    got = analysis.optima(analysis.cell_stats(imported, settings), settings)
    keys = ["optimizer", "batch_size", "epochs", "optimal_lr", "lr_low", "lr_high", "edge"]
    pd.testing.assert_frame_equal(want[keys], got[keys])
    np.testing.assert_allclose(got["test_accuracy_mean"], want["test_accuracy_mean"],
                               atol=1e-12)
    # The optima are where the synthetic data put them.
    assert set(want.set_index(["optimizer", "batch_size"])["optimal_lr"].items()) == {
        (("sgd", 16), 0.125), (("sgd", 128), 0.5), (("momentum", 16), 0.125),
        (("momentum", 128), 0.5)}


def test_export_includes_tensorboard_curves_and_budgets(tmp_path):
    import tensorflow as tf

    workdir = str(tmp_path / "ours")
    records = []
    for epochs in (5.0, 10.0):
        cell = f"sgd_B00008_lr0.5_E{epochs:g}_s0"
        records.append({"cell_id": cell, "status": "complete", "steps_done": 20, "hparams": {
            "optimizer": "sgd", "momentum": 0.0, "batch_size": 8, "effective_lr": 0.5,
            "learning_rate": 0.5, "seed": 0, "epochs": epochs, "steps": 20},
            "metrics": {"test_accuracy": 0.75, "test_loss": 0.6, "train_loss": 0.5,
                        "train_accuracy": 0.8}})
        # The sweep's layout for one budget, the older flat one for the other: both read.
        run = (os.path.join(workdir, "tensorboard", "sgd_B00008", cell) if epochs == 5.0
               else os.path.join(workdir, "tensorboard", cell))
        writer = tf.summary.create_file_writer(run)
        with writer.as_default():
            for step, loss in ((10, 1.5), (20, 0.9)):
                tf.summary.scalar("train/loss", loss, step=step)
                tf.summary.scalar("train/effective_lr", 0.5 / step, step=step)
            tf.summary.scalar("final/test_accuracy", 0.75, step=20)
        writer.close()
    out = str(tmp_path / "export")
    studies = batch_science.export(workdir, out, records=records, config=CONFIG)
    assert sorted(os.path.relpath(s, out) for s in studies) == [
        "epochs_10/digits/mlp/sgd/8", "epochs_5/digits/mlp/sgd/8"]
    frame = pd.read_csv(os.path.join(studies[0], "1", "measurements.csv"))
    assert list(frame["step"]) == [10, 20]
    np.testing.assert_allclose(frame["train/minibatch_loss"], [1.5, 0.9], rtol=1e-6)
    np.testing.assert_allclose(frame["effective_learning_rate"], [0.05, 0.025], rtol=1e-6)
    assert np.isnan(frame["test/classification_error"].iloc[0])
    assert frame["test/classification_error"].iloc[1] == pytest.approx(0.25)
    imported = batch_science.import_studies(out, str(tmp_path / "back"))
    assert sorted(r["hparams"]["epochs"] for r in imported) == [5.0, 10.0]
    assert all(set(r["metrics"]) == set(records[0]["metrics"]) for r in imported)


def test_cli_export_then_import(sweep_dir, tmp_path):
    workdir, records = sweep_dir
    out, back = str(tmp_path / "export"), str(tmp_path / "back")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    module = [sys.executable, "-m", "tf_sgd_regimes.batch_science"]
    done = subprocess.run(module + ["--export", f"--workdir={workdir}", f"--out={out}",
                                    "--noscalars"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "wrote 4 studies" in done.stdout
    done = subprocess.run(module + ["--import", f"--study={out}", f"--workdir={back}"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert len(ledger.read(back)) == len(records)
    done = subprocess.run(module + ["--import", f"--workdir={back}"], capture_output=True,
                          text=True, env=env)
    assert done.returncode != 0 and "--study" in done.stderr
