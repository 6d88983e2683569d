"""Tests for report/compose.py, tables.py and figures.py on synthetic ledger records."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from test_analysis import make_record, synthetic_records
from tf_sgd_regimes import reference, report
from tf_sgd_regimes.report import analysis, figures, tables
from tf_sgd_regimes.sweep import ledger

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(**analysis_fields):
    fields = dict(selection_metric="test_accuracy", selection_mode="max", best_k=2, num_seeds=3,
                  range_rule_std=1.0, train_metric="train_loss", split="test",
                  paper_reference="", num_bootstrap=20)
    fields.update(analysis_fields)
    return {"name": "synthetic", "analysis": fields,
            "sweep": {"optimizers": ["sgd", "momentum"], "batch_sizes": [2, 4, 8, 16, 32, 64],
                      "effective_lrs": [2.0 ** e for e in range(-8, 1)], "seeds": [0, 1, 2]},
            "schedule": {"decay_factor": 2.0, "warmup_steps": 0}}


@pytest.fixture(scope="module")
def sweep_records():
    rng = np.random.default_rng(3)
    return synthetic_records(rng, optimizers=("sgd", "momentum"), log2_breakpoint=3,
                             batch_log2=range(1, 6), lr_log2=range(-8, 1), seeds=3, noise=0.005)


@pytest.fixture(scope="module")
def generated(sweep_records, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("sweep"))
    return report.generate(workdir, config(), records=sweep_records), sweep_records


def test_tables_parse_and_match_the_statistics(generated):
    result, records = generated
    settings = analysis.settings_from(config()["analysis"])
    for optimizer in ("sgd", "momentum"):
        paths = result["tables"][optimizer]
        frame = pd.read_csv(paths["csv"])
        assert list(frame["batch_size"]) == [2, 4, 8, 16, 32]
        # independent check of one row: best 2 of 3 accuracies at the reported optimum
        row = frame.iloc[2]
        runs = [r for r in records if r["hparams"]["optimizer"] == optimizer
                and r["hparams"]["batch_size"] == 8 and r["hparams"]["effective_lr"] ==
                row["optimal_lr"]]
        best = sorted(r["metrics"]["test_accuracy"] for r in runs)[-2:]
        assert row["test_accuracy_mean"] == pytest.approx(np.mean(best))
        assert row["test_accuracy_std"] == pytest.approx(np.std(best, ddof=1))
        assert row["optimal_lr"] == 2.0 ** -2  # truth: c + min(3 - 3, 0) = -2
        markdown = open(paths["md"]).read()
        assert sum(line.startswith("| 8 |") for line in markdown.splitlines()) == 1
        assert markdown.count("\n|") == 2 + 5  # header, rule, five batch sizes
        latex = open(paths["tex"]).read()
        assert r"\begin{tabular}" in latex and latex.count(r"\\") == 6 and "$\\pm$" in latex
    assert settings.best_k == 2
    text = result["text"]
    assert "best 2 of 3" in text and "test split" in text
    assert text.count("regime breakpoint B* =") == 2
    for optimizer in ("sgd", "momentum"):
        assert result["breakpoints"][optimizer]["breakpoint"] == pytest.approx(8, rel=0.3)


def test_report_files_exist(generated):
    result, _ = generated
    for name in ("test_vs_batch", "train_vs_batch", "optimal_lr_vs_batch", "test_vs_lr",
                 "schedule"):
        for path in result["figures"][name]:
            assert os.path.getsize(path) > 1000, path
    tidy = pd.read_csv(result["exports"]["records"])
    assert len(tidy) == len(generated[1]) and {"optimizer", "test_accuracy"} <= set(tidy)
    assert json.load(open(os.path.join(result["out_dir"], "breakpoints.json")))["sgd"]["slope"]


def test_partial_sweep_with_failed_and_diverged_cells(sweep_records, tmp_path):
    records = [r for i, r in enumerate(sweep_records) if i % 7 != 0
               and r["hparams"]["optimizer"] == "sgd" and r["hparams"]["batch_size"] <= 16]
    records.append(make_record("sgd", 128, 0.01, 0, status="failed"))
    records.append(make_record("sgd", 128, 0.02, 0, status="diverged"))
    result = report.generate(str(tmp_path), config(), records=records)
    assert "partial sweep" in result["text"]
    frame = pd.read_csv(result["tables"]["sgd"]["csv"])
    row = frame[frame["batch_size"] == 128].iloc[0]
    assert np.isnan(row["optimal_lr"])  # nothing eligible at B = 128: no optimum, no crash


def test_no_usable_records(tmp_path):
    result = report.generate(str(tmp_path), config(),
                             records=[make_record("sgd", 4, 0.1, 0, status="failed")])
    assert "nothing to analyse" in result["text"]


def test_paper_reference_rows_and_largest_difference(tmp_path):
    paper = reference.rows_frame("table3")
    offsets = {16: 0.5, 32: -1.5, 64: 0.2}  # percentage points above/below the paper
    records = []
    for batch, offset in offsets.items():
        row = paper[paper["batch_size"] == batch].iloc[0]
        for lr in (row["effective_lr"] / 2, row["effective_lr"], row["effective_lr"] * 2):
            drop = 0.0 if lr == row["effective_lr"] else 0.05
            for seed in range(3):
                acc = (row["test_mean"] + offset) / 100 - drop + 0.001 * (seed == 0)
                records.append(make_record("momentum", batch, lr, seed, acc, row["train_mean"]))
    result = report.generate(str(tmp_path), config(paper_reference="table3"), records=records)
    frame = pd.read_csv(result["tables"]["momentum"]["csv"])
    assert list(frame["paper_test_mean"]) == [92.6, 93.9, 94.4]
    np.testing.assert_allclose(frame["test_difference"], [0.5 + 0.05, -1.5 + 0.05, 0.2 + 0.05],
                               atol=1e-9)
    assert list(frame["lr_octaves_difference"]) == [0, 0, 0]
    assert "-1.45 at B=32" in result["text"]
    assert "paper LR" in open(result["tables"]["momentum"]["md"]).read()


def test_paper_train_column_is_compared_with_the_data_loss(tmp_path):
    # Records as the engine writes them with L2: train_loss = data loss + penalty and the
    # data loss alone in train_data_loss. The paper prints the data loss (table 3).
    paper = reference.rows_frame("table3")
    penalty, data_offset = 0.4, 0.01
    records = []
    for batch in (16, 32):
        row = paper[paper["batch_size"] == batch].iloc[0]
        for seed in range(3):
            data_loss = row["train_mean"] + data_offset
            record = make_record("momentum", batch, row["effective_lr"], seed,
                                 row["test_mean"] / 100, data_loss + penalty)
            record["metrics"]["train_data_loss"] = data_loss
            records.append(record)
    result = report.generate(str(tmp_path), config(paper_reference="table3"), records=records)
    frame = pd.read_csv(result["tables"]["momentum"]["csv"])
    np.testing.assert_allclose(frame["train_difference"], [data_offset] * 2, atol=1e-9)
    np.testing.assert_allclose(frame["train_loss_mean"] - frame["train_data_loss_mean"],
                               [penalty] * 2, atol=1e-9)
    markdown = open(result["tables"]["momentum"]["md"]).read()
    header = [line for line in markdown.splitlines() if line.startswith("| batch size")][0]
    assert "final train loss (data)" in header and "final train objective (incl. L2)" in header
    row16 = [line for line in markdown.splitlines() if line.startswith("| 16 |")][0]
    assert f"{0.349 + data_offset:.3f}" in row16 and f"{0.349 + data_offset + penalty:.3f}" in row16


def test_without_l2_the_data_loss_is_the_objective():
    optimal = pd.DataFrame({"optimizer": ["sgd"], "batch_size": [8], "epochs": [1.0],
                            "train_loss_mean": [0.3], "train_loss_std": [0.01],
                            "optimal_lr": [0.1], "lr_low": [0.1], "lr_high": [0.1],
                            "edge": [None]})
    settings = analysis.settings_from(config()["analysis"])
    table = tables.optimizer_table(optimal, settings, "sgd")
    assert table["train_data_loss_mean"].tolist() == [0.3]
    assert tables.paper_train_metric(settings) == "train_data_loss"
    perplexity = analysis.settings_from(config(train_metric="train_perplexity")["analysis"])
    assert tables.paper_train_metric(perplexity) == "train_perplexity"
    assert "train_data_loss_mean" not in tables.optimizer_table(
        optimal.assign(train_perplexity_mean=[9.0], train_perplexity_std=[0.1]),
        perplexity, "sgd")


def test_optimal_lr_figure_axes_and_series(generated, sweep_records):
    settings = analysis.settings_from(config()["analysis"])
    optimal = analysis.optima(analysis.cell_stats(sweep_records, settings), settings)
    figure = figures.optimal_lr_figure(optimal, generated[0]["breakpoints"])
    axis = figure.axes[0]
    assert axis.get_xscale() == "log" and axis.get_yscale() == "log"
    assert axis.xaxis.get_transform().base == 2 and axis.yaxis.get_transform().base == 2
    labels = [line.get_label() for line in axis.get_lines()]
    assert "slope 1 (linear)" in labels and "slope 1/2 (square root)" in labels
    assert sum(label.startswith(("SGD B*", "Momentum B*")) for label in labels) == 2
    guide = axis.get_lines()[labels.index("slope 1 (linear)")]
    x, y = guide.get_data()
    np.testing.assert_allclose(np.diff(np.log2(y)) / np.diff(np.log2(x)), 1.0)
    series = [c.get_label() for c in axis.containers]
    assert series == ["SGD", "Momentum"]


def test_metric_and_sweep_figures(sweep_records):
    settings = analysis.settings_from(config()["analysis"])
    cells = analysis.cell_stats(sweep_records, settings)
    optimal = analysis.optima(cells, settings)
    figure = figures.metric_vs_batch_figure(optimal, "test_accuracy")
    axis = figure.axes[0]
    assert axis.get_xscale() == "log" and axis.get_ylabel() == "test accuracy (%)"
    assert len(axis.containers) == 2
    heights = np.asarray(axis.containers[0].lines[0].get_ydata(), dtype=float)
    np.testing.assert_allclose(heights, 100 * optimal[optimal["optimizer"] == "sgd"]
                               .sort_values("batch_size")["test_accuracy_mean"])
    sweep = figures.lr_sweep_figure(cells, "test_accuracy")
    visible = [a for a in sweep.axes if a.get_visible()]
    assert [a.get_title() for a in visible] == [f"B = {2 ** i}" for i in range(1, 6)]
    assert all(a.get_xscale() == "log" for a in visible)


def test_budget_figure_and_report(tmp_path):
    records = []
    for epochs in (4.0, 16.0, 64.0):
        for lr in (0.05, 0.1, 0.2, 0.4):
            for seed in range(3):
                records.append(make_record("momentum", 32, lr, seed, 0.9 - abs(lr - 0.2) +
                                           0.001 * seed, lr / epochs, epochs=epochs))
    result = report.generate(str(tmp_path), config(), records=records)
    budget = pd.read_csv(result["exports"]["budget"])
    assert list(budget["optimal_lr_test"]) == [0.2, 0.2, 0.2]
    assert list(budget["optimal_lr_train"]) == [0.05, 0.05, 0.05]
    settings = analysis.settings_from(config()["analysis"])
    figure = figures.budget_figure(analysis.budget_optima(records, settings), settings)
    assert len(figure.axes) == 3 and figure.axes[2].get_yscale() == "log"
    assert len(figure.axes[2].get_lines()) == 2  # optimal LR for test and for train
    assert "test vs training metric" in result["text"]


def test_schedule_figure_halves_every_twentieth():
    figure = figures.schedule_figure(decay_factor=2.0, total_steps=200)
    x, y = figure.axes[0].get_lines()[0].get_data()
    # independent closed form: constant for half the budget, then /2 every 1/20
    expected = [2.0 ** -max(0, (step - 100) // 10 + 1) if step >= 100 else 1.0
                for step in range(200)]
    np.testing.assert_allclose(y, expected)


def test_formatting_helpers():
    assert tables.format_lr(0.0625) == "2^-4" and tables.format_lr(2 ** 0.5) == "2^0.5"
    assert tables.format_lr(0.025) == "0.025"
    assert tables.format_mean_std(0.9462, 0.0011, 100.0, 1) == "94.6 ± 0.1"
    assert tables.column_decimals([0.349, 0.269], [0.004, 0.004]) == 3
    assert "$2^{-4}$" in tables.to_latex(pd.DataFrame({"lr": ["2^-4"]}))


def test_cli_reads_config_json_and_ledger(tmp_path, sweep_records):
    workdir = str(tmp_path)
    for record in sweep_records:
        if record["hparams"]["batch_size"] > 8 or record["hparams"]["optimizer"] != "sgd":
            continue
        assert ledger.append(workdir, record)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config(), f)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-m", "tf_sgd_regimes.report", f"--workdir={workdir}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "## SGD (synthetic)" in done.stdout
    assert os.path.exists(os.path.join(workdir, "report", "table_sgd.csv"))


def test_report_prints_the_fidelity_card_of_a_paper_experiment(tmp_path):
    from tf_sgd_regimes import experiments

    written = json.loads(experiments.get_config("wrn16_4_cifar10_skipinit_step_budget")
                         .to_json())
    written["sweep"]["seeds"] = [0, 1, 2]  # a shrunk run: the report must say so
    written["analysis"].update(best_k=2, num_seeds=3, num_bootstrap=20)
    records = [make_record("momentum", batch, 2.0 ** -3, seed, 0.9 + 0.001 * seed, 0.3)
               for batch in (16, 32) for seed in range(3)]
    text = report.generate(str(tmp_path), written, records=records)["text"]
    assert "Fidelity card of wrn16_4_cifar10_skipinit_step_budget" in text
    assert "dropout: 0.2" in text  # one of the card's choices
    assert "DEPARTS FROM THE CARD" in text and "derived.num_seeds = 3" in text
    assert text.index("Fidelity card") < text.index("## Momentum")
