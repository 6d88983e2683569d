"""Tests for analysis.py: best-k statistics, optima, breakpoint recovery, momentum advantage."""

import math

import numpy as np
import pandas as pd
import pytest

from tf_sgd_regimes.report import analysis


def make_record(optimizer, batch_size, lr, seed, acc=None, loss=None, status="complete",
                epochs=10.0):
    """One ledger-shaped record (no training engine involved)."""
    metrics = {"test_accuracy": acc, "train_loss": loss}
    if status == "diverged":
        metrics = {"test_accuracy": None, "train_loss": None}
    return {
        "cell_id": f"{optimizer}_b{batch_size:04d}_lr{lr}_e{epochs}_s{seed:03d}",
        "status": status,
        "hparams": {"optimizer": optimizer, "momentum": 0.9 if optimizer == "momentum" else 0.0,
                    "batch_size": batch_size, "effective_lr": lr, "learning_rate": lr,
                    "seed": seed, "epochs": epochs, "steps": 100},
        "metrics": metrics,
        "error": "boom" if status == "failed" else None,
    }


def synthetic_records(rng, log2_breakpoint=5, log2_critical=-2.0, slope=1.0, noise=0.01,
                      optimizers=("sgd",), batch_log2=range(0, 11), lr_log2=range(-14, 3),
                      seeds=5, epochs=10.0):
    """Accuracy peaks at log2 lr* = c + s·min(log2 B − log2 B*, 0) (a parabola in log2 lr);
    learning rates 3 octaves above the optimum diverge."""
    records = []
    for optimizer in optimizers:
        for xb in batch_log2:
            opt = log2_critical + slope * min(xb - log2_breakpoint, 0)
            peak = 0.95 - 0.01 * max(xb - log2_breakpoint, 0)
            for xl in lr_log2:
                for seed in range(seeds):
                    if xl > opt + 2.5:
                        records.append(make_record(optimizer, 2 ** xb, 2.0 ** xl, seed,
                                                   status="diverged", epochs=epochs))
                        continue
                    acc = peak - 0.02 * (xl - opt) ** 2 + noise * rng.normal()
                    loss = 0.1 + 0.05 * (xl - opt) ** 2 + noise * abs(rng.normal())
                    records.append(make_record(optimizer, 2 ** xb, 2.0 ** xl, seed, acc, loss,
                                               epochs=epochs))
    return records


def settings(**kw):
    base = dict(selection_metric="test_accuracy", selection_mode="max", best_k=2, num_seeds=3,
                range_rule_std=1.0, train_metric="train_loss", num_bootstrap=50)
    base.update(kw)
    return analysis.Settings(**base)


def test_best_k_uses_same_runs_for_every_metric():
    records = [make_record("sgd", 8, 0.1, 0, 0.90, 0.30), make_record("sgd", 8, 0.1, 1, 0.80, 0.10),
               make_record("sgd", 8, 0.1, 2, 0.95, 0.50)]
    cells = analysis.cell_stats(records, settings(best_k=2))
    row = cells.iloc[0]
    assert row["k"] == 2 and row["n_runs"] == 3 and row["eligible"]
    assert set(row["best_seeds"]) == {0, 2}
    assert row["test_accuracy_mean"] == pytest.approx((0.90 + 0.95) / 2)
    assert row["test_accuracy_std"] == pytest.approx(math.sqrt(2 * 0.025 ** 2 / 1))
    # training loss over the SAME two runs (seeds 0 and 2), not the best two losses
    assert row["train_loss_mean"] == pytest.approx((0.30 + 0.50) / 2)
    assert row["train_loss_std"] == pytest.approx(math.sqrt(2 * 0.1 ** 2))


def test_ties_break_by_seed_and_by_smaller_lr():
    records = [make_record("sgd", 8, 0.1, s, acc, 1.0 + s) for s, acc in enumerate([0.9, 0.9, 0.9])]
    records += [make_record("sgd", 8, 0.2, s, 0.9, 0.5) for s in range(3)]
    cells = analysis.cell_stats(records, settings(best_k=2))
    assert cells.iloc[0]["best_seeds"] == (0, 1)
    assert cells.iloc[0]["train_loss_mean"] == pytest.approx(1.5)
    opt = analysis.optima(cells, settings(best_k=2)).iloc[0]
    assert opt["optimal_lr"] == 0.1 and opt["edge"] == "low"
    assert (opt["lr_low"], opt["lr_high"]) == (0.1, 0.2)


def test_diverged_runs_rank_worst_and_block_optimum():
    records = [make_record("sgd", 8, 0.1, s, 0.80, 0.3) for s in range(3)]
    # lr 0.2: best two of three are great but one run diverged; k=2 picks the two good ones
    records += [make_record("sgd", 8, 0.2, 0, 0.9, 0.2), make_record("sgd", 8, 0.2, 1, 0.9, 0.2),
                make_record("sgd", 8, 0.2, 2, status="diverged")]
    # lr 0.4: two diverged runs, so its best 2 contain one: not eligible despite 0.99
    records += [make_record("sgd", 8, 0.4, 0, 0.99, 0.1), make_record("sgd", 8, 0.4, 1,
                status="diverged"), make_record("sgd", 8, 0.4, 2, status="diverged")]
    cells = analysis.cell_stats(records, settings(best_k=2)).set_index("effective_lr")
    assert cells.loc[0.2, "eligible"] and cells.loc[0.2, "n_diverged"] == 1
    assert not cells.loc[0.4, "eligible"]
    opt = analysis.optima(cells.reset_index(), settings(best_k=2)).iloc[0]
    assert opt["optimal_lr"] == 0.2
    assert opt["edge"] is None  # 0.4 was tried (and diverged), so 0.2 is interior
    # k = n = 3: lr 0.2 now includes its diverged run and is no longer eligible
    opt3 = analysis.optima(analysis.cell_stats(records, settings(best_k=3)), settings(best_k=3))
    assert opt3.iloc[0]["optimal_lr"] == 0.1 and opt3.iloc[0]["edge"] == "low"


def test_failed_runs_are_missing_data_and_single_seed_has_zero_std():
    records = [make_record("sgd", 8, 0.1, 0, 0.7, 0.3), make_record("sgd", 8, 0.1, 1,
               status="failed")]
    row = analysis.cell_stats(records, settings(best_k=2)).iloc[0]
    assert row["n_runs"] == 1 and row["n_failed"] == 1 and row["k"] == 1
    assert row["test_accuracy_mean"] == 0.7 and row["test_accuracy_std"] == 0.0


def test_range_rule_uses_the_optimums_std():
    # means 0.80, 0.85, 0.90, 0.86 with optimum std 0.05 (values 0.85, 0.95): range 0.2..0.8
    values = {0.1: (0.80, 0.80), 0.2: (0.84, 0.86), 0.4: (0.85, 0.95), 0.8: (0.86, 0.86),
              1.6: (0.70, 0.70)}
    records = [make_record("sgd", 4, lr, s, v, 0.1) for lr, pair in values.items()
               for s, v in enumerate(pair)]
    std = np.std([0.85, 0.95], ddof=1)
    opt = analysis.optima(analysis.cell_stats(records, settings(best_k=2)), settings(best_k=2))
    row = opt.iloc[0]
    assert row["optimal_lr"] == 0.4 and row["test_accuracy_std"] == pytest.approx(std)
    expected = [lr for lr, pair in values.items() if np.mean(pair) >= 0.90 - std]
    assert (row["lr_low"], row["lr_high"]) == (min(expected), max(expected))
    narrow = analysis.optima(analysis.cell_stats(records, settings(best_k=2, range_rule_std=0.1)),
                             settings(best_k=2, range_rule_std=0.1)).iloc[0]
    assert (narrow["lr_low"], narrow["lr_high"]) == (0.4, 0.4)


def test_min_mode_and_edge_high():
    records = [make_record("sgd", 4, lr, 0, None, loss) for lr, loss in
               [(0.1, 0.5), (0.2, 0.4), (0.4, 0.3)]]
    s = settings(selection_metric="train_loss", selection_mode="min", best_k=1)
    opt = analysis.optima(analysis.cell_stats(records, s), s).iloc[0]
    assert opt["optimal_lr"] == 0.4 and opt["edge"] == "high"


def test_settings_errors_name_the_field():
    with pytest.raises(ValueError, match="selection_mode"):
        analysis.Settings(selection_mode="up")
    with pytest.raises(ValueError, match="selection_metric"):
        analysis.cell_stats([make_record("sgd", 4, 0.1, 0, 0.5, 0.1)],
                            settings(selection_metric="test_bleu"))
    assert analysis.settings_from({"best_k": 5, "unrelated": 1}).best_k == 5
    assert analysis.metric_mode("test_perplexity") == "min"
    assert analysis.metric_mode("test_accuracy") == "max"


def test_tidy_flattens_records():
    frame = analysis.tidy([make_record("momentum", 16, 0.5, 3, 0.9, 0.2)])
    assert list(frame[["optimizer", "batch_size", "seed"]].iloc[0]) == ["momentum", 16, 3]
    assert frame["test_accuracy"].iloc[0] == 0.9 and frame["momentum"].iloc[0] == 0.9


def test_fit_two_piece_recovers_exact_kink():
    x = np.arange(0, 11, dtype=float)
    y = -3.0 + 0.5 * np.minimum(x - 6.4, 0)
    fit = analysis.fit_two_piece(x, y, resolution=0.001)
    assert fit["log2_breakpoint"] == pytest.approx(6.4, abs=2e-3)
    assert fit["slope"] == pytest.approx(0.5, abs=1e-3)
    assert fit["log2_critical_lr"] == pytest.approx(-3.0, abs=1e-6)
    line = analysis.fit_two_piece(x, 2 * x)  # no plateau: breakpoint at the largest B
    assert line["log2_breakpoint"] == pytest.approx(10) and line["slope"] == pytest.approx(2)


def test_fit_two_piece_never_rests_a_slope_on_one_point():
    # Flat except the smallest B: a kink just past it would give one point an
    # arbitrarily steep slope (it gave 200 in a real sweep). The fit must say "no growth"
    # or put the kink at a batch size, with a slope the grid can support.
    x = np.arange(3, 9, dtype=float)
    y = np.array([-1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    fit = analysis.fit_two_piece(x, y, resolution=0.001)
    assert fit["log2_breakpoint"] == 3.0 or fit["log2_breakpoint"] >= 4.0
    assert abs(fit["slope"]) <= 1.0 + 1e-9
    assert fit["log2_breakpoint"] == pytest.approx(4.0) and fit["slope"] == pytest.approx(1.0)


def test_bootstrap_rep_zero_matches_optima():
    rng = np.random.default_rng(1)
    records = synthetic_records(rng, noise=0.03, batch_log2=range(0, 7), seeds=3)
    s = settings(best_k=2)
    frame = analysis.tidy(records)
    batches, log2_opt = analysis._bootstrap_optima(analysis._score_arrays(frame, s), 2, 5, rng)
    opt = analysis.optima(analysis.cell_stats(records, s), s).sort_values("batch_size")
    assert [b for b, _ in batches] == list(opt["batch_size"])
    np.testing.assert_allclose(log2_opt[0], np.log2(opt["optimal_lr"].to_numpy()))


def test_breakpoint_ci_covers_truth_in_most_repetitions():
    truth = 2.0 ** 5
    covered, estimates = 0, []
    for rep in range(30):
        rng = np.random.default_rng(100 + rep)
        records = synthetic_records(rng, noise=0.015, lr_log2=range(-9, 1), seeds=4,
                                    batch_log2=range(1, 10))
        result = analysis.regime_breakpoint(records, settings(best_k=3, num_bootstrap=100,
                                                              bootstrap_seed=rep), "sgd")
        low, high = result["breakpoint_ci"]
        covered += low <= truth <= high
        estimates.append(result["breakpoint"])
    assert covered >= 21, f"CI covered B* in {covered}/30"
    assert np.median(np.log2(estimates)) == pytest.approx(5, abs=0.5)


def test_square_root_slope_is_recovered():
    rng = np.random.default_rng(7)
    records = synthetic_records(rng, slope=0.5, log2_breakpoint=6, noise=0.002,
                                batch_log2=range(0, 11, 2), lr_log2=range(-8, 1))
    result = analysis.regime_breakpoint(records, settings(), "sgd")
    assert result["slope"] == pytest.approx(0.5, abs=0.15)
    assert result["critical_lr"] == pytest.approx(0.25, rel=0.3)
    assert result["plateau_seen"] and result["growth_seen"]


def test_momentum_advantage_from_largest_run_of_wins():
    rows = []
    for b, sgd, mom in [(8, 0.90, 0.91), (16, 0.90, 0.95), (32, 0.90, 0.90), (64, 0.85, 0.90),
                        (128, 0.80, 0.90)]:
        rows += [dict(optimizer="sgd", batch_size=b, test_accuracy_mean=sgd,
                      test_accuracy_std=0.01),
                 dict(optimizer="momentum", batch_size=b, test_accuracy_mean=mom,
                      test_accuracy_std=0.01)]
    result = analysis.momentum_advantage(pd.DataFrame(rows), settings())
    assert list(result["per_batch"]["beats"]) == [False, True, False, True, True]
    assert result["from_batch_size"] == 64  # 16 wins alone, 32 does not, so the run starts at 64


def test_budget_optima_test_vs_train():
    records = []
    for epochs, test_best, train_best in [(5.0, 0.4, 0.4), (50.0, 0.4, 0.1)]:
        for lr in (0.1, 0.2, 0.4, 0.8):
            records.append(make_record("momentum", 32, lr, 0, 1 - abs(lr - test_best),
                                       abs(lr - train_best), epochs=epochs))
    assert analysis.sweep_kind(records) == "epoch_budget"
    s = settings(best_k=1)
    out = analysis.budget_optima(records, s).set_index("epochs")
    assert out.loc[5.0, "optimal_lr_test"] == 0.4 and out.loc[5.0, "optimal_lr_train"] == 0.4
    assert out.loc[50.0, "optimal_lr_test"] == 0.4 and out.loc[50.0, "optimal_lr_train"] == 0.1
