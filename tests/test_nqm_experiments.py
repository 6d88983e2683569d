"""NQM experiments through the real sweep -> ledger -> report path, and breakpoint recovery."""

import os

import numpy as np
import pytest

from tf_sgd_regimes import engine as engine_lib
from tf_sgd_regimes import experiments
from tf_sgd_regimes import pack_checkpoint
from tf_sgd_regimes import report
from tf_sgd_regimes.report import analysis
from tf_sgd_regimes.sweep import grid
from tf_sgd_regimes.sweep import ledger
from tf_sgd_regimes.sweep import loop as sweep_lib
from tf_sgd_regimes.sweep import summaries
from tf_sgd_regimes.theory import nqm, nqm_engine

NAMES = ("nqm_epoch_budget", "nqm_step_budget", "nqm_epoch_budget_sweep")


def shrunk(name, overrides):
    config = experiments.get_config(name)
    return experiments.apply_overrides(config, overrides)


def grid_truth(config, optimizer, momentum, batch_sizes, lrs):
    """Smallest B from which the noise-free optimum ON THE SWEEP'S LR GRID stops growing."""
    steps = lambda b: nqm.epoch_budget_steps(config["epochs"], config["train_size"], b)  # noqa
    best = [nqm.optimal_effective_lr(config, optimizer, momentum, b, steps(b), lrs)
            for b in batch_sizes]
    for i in range(len(best) - 1):
        if best[i + 1] <= best[i]:
            return batch_sizes[i], best
    return batch_sizes[-1], best


def continuous_truth(config, optimizer, momentum):
    """B* where the small-batch line lr = s B meets the large-batch plateau, both from the
    exact dynamics on a fine (2^(1/16)) lr grid: the quantity the two-piece fit estimates."""
    steps = lambda b: nqm.epoch_budget_steps(config["epochs"], config["train_size"], b)  # noqa
    fine = lambda low, high: 2.0 ** np.arange(low, high, 1.0 / 16)  # noqa: E731
    slope = nqm.optimal_effective_lr(config, optimizer, momentum, 4, steps(4), fine(-6, -2)) / 4
    top = 2.0 / config["h_max"] * ((1 + momentum) / (1 - momentum))  # the stability edge
    plateau = nqm.optimal_effective_lr(config, optimizer, momentum, 4096, steps(4096),
                                       fine(np.log2(top) - 2, np.log2(top) + 1))
    return plateau / slope


def test_registered_and_valid():
    for name in NAMES:
        config = experiments.get_config(name)
        assert config.engine == "nqm" and config.analysis.selection_metric == "test_loss"
        experiments.validate(config, nqm_engine.NQMData(config).num_train)
    assert summaries.metric_names(nqm_engine.TASK, "test")[:3] == [
        "final/test_loss", "final/train_loss", "final/expected_loss"]


def test_epoch_budget_sweep_recovers_sgd_breakpoint(tmp_path):
    batch_sizes = [2**i for i in range(2, 10)]  # 4 .. 512 around SGD's B* ~ 64-90
    config = shrunk("nqm_epoch_budget", [
        "sweep.optimizers=('sgd',)", f"sweep.batch_sizes={tuple(batch_sizes)}",
        "sweep.effective_lrs=(0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0)"])
    workdir = str(tmp_path / "epochs")
    records = sweep_lib.Sweep(config, workdir).run()
    assert len(records) == 8 * 7 * 3 and len(ledger.read(workdir)) == 168
    result = report.generate(workdir, config, records)
    fit = result["breakpoints"]["sgd"]
    assert "error" not in fit, fit
    low, high = fit["breakpoint_ci"]
    nqm_config = dict(config.nqm)
    at_grid, best = grid_truth(nqm_config, "sgd", 0.0, batch_sizes, config.sweep.effective_lrs)
    assert low <= at_grid <= high, (at_grid, fit)
    # Off the grid the optimum is only known to a factor 2 (one grid step; slope 1).
    true = continuous_truth(nqm_config, "sgd", 0.0)
    assert low / 2 <= true <= 2 * high, (true, fit)
    # Both regimes: optimal lr doubles with B, then stops at the stability-limited plateau.
    assert np.allclose(np.diff(np.log2(best))[:4], 1.0) and np.allclose(np.diff(best)[5:], 0)
    optima = analysis.optima(analysis.cell_stats(records, analysis.settings_from(
        config.analysis)), analysis.settings_from(config.analysis))
    np.testing.assert_allclose(optima.sort_values("batch_size")["optimal_lr"], best)
    for name in ("table_sgd.md", "optimal_lr_vs_batch.png", "report.txt", "records.csv"):
        assert os.path.exists(os.path.join(result["out_dir"], name)), name
    assert "regime breakpoint B* =" in result["text"]


def records_for(config, optimizer, momentum, batch_sizes, lrs, seeds):
    """Ledger-shaped records from NQMEngine.train_pack directly (no files: fast)."""
    engine, data = nqm_engine.NQMEngine(config), nqm_engine.NQMData(config)
    records = []
    for batch_size in batch_sizes:
        cells = [grid.cell_from_values(config, {"batch_size": batch_size, "optimizer": optimizer,
                                                "effective_lr": lr, "seed": s},
                                       data.steps_per_epoch) for lr in lrs for s in seeds]
        members = [engine_lib.Member(c.cell_id, c.effective_lr, c.momentum, c.seed)
                   for c in cells]
        results = engine.train_pack(members, batch_size, cells[0].steps)
        records += [{"cell_id": c.cell_id, "status": r.status, "hparams": c.hparams(),
                     "metrics": r.metrics} for c, r in zip(cells, results)]
    return records


def test_momentum_breakpoint_and_momentum_ahead_only_at_large_batch():
    config = experiments.get_config("nqm_epoch_budget")
    settings = analysis.settings_from(config.analysis)
    batch_sizes, lrs = [2**i for i in range(4, 13)], [2.0**i for i in range(-3, 6)]
    momentum = float(config.sweep.momentum)
    records = records_for(config, "momentum", momentum, batch_sizes, lrs, (0, 1, 2))
    fit = analysis.regime_breakpoint(records, settings, "momentum")
    low, high = fit["breakpoint_ci"]
    nqm_config = dict(config.nqm)
    at_grid, _ = grid_truth(nqm_config, "momentum", momentum, batch_sizes, lrs)
    assert low <= at_grid <= high, (at_grid, fit)
    true = continuous_truth(nqm_config, "momentum", momentum)
    assert low / 2 <= true <= 2 * high, (true, fit)
    records += records_for(config, "sgd", 0.0, batch_sizes, lrs, (0, 1, 2))
    optimal = analysis.optima(analysis.cell_stats(records, settings), settings)
    advantage = analysis.momentum_advantage(optimal, settings)["per_batch"]
    small = advantage[advantage["batch_size"] <= 32]
    assert not small["beats"].any() and (small["difference"].abs() < 1e-3).all()
    assert advantage[advantage["batch_size"] >= 256]["beats"].all()


@pytest.mark.parametrize("name,overrides,cells", [
    ("nqm_step_budget", ["sweep.batch_sizes=(16, 256, 4096)",
                         "sweep.effective_lrs=(0.125, 0.5, 2.0)", "sweep.seeds=(0, 1)",
                         "analysis.best_k=1", "analysis.num_seeds=2"], 3 * 2 * 3 * 2),
    ("nqm_epoch_budget_sweep", ["sweep.epoch_budgets=(0.5, 2.0, 8.0)",
                                "sweep.effective_lrs=(0.0625, 0.25, 1.0)",
                                "sweep.optimizers=('sgd',)", "sweep.seeds=(0, 1)",
                                "analysis.best_k=1", "analysis.num_seeds=2"], 3 * 3 * 2),
])
def test_other_budgets_run_and_report(tmp_path, name, overrides, cells):
    config = shrunk(name, overrides)
    records = sweep_lib.Sweep(config, str(tmp_path)).run()
    assert len(records) == cells and all(r["status"] != "failed" for r in records)
    result = report.generate(str(tmp_path), config, records)
    assert os.path.exists(os.path.join(result["out_dir"], "table_sgd.md"))
    steps = {r["hparams"]["steps"] for r in records}
    if name == "nqm_step_budget":
        assert steps == {int(config.budget.steps)}
    else:  # one B, steps = epochs N / B for every budget
        assert steps == {nqm.epoch_budget_steps(e, config.nqm.train_size, 16)
                         for e in config.sweep.epoch_budgets}
        assert "budget" in result["exports"]
    # The NQM has no data noise beyond the seeds' draws: the records' losses are the
    # closed form's per-seed values (checked at one cell).
    record = next(r for r in records if r["status"] == "complete")
    hp = record["hparams"]
    expected = nqm.train_cells(dict(config.nqm), [dict(
        optimizer=hp["optimizer"], momentum=hp["momentum"], batch_size=hp["batch_size"],
        effective_lr=hp["effective_lr"], seed=hp["seed"], steps=hp["steps"])])[0]
    assert record["metrics"]["test_loss"] == pytest.approx(expected["metrics"]["test_loss"])


def test_engine_contract_divergence_curves_and_stop():
    config = experiments.get_config("nqm_epoch_budget")
    data = nqm_engine.NQMData(config)
    assert data.steps_per_epoch(64) == pytest.approx(config.nqm.train_size / 64)
    engine = nqm_engine.NQMEngine(config)
    members = [engine_lib.Member("a", 0.5, 0.0, 0), engine_lib.Member("b", 8.0, 0.0, 0),
               engine_lib.Member("c", 8.0, 0.9, 1)]
    reports = []
    results = engine.train_pack(members, 64, 256, on_chunk=reports.append)
    assert [r.status for r in results] == ["complete", "diverged", "complete"]
    assert results[1].metrics["test_loss"] is None and results[1].diverged_step <= 256
    assert results[0].steps_done == 256 and results[0].metrics["test_loss"] > 0
    assert len(reports) == nqm_engine.CURVE_REPORTS and reports[-1].step == 256
    assert np.isnan(reports[-1].mean_loss[1]) and reports[-1].diverged_at[1] >= 0
    # The reported loss is the exact expected loss at that step.
    lr0 = nqm.learning_rate("sgd", 0.5, 0.0)
    curve = nqm.expected_loss_curve(dict(config.nqm), lr0, 0.0, 64, 256)
    assert reports[-1].mean_loss[0] == pytest.approx(curve[-1], rel=1e-9)
    with pytest.raises(pack_checkpoint.Preempted):
        engine.train_pack(members, 64, 256, should_stop=lambda: True)
    bad = experiments.get_config("nqm_epoch_budget")
    bad.schedule.warmup_steps = 10
    with pytest.raises(ValueError, match="warmup_steps"):
        nqm_engine.NQMEngine(bad)
