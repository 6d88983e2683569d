"""Report of a sweep: tables, figures, regime breakpoints and paper comparison; its CLI.

    python -m tf_sgd_regimes.report --workdir=DIR   # reads DIR/config.json and DIR/ledger/
"""

import json
import os
from typing import Optional

import numpy as np
import pandas as pd

from tf_sgd_regimes.report import analysis
from tf_sgd_regimes.report import figures
from tf_sgd_regimes.report import tables
from tf_sgd_regimes.sweep import ledger

_ORDER = {"sgd": 0, "momentum": 1}


def _field(config, name: str, default=None):
    """config[name] for a dict or ConfigDict, `default` when absent."""
    if config is None:
        return default
    try:
        value = config[name]
    except (KeyError, AttributeError, TypeError):
        return default
    return default if value is None else value


def _expected_cells(sweep) -> Optional[int]:
    """Cells the config's grid asks for, or None when the sweep fields are not there."""
    sizes = [_field(sweep, key) for key in ("optimizers", "batch_sizes", "effective_lrs", "seeds")]
    if sweep is None or any(s is None for s in sizes):
        return None
    count = int(np.prod([len(s) for s in sizes]))
    budgets = _field(sweep, "epoch_budgets", ())
    return count * max(1, len(budgets))


def _breakpoint_text(fit: dict) -> str:
    if "error" in fit:
        return f"regime breakpoint: not fitted ({fit['error']})"
    level = int(round(100 * fit["ci_level"]))
    low, high = fit["breakpoint_ci"]
    text = (f"regime breakpoint B* = {fit['breakpoint']:.3g} ({level}% CI {low:.3g} to "
            f"{high:.3g}); small-batch slope {fit['slope']:.2f} ({fit['slope_ci'][0]:.2f} to "
            f"{fit['slope_ci'][1]:.2f}); critical effective LR {fit['critical_lr']:.3g} "
            f"({fit['critical_lr_ci'][0]:.3g} to {fit['critical_lr_ci'][1]:.3g}); "
            f"{fit['num_points']} batch sizes, {fit['num_bootstrap']} bootstrap resamples of seeds")
    if not fit["plateau_seen"]:
        text += "\n  (no plateau within the batch sizes tried: B* is at least the largest B)"
    if not fit["growth_seen"]:
        text += "\n  (no growth within the batch sizes tried: B* is at most the smallest B)"
    return text


def generate(workdir: str, config, records=None, out_dir: Optional[str] = None) -> dict:
    """Writes the report of a sweep into `out_dir` (default `<workdir>/report/`).

    Args:
      workdir: the sweep's work directory (its ledger is read when `records` is None).
      config: the experiment config (ConfigDict or dict) with name, analysis and sweep.
      records: ledger records; default ledger.read(workdir).
      out_dir: where to write; default <workdir>/report.

    Returns:
      {"out_dir", "tables": {optimizer: {"md", "csv", "tex"}}, "figures": {name: [paths]},
       "exports": {name: path}, "breakpoints", "momentum_from_batch_size", "text"}.
    """
    records = ledger.read(workdir) if records is None else list(records)
    settings = analysis.settings_from(_field(config, "analysis"))
    name = _field(config, "name", "") or os.path.basename(os.path.abspath(workdir))
    out_dir = out_dir or os.path.join(workdir, "report")
    os.makedirs(out_dir, exist_ok=True)
    result = {"out_dir": out_dir, "tables": {}, "figures": {}, "exports": {},
              "breakpoints": {}, "momentum_from_batch_size": None}
    statuses = {s: sum(r["status"] == s for r in records) for s in ledger.STATUSES}
    expected = _expected_cells(_field(config, "sweep"))
    counts = ", ".join(f"{v} {k}" for k, v in statuses.items())
    lines = [f"# {name}: {len(records)} records ({counts})"
             + (f" of {expected} cells in the grid" if expected else "")]
    if expected and len(records) < expected:
        lines.append(f"partial sweep: {expected - len(records)} cells have no record yet")

    frame = analysis.tidy(records)
    result["exports"]["records"] = os.path.join(out_dir, "records.csv")
    frame.to_csv(result["exports"]["records"], index=False)
    if frame.empty or settings.selection_metric not in frame or \
            frame[settings.selection_metric].notna().sum() == 0:
        lines.append(f"no completed run has the selection metric {settings.selection_metric!r}; "
                     "nothing to analyse yet")
        return _finish(result, lines, out_dir)

    kind = analysis.sweep_kind(records)
    cells = analysis.cell_stats(records, settings)
    optimal = analysis.optima(cells, settings)
    for key, table in (("cells", cells), ("optima", optimal)):
        result["exports"][key] = os.path.join(out_dir, f"{key}.csv")
        table.to_csv(result["exports"][key], index=False)
    direction = "higher" if settings.selection_mode == "max" else "lower"
    lines.append(f"selection: {settings.selection_metric} on the {settings.split} split "
                 f"({direction} is better); mean ± std of the best {settings.best_k} of "
                 f"{settings.num_seeds} runs at the optimal effective LR; range = LRs whose mean "
                 f"is within {settings.range_rule_std:g} std of the optimum")
    # How faithful this run is to the paper: the card's choices and any departure from it.
    from tf_sgd_regimes.reference import fidelity

    result["fidelity"] = fidelity.report_lines(config)
    lines += result["fidelity"]

    optimizers = sorted(optimal["optimizer"].unique(), key=lambda o: (_ORDER.get(o, 9), o))
    resolution = analysis.metric_resolution(records, settings.selection_metric)
    tied = analysis.ties(cells, settings, resolution)
    result["ties"] = tied
    for optimizer in optimizers:
        table = tables.optimizer_table(optimal, settings, optimizer)
        table, paper_summary = tables.add_paper(table, settings, optimizer)
        rows = tables.display_rows(table, settings, show_epochs=kind == "epoch_budget")
        base = os.path.join(out_dir, f"table_{optimizer}")
        title = f"{tables.OPTIMIZER_NAMES.get(optimizer, optimizer)} ({name})"
        with open(base + ".md", "w") as f:
            f.write(f"### {title}\n\n" + tables.to_markdown(rows))
        with open(base + ".tex", "w") as f:
            f.write(tables.to_latex(rows, caption=title))
        table.to_csv(base + ".csv", index=False)
        result["tables"][optimizer] = {e: f"{base}.{e}" for e in ("md", "csv", "tex")}
        lines += ["", f"## {title}", tables.to_text(rows)]
        if paper_summary:
            lines.append(paper_summary)
        edges = table[table["edge"] != ""]
        if len(edges):
            lines.append("WARNING: optimum on the edge of the learning-rate grid at B = "
                         f"{', '.join(map(str, edges['batch_size']))}: widen the sweep's "
                         "effective_lrs there")
        lines += _ties_text(tied[tied["optimizer"] == optimizer], settings, resolution)
        if kind == "batch_size" and table["batch_size"].nunique() >= 3:
            fit = analysis.regime_breakpoint(records, settings, optimizer)
            result["breakpoints"][optimizer] = fit
            lines.append(_breakpoint_text(fit))

    advantage = analysis.momentum_advantage(optimal, settings)
    if len(advantage["per_batch"]):
        start = advantage["from_batch_size"]
        result["momentum_from_batch_size"] = start
        lines += ["", "Momentum beats SGD by more than the noise (difference of best-k means > "
                  f"{settings.advantage_std:g} x combined std) "
                  + (f"from batch size {start} upward" if start else "at no batch size onward "
                     "to the largest tried")]

    _figures(result, settings, kind, cells, optimal, config, name, out_dir)
    lines += _noise_scale(result, records, optimal, name, out_dir)
    lines += _language_bound(config, optimal, settings)
    if kind == "epoch_budget":
        budget = analysis.budget_optima(records, settings)
        result["exports"]["budget"] = os.path.join(out_dir, "budget.csv")
        budget.to_csv(result["exports"]["budget"], index=False)
        result["figures"]["budget"] = figures.save(
            figures.budget_figure(budget, settings, name), os.path.join(out_dir, "budget"))
        lines += ["", "## Optimal effective LR per epoch budget: for the test vs training metric",
                  tables.to_text(budget.assign(
                      optimal_lr_test=budget["optimal_lr_test"].map(tables.format_lr),
                      optimal_lr_train=budget["optimal_lr_train"].map(tables.format_lr))[
                      ["optimizer", "batch_size", "epochs", "optimal_lr_test",
                       "optimal_lr_train"]].astype(str))]
    return _finish(result, lines, out_dir)


def _ties_text(tied, settings, resolution: float) -> list:
    """A warning when learning rates tie on the selection metric (analysis.ties)."""
    if tied.empty:
        return []
    metric = settings.selection_metric
    within = (f"within one evaluation example (1/{round(1 / resolution)})" if resolution > 0
              else "exactly")
    at = "; ".join(f"B = {int(r.batch_size)}"
                   + (f", {r.epochs:g} epochs" if len(set(tied["epochs"])) > 1 else "")
                   + f": {', '.join(f'{lr:.4g}' for lr in r.tied_lrs)}"
                   for r in tied.itertuples())
    loss = metric.rsplit("_", 1)[0] + "_loss"
    where = "one slice" if len(tied) == 1 else f"{len(tied)} slices"
    return [f"WARNING: the optimum is a tie in {where}: several learning rates have best-"
            f"{settings.best_k} means of {metric} equal {within} ({at}). There the optimal "
            f"rate and its range follow the grid, not the data. Select on the loss, which "
            f"does not tie: --config.analysis.selection_metric={loss} "
            "--config.analysis.selection_mode=min (or evaluate on more examples)"]


def _language_bound(config, optimal, settings) -> list:
    """The synthetic language's best possible perplexity (its entropy rate) beside ours."""
    data = _field(config, "data")
    metric = settings.selection_metric
    if _field(data, "name") != "synthetic_language" or "perplexity" not in metric:
        return []
    from tf_sgd_regimes.data import synthetic_language

    fields = {key: _field(data, key) for key in
              ("vocab_size", "concentration", "uniform_mix", "chain_seed")
              if _field(data, key) is not None}
    bound = synthetic_language.bounds(**fields)
    best = optimal.loc[optimal[f"{metric}_mean"].idxmin()]
    return ["", f"The chain's entropy rate allows a {metric} of "
            f"{bound['optimal_perplexity']:.3f} at best (a model without context: "
            f"{bound['unigram_perplexity']:.3f}); the best found here is "
            f"{best[f'{metric}_mean']:.3f} ({best['optimizer']}, B = {int(best['batch_size'])}), "
            f"{best[f'{metric}_mean'] / bound['optimal_perplexity']:.3f}x the bound"]


def _figures(result, settings, kind, cells, optimal, config, name, out_dir):
    save = lambda figure, stem: figures.save(figure, os.path.join(out_dir, stem))  # noqa: E731
    if optimal["batch_size"].nunique() >= 2:
        result["figures"]["test_vs_batch"] = save(figures.metric_vs_batch_figure(
            optimal, settings.selection_metric, name), "test_vs_batch")
        if f"{settings.train_metric}_mean" in optimal:
            result["figures"]["train_vs_batch"] = save(figures.metric_vs_batch_figure(
                optimal, settings.train_metric, name), "train_vs_batch")
        result["figures"]["optimal_lr_vs_batch"] = save(figures.optimal_lr_figure(
            optimal, result["breakpoints"], name), "optimal_lr_vs_batch")
    if kind == "batch_size":
        result["figures"]["test_vs_lr"] = save(figures.lr_sweep_figure(
            cells, settings.selection_metric, name), "test_vs_lr")
        if f"{settings.train_metric}_mean" in cells:
            result["figures"]["train_vs_lr"] = save(figures.lr_sweep_figure(
                cells, settings.train_metric, name), "train_vs_lr")
    schedule = _field(config, "schedule")
    figure = figures.schedule_figure(float(_field(schedule, "decay_factor", 2.0)),
                                     int(_field(schedule, "warmup_steps", 0)))
    if figure is None:
        result["skipped"] = ["schedule figure: tf_sgd_regimes.schedules.schedule_values missing"]
    else:
        result["figures"]["schedule"] = save(figure, "schedule")


def _pooled(trace_sigma, grad_sq):
    """B_simple pooled over runs as a ratio of averages (noise_scale.py); NaN if |G|^2 <= 0."""
    trace, grad = np.nanmean(np.asarray(trace_sigma, float)), np.nanmean(np.asarray(grad_sq, float))
    return float(trace / grad) if np.isfinite(grad) and grad > 0 else np.nan


def _noise_scale(result, records, optimal, name, out_dir) -> list:
    """B_simple (config.train.noise_scale) beside B*: per optimizer, at init (all runs) and
    mid-training (the best-k runs at each batch size's optimal LR). Lines for the text."""
    init_key, mid_key = "noise_scale_init", "noise_scale_mid"
    if not any((r.get("metrics") or {}).get(f"{init_key}_grad_sq") is not None
               for r in records):
        return []
    frame = analysis.tidy(records)
    rows = []
    for _, row in optimal.iterrows():
        runs = frame[frame["optimizer"] == row["optimizer"]]
        rows.append({"optimizer": row["optimizer"], "batch_size": int(row["batch_size"]),
                     "epochs": row["epochs"], "optimal_lr": row["optimal_lr"],
                     "b_simple_init": _pooled(runs.get(f"{init_key}_trace_sigma", np.nan),
                                              runs.get(f"{init_key}_grad_sq", np.nan)),
                     "b_simple_mid": _pooled(row.get(f"{mid_key}_trace_sigma_mean", np.nan),
                                             row.get(f"{mid_key}_grad_sq_mean", np.nan))})
    noise = pd.DataFrame(rows)
    result["exports"]["noise_scale"] = os.path.join(out_dir, "noise_scale.csv")
    noise.to_csv(result["exports"]["noise_scale"], index=False)
    result["noise_scale"] = {}
    lines = ["", "Gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018) beside the "
             "measured breakpoint B*: init over all runs; mid-training (step total/2) at each "
             "batch size's optimal LR, median over batch sizes"]
    for optimizer, group in noise.groupby("optimizer", sort=False):
        init = float(group["b_simple_init"].iloc[0])
        mid = float(np.nanmedian(group["b_simple_mid"])) if group["b_simple_mid"].notna().any() \
            else np.nan
        fit = result["breakpoints"].get(optimizer) or {}
        star = fit.get("breakpoint", np.nan)
        result["noise_scale"][optimizer] = {"init": init, "mid": mid, "breakpoint": star}
        ratio = lambda v: f"{v / star:.3g}" if np.isfinite(v) and np.isfinite(star) else "-"  # noqa
        lines.append(f"  {optimizer}: B_simple init {init:.3g}, mid-training {mid:.3g}; "
                     f"B* {star:.3g}; B_simple/B* init {ratio(init)}, mid {ratio(mid)}")
    result["figures"]["noise_scale"] = figures.save(
        figures.noise_scale_figure(noise, result["breakpoints"], name),
        os.path.join(out_dir, "noise_scale"))
    return lines


def _finish(result: dict, lines: list, out_dir: str) -> dict:
    if result["figures"]:
        lines += ["", f"report written to {out_dir}/ (tables .md/.csv/.tex, figures .png/.pdf, "
                  "records.csv)"]
    result["text"] = "\n".join(lines)
    with open(os.path.join(out_dir, "report.txt"), "w") as f:
        f.write(result["text"] + "\n")
    with open(os.path.join(out_dir, "breakpoints.json"), "w") as f:
        json.dump(result["breakpoints"], f, indent=1, default=float)
    return result


def main(argv):
    from absl import flags

    del argv
    workdir = flags.FLAGS.workdir
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise SystemExit(f"--workdir={workdir}: no config.json there; point --workdir at a "
                         "sweep's work directory (python -m tf_sgd_regimes.run writes one)")
    with open(path) as f:
        config = json.load(f)
    result = generate(workdir, config, out_dir=flags.FLAGS.out_dir or None)
    print(result["text"])


def entry_point():
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "A sweep's work directory (config.json + ledger/).")
    flags.DEFINE_string("out_dir", "", "Where to write the report; default <workdir>/report.")
    flags.mark_flag_as_required("workdir")
    app.run(main)

