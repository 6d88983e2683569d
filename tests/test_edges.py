"""Tests for edges.py: planning grid extensions, the extension loop, and a real tiny sweep."""

import json
import math
import os

import numpy as np
import pytest

from tf_sgd_regimes.report import analysis
from tf_sgd_regimes.sweep import edges, ledger


def record(batch_size, lr, acc, seed=0, optimizer="sgd", status="complete", epochs=5.0):
    """A ledger-shaped record; diverged records carry no metric values, as the engine's."""
    metrics = {"test_accuracy": acc, "train_loss": None if acc is None else 1.0 - acc}
    if status == "diverged":
        metrics = {"test_accuracy": None, "train_loss": None}
    return {"cell_id": f"{optimizer}_B{batch_size}_lr{lr:.6g}_E{epochs:g}_s{seed}",
            "status": status, "metrics": metrics,
            "hparams": {"optimizer": optimizer, "momentum": 0.0, "batch_size": batch_size,
                        "effective_lr": lr, "learning_rate": lr, "seed": seed,
                        "epochs": epochs, "steps": 10}}


def config(lrs, **extend):
    return {"name": "t", "sweep": {"effective_lrs": tuple(lrs), "extend_edges": extend},
            "analysis": {"selection_metric": "test_accuracy", "selection_mode": "max",
                         "best_k": 1, "num_seeds": 1}}


def peaked(batch_size, lrs, log2_opt, diverge_above=None, seeds=(0,)):
    """Accuracy 0.9 - 0.02 (log2 lr - log2 lr*)^2; rates above `diverge_above` diverge."""
    out = []
    for lr in lrs:
        for seed in seeds:
            if diverge_above is not None and lr > diverge_above:
                out.append(record(batch_size, lr, None, seed, status="diverged"))
            else:
                out.append(record(batch_size, lr, 0.9 - 0.02 * (math.log2(lr) - log2_opt) ** 2,
                                  seed))
    return out


GRID = [0.25, 0.5, 1.0, 2.0]


def test_low_edge_adds_the_next_rate_below_only_where_needed():
    records = peaked(64, GRID, log2_opt=-4) + peaked(256, GRID, log2_opt=0)
    plan = edges.plan_extension(records, config(GRID))
    assert [(e["batch_size"], e["side"], e["add"]) for e in plan["edges"]] == [(64, "low", [0.125])]
    assert plan["edges"][0]["optimal_lr"] == 0.25
    assert plan["new_lrs"] == [0.125]
    assert plan["effective_lrs"] == [0.125] + GRID
    assert plan["capped"] == []


def test_high_edge_on_a_sqrt2_grid_keeps_the_grid_step_exactly():
    grid = [2.0 ** (e / 2) for e in range(-4, 1)]  # 0.25 .. 1 in steps of sqrt(2)
    plan = edges.plan_extension(peaked(32, grid, log2_opt=3), config(grid))
    (entry,) = plan["edges"]
    assert entry["side"] == "high" and entry["optimal_lr"] == 1.0
    assert entry["add"] == [2.0 ** 0.5]  # bit-identical to the powers-of-two helper's value
    assert plan["steps"]["high"] == pytest.approx(math.sqrt(2))


def test_interior_optimum_plans_nothing():
    plan = edges.plan_extension(peaked(64, GRID, log2_opt=-0.9), config(GRID))
    assert plan["edges"] == [] and plan["capped"] == [] and plan["new_lrs"] == []
    assert plan["effective_lrs"] == GRID


def test_diverged_neighbour_makes_the_optimum_interior():
    # Optimum would be far above; 2.0 diverged, so 1.0 is the best *stable* rate: interior.
    records = peaked(64, GRID, log2_opt=5, diverge_above=1.0)
    assert edges.plan_extension(records, config(GRID))["edges"] == []
    # Without the diverged cell the same optimum sits on the high edge.
    trimmed = [r for r in records if r["status"] != "diverged"]
    plan = edges.plan_extension(trimmed, config(GRID))
    assert [(e["side"], e["add"]) for e in plan["edges"]] == [("high", [2.0])]
    assert plan["new_lrs"] == []  # 2.0 is in the config's grid already: it just lacks a record


def test_cap_counts_rates_added_beyond_the_initial_grid():
    tried = GRID + [4.0, 8.0]  # two rates were added above the initial grid already
    records = peaked(64, tried, log2_opt=6)
    capped = edges.plan_extension(records, config(tried, max_added_per_edge=2), initial_lrs=GRID)
    assert capped["edges"] == [] and capped["new_lrs"] == []
    (entry,) = capped["capped"]
    assert entry["side"] == "high" and entry["added_before"] == 2 and "cap" in entry["reason"]
    room = edges.plan_extension(records, config(tried, max_added_per_edge=3), initial_lrs=GRID)
    assert room["new_lrs"] == [16.0] and room["capped"] == []


def test_every_rate_diverged_extends_downwards():
    records = peaked(64, GRID, log2_opt=0, diverge_above=0.1)
    (entry,) = edges.plan_extension(records, config(GRID))["edges"]
    assert entry["side"] == "low" and entry["add"] == [0.125] and entry["optimal_lr"] is None


def test_single_rate_grows_both_ways_and_lrs_per_round():
    plan = edges.plan_extension(peaked(64, [1.0], 0), config([1.0], lrs_per_round=2))
    assert sorted((e["side"], tuple(e["add"])) for e in plan["edges"]) == [
        ("high", (2.0, 4.0)), ("low", (0.5, 0.25))]
    assert plan["new_lrs"] == [0.25, 0.5, 2.0, 4.0]


def test_only_failed_runs_plan_nothing():
    failed = [dict(record(64, lr, None, status="failed"), metrics={}) for lr in GRID]
    plan = edges.plan_extension(failed, config(GRID))
    assert plan["edges"] == [] and plan["new_lrs"] == []


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="extend_edges.step"):
        edges.plan_extension([], config(GRID, step=0.5))
    with pytest.raises(ValueError, match="unknown fields"):
        edges.edge_settings(config(GRID, max_round=3))


# ------------------------------------------------------------------ the loop, fake sweep


class FakeSweep:
    """Synthesises records for every cell of a config's (product) grid, like Sweep.run."""

    def __init__(self, optima_log2):
        self.optima_log2 = optima_log2  # batch size -> log2 of the true optimum
        self.calls = []

    def __call__(self, cfg):
        lrs = list(cfg["sweep"]["effective_lrs"])
        self.calls.append(lrs)
        return [r for b, opt in self.optima_log2.items()
                for r in peaked(b, lrs, opt, diverge_above=2.0 ** (opt + 3))]


@pytest.mark.parametrize("per_round, expected_rounds", [(1, 7), (3, 3)])
def test_extend_edges_walks_to_a_far_optimum(tmp_path, per_round, expected_rounds):
    # B=32's optimum (2^-9) is 6 octaves below the grid 2^-3..2^0; B=256's is interior.
    grid = [2.0 ** e for e in range(-3, 1)]
    fake = FakeSweep({32: -9, 256: -1})
    cfg = config(grid, max_added_per_edge=10, lrs_per_round=per_round)
    records = edges.extend_edges(cfg, str(tmp_path), fake, max_rounds=20)
    state = json.load(open(tmp_path / edges.EDGES_FILE))
    assert state["status"] == "interior"
    assert len(state["rounds"]) == expected_rounds and len(fake.calls) == expected_rounds + 1
    assert state["initial_effective_lrs"] == grid
    added = [sorted(r["added_lrs"], reverse=True) for r in state["rounds"]]
    # Each round adds the next rates below the previous minimum, one octave apart.
    octaves = [2.0 ** -e for e in range(4, 4 + per_round * expected_rounds)]
    assert added == [octaves[i:i + per_round] for i in range(0, len(octaves), per_round)]
    added = octaves
    assert all(e["batch_size"] == 32 and e["side"] == "low"
               for r in state["rounds"] for e in r["edges"])
    optimal = analysis.optima(analysis.cell_stats(records, analysis.settings_from(
        cfg["analysis"])), analysis.settings_from(cfg["analysis"]))
    assert optimal.set_index("batch_size")["optimal_lr"].to_dict() == {32: 2.0 ** -9,
                                                                        256: 0.5}
    assert optimal["edge"].isna().all()
    # The grid is a product: B=256 got the new rates too (documented scope).
    assert min(r["hparams"]["effective_lr"] for r in records if r["hparams"]["batch_size"]
               == 256) == min(added)


def test_extend_edges_stops_at_the_caps_and_resumes(tmp_path):
    grid = [2.0 ** e for e in range(-3, 1)]
    fake = FakeSweep({32: -9})
    cfg = config(grid, max_added_per_edge=3)
    edges.extend_edges(cfg, str(tmp_path), fake, max_rounds=2)
    state = edges.load(str(tmp_path))
    assert state["status"] == "max_rounds" and len(state["rounds"]) == 2
    assert edges.with_recorded_extensions(cfg, str(tmp_path))["sweep"]["effective_lrs"] == \
        tuple([0.03125, 0.0625] + grid)
    # A second call continues from edges.json; the per-edge cap (3 below 2^-3) now binds.
    edges.extend_edges(cfg, str(tmp_path), fake, max_rounds=10)
    state = edges.load(str(tmp_path))
    assert state["status"] == "cap" and len(state["rounds"]) == 3
    assert state["remaining_edges"][0]["added_before"] == 3
    assert min(fake.calls[-1]) == 2.0 ** -6


def test_extend_edges_reports_a_stalled_run_function(tmp_path):
    grid = [0.25, 0.5]
    stuck = lambda cfg: peaked(64, [0.25, 0.5], log2_opt=3)  # noqa: E731 (never trains more)
    edges.extend_edges(config(grid), str(tmp_path), stuck, max_rounds=5)
    state = edges.load(str(tmp_path))
    assert state["status"] == "stalled" and len(state["rounds"]) == 1
    assert state["rounds"][0]["new_cells"] == 0


# ------------------------------------------------------------------ end to end, real sweep


def test_real_sweep_on_digits_grows_a_too_small_grid(tmp_path):
    from tf_sgd_regimes import experiments
    from tf_sgd_regimes.sweep import loop as sweep

    cfg = experiments.get_config("digits_mlp_epoch_budget")
    cfg.sweep.optimizers = ("sgd",)
    cfg.sweep.batch_sizes = (64, 256)
    cfg.sweep.effective_lrs = (0.25, 0.5)  # deliberately too small: optimum near 1 here
    cfg.sweep.seeds = (0,)
    cfg.budget.epochs = 5.0
    cfg.model.hidden = (32,)
    cfg.train.steps_per_call = 32
    cfg.analysis.best_k = 1
    cfg.analysis.num_seeds = 1
    cfg = experiments.apply_overrides(cfg, [])
    workdir = str(tmp_path / "wd")
    dataset = sweep.load_dataset(cfg)

    def run(c):
        return sweep.Sweep(c, workdir, dataset=dataset, progress_interval_s=1e9).run()

    records = edges.extend_edges(cfg, workdir, run, max_rounds=4)
    state = edges.load(workdir)
    assert state["status"] in ("interior", "cap")
    assert len(state["rounds"]) >= 1 and state["rounds"][0]["added_lrs"] == [1.0]
    final = state["final_effective_lrs"]
    # Each cell once: exactly the product grid, no duplicates, no strays.
    ids = [r["cell_id"] for r in ledger.read(workdir)]
    assert len(ids) == len(set(ids)) == len(records) == 2 * len(final)
    assert {r["hparams"]["effective_lr"] for r in records} == set(final)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["sweep"]["effective_lrs"] == final
    settings = analysis.settings_from(cfg.analysis)
    optimal = analysis.optima(analysis.cell_stats(records, settings), settings)
    if state["status"] == "interior":
        assert optimal["edge"].isna().all()
        assert np.all(optimal["optimal_lr"] > 0.5)
    # A re-run of the grown grid (what run.py does on resume) trains nothing new.
    again = run(edges.with_recorded_extensions(cfg, workdir))
    assert sorted(r["cell_id"] for r in again) == sorted(ids)
