"""Report figures (matplotlib, Agg): metric and optimal LR vs batch size, LR sweeps, budgets.

Each `*_figure` function returns a Figure so tests and notebooks can inspect it; `save`
writes it as PNG and PDF. SGD is always blue circles, Momentum orange squares.
"""

import math
import os
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tf_sgd_regimes.report import analysis  # noqa: E402
from tf_sgd_regimes.report import tables  # noqa: E402

STYLE = {
    "sgd": dict(color="tab:blue", marker="o", label="SGD"),
    "momentum": dict(color="tab:orange", marker="s", label="Momentum"),
}
RC = {"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
      "legend.fontsize": 8, "figure.constrained_layout.use": True}


def _style(optimizer: str) -> dict:
    return STYLE.get(optimizer, dict(color="tab:gray", marker="^", label=optimizer))


_SUPERSCRIPT = str.maketrans("-0123456789.", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹·")


def _power_of_two_label(value, _position=None) -> str:
    # Plain unicode text: mathtext labels made each figure several times slower to draw.
    if value <= 0:
        return ""
    exponent = np.log2(value)
    if abs(exponent - round(exponent)) > 1e-6:
        return ""
    exponent = int(round(exponent))
    return f"{2 ** exponent:d}" if 0 <= exponent <= 12 else "2" + str(exponent).translate(
        _SUPERSCRIPT)


def _by_optimizer(frame: pd.DataFrame):
    """(optimizer, rows) pairs with SGD first, then Momentum, then any other, by name."""
    order = {"sgd": 0, "momentum": 1}
    names = sorted(frame["optimizer"].unique(), key=lambda o: (order.get(o, 9), o))
    return [(name, frame[frame["optimizer"] == name]) for name in names]


def _log2_axis(axis, which="x"):
    (axis.set_xscale if which == "x" else axis.set_yscale)("log", base=2)
    target = axis.xaxis if which == "x" else axis.yaxis
    target.set_major_locator(ticker.LogLocator(base=2, numticks=7))
    target.set_major_formatter(ticker.FuncFormatter(_power_of_two_label))
    target.set_minor_locator(ticker.NullLocator())


def save(figure, path_without_extension: str) -> List[str]:
    """Writes PNG and PDF next to each other and closes the figure."""
    os.makedirs(os.path.dirname(path_without_extension) or ".", exist_ok=True)
    paths = []
    with plt.rc_context(RC):
        for extension in ("png", "pdf"):
            path = f"{path_without_extension}.{extension}"
            figure.savefig(path)
            paths.append(path)
    plt.close(figure)
    return paths


def metric_vs_batch_figure(optimal: pd.DataFrame, metric: str, title: str = ""):
    """Best-k mean ± std of `metric` at the optimal LR vs batch size, one series per optimizer."""
    with plt.rc_context(RC):
        figure, axis = plt.subplots(figsize=(4.5, 3.4))
        scale = tables.display_scale(metric, optimal.get(f"{metric}_mean", []))
        for optimizer, rows in _by_optimizer(optimal):
            rows = rows.dropna(subset=[f"{metric}_mean"]).sort_values("batch_size")
            axis.errorbar(rows["batch_size"], rows[f"{metric}_mean"] * scale,
                          yerr=rows[f"{metric}_std"].fillna(0) * scale, capsize=2,
                          **_style(optimizer))
        _log2_axis(axis)
        axis.set_xlabel("batch size")
        axis.set_ylabel(tables.metric_label(metric, scale))
        axis.set_title(title)
        axis.legend()
    return figure


def optimal_lr_figure(optimal: pd.DataFrame, breakpoints: Dict[str, dict], title: str = ""):
    """Optimal effective LR vs batch size (log-log, base 2), range as error bars, slope-1 and
    square-root guides, B* (and its CI) marked per optimizer. Edge optima are hollow."""
    with plt.rc_context(RC):
        figure, axis = plt.subplots(figsize=(4.5, 3.4))
        anchor = None
        for optimizer, rows in _by_optimizer(optimal):
            rows = rows.dropna(subset=["optimal_lr"]).sort_values("batch_size")
            if rows.empty:
                continue
            style = _style(optimizer)
            errors = [rows["optimal_lr"] - rows["lr_low"], rows["lr_high"] - rows["optimal_lr"]]
            axis.errorbar(rows["batch_size"], rows["optimal_lr"], yerr=errors, capsize=2,
                          **style)
            edge = rows[rows["edge"].notna() & (rows["edge"] != "")]
            if len(edge):
                axis.plot(edge["batch_size"], edge["optimal_lr"], linestyle="none",
                          marker=style["marker"], markersize=10, markerfacecolor="none",
                          color="red", label=f"{style['label']} optimum on grid edge")
            if anchor is None:
                anchor = (rows["batch_size"].iloc[0], rows["optimal_lr"].iloc[0])
            fit = breakpoints.get(optimizer) or {}
            if "breakpoint" in fit:
                axis.axvline(fit["breakpoint"], color=style["color"], linestyle=":",
                             label=f"{style['label']} B* = {fit['breakpoint']:.3g}")
                low, high = fit["breakpoint_ci"]
                axis.axvspan(low, high, color=style["color"], alpha=0.1)
        if anchor is not None:
            batch = np.array(sorted(optimal["batch_size"].unique()), dtype=float)
            axis.plot(batch, anchor[1] * batch / anchor[0], color="black", linestyle="--",
                      linewidth=0.8, label="slope 1 (linear)")
            axis.plot(batch, anchor[1] * np.sqrt(batch / anchor[0]), color="gray",
                      linestyle="-.", linewidth=0.8, label="slope 1/2 (square root)")
        _log2_axis(axis, "x")
        _log2_axis(axis, "y")
        axis.set_xlabel("batch size")
        axis.set_ylabel("optimal effective learning rate")
        axis.set_title(title)
        axis.legend()
    return figure


def lr_sweep_figure(cells: pd.DataFrame, metric: str, title: str = ""):
    """Paper figure 5 style: `metric` (best-k mean ± std) vs effective LR, one panel per batch
    size, one series per optimizer; diverged or ineligible cells are crosses at the bottom."""
    batches = sorted(cells["batch_size"].unique())
    columns = min(4, len(batches))
    rows_count = math.ceil(len(batches) / columns)
    scale = tables.display_scale(metric, cells.get(f"{metric}_mean", []))
    with plt.rc_context(RC):
        figure, axes = plt.subplots(rows_count, columns, squeeze=False, sharey=True,
                                    figsize=(3.0 * columns, 2.4 * rows_count))
        for axis, batch in zip(axes.flat, batches):
            for optimizer, rows in _by_optimizer(cells[cells["batch_size"] == batch]):
                rows = rows.groupby("effective_lr", as_index=False).first()
                good = rows[rows["eligible"]]
                style = _style(optimizer)
                axis.errorbar(good["effective_lr"], good[f"{metric}_mean"] * scale,
                              yerr=good[f"{metric}_std"].fillna(0) * scale, capsize=1.5,
                              markersize=3, **style)
                bad = rows[~rows["eligible"]]
                if len(bad):
                    axis.plot(bad["effective_lr"], np.zeros(len(bad)), "x", color=style["color"],
                              transform=axis.get_xaxis_transform(), clip_on=False)
            _log2_axis(axis)
            axis.set_title(f"B = {batch}")
            axis.set_xlabel("effective learning rate")
        for axis in axes[:, 0]:
            axis.set_ylabel(tables.metric_label(metric, scale))
        for axis in list(axes.flat)[len(batches):]:
            axis.set_visible(False)
        axes.flat[0].legend()
        figure.suptitle(title)
    return figure


def budget_figure(budget: pd.DataFrame, settings: analysis.Settings, title: str = ""):
    """Paper figures 2/9/10 style, per (optimizer, B): (a) test metric at its optimal LR vs
    epochs, (b) training metric at its optimal LR vs epochs, (c) both optimal LRs vs epochs."""
    test, train = settings.selection_metric, settings.train_metric
    scale = tables.display_scale(test, budget[f"{test}_mean"])
    with plt.rc_context(RC):
        figure, axes = plt.subplots(1, 3, figsize=(11, 3.2))
        for (optimizer, batch), rows in budget.groupby(["optimizer", "batch_size"]):
            rows = rows.sort_values("epochs")
            style = _style(optimizer)
            label = f"{style['label']} B={batch}"
            axes[0].errorbar(rows["epochs"], rows[f"{test}_mean"] * scale,
                             yerr=rows[f"{test}_std"].fillna(0) * scale, capsize=2,
                             color=style["color"], marker=style["marker"], label=label)
            train_mean = rows.get(f"{train}_mean_at_train_optimum", rows.get(f"{train}_mean"))
            train_std = rows.get(f"{train}_std_at_train_optimum", rows.get(f"{train}_std"))
            axes[1].errorbar(rows["epochs"], train_mean, yerr=train_std.fillna(0), capsize=2,
                             color=style["color"], marker=style["marker"], label=label)
            axes[2].plot(rows["epochs"], rows["optimal_lr_test"], color=style["color"],
                         marker=style["marker"], label=f"{label}: best {test}")
            axes[2].plot(rows["epochs"], rows["optimal_lr_train"], color=style["color"],
                         marker=style["marker"], linestyle="--", markerfacecolor="none",
                         label=f"{label}: best {train}")
        for axis in axes:
            _log2_axis(axis)
            axis.set_xlabel("epoch budget")
            axis.legend()
        _log2_axis(axes[2], "y")
        axes[0].set_ylabel(tables.metric_label(test, scale))
        axes[1].set_ylabel(tables.metric_label(train))
        axes[2].set_ylabel("optimal effective learning rate")
        figure.suptitle(title)
    return figure


def schedule_figure(decay_factor: float = 2.0, warmup_steps: int = 0, total_steps: int = 1000):
    """Paper figure 4: the schedule relative to its initial rate over one budget.

    Returns:
      The Figure, or None when tf_sgd_regimes.schedules (or its schedule_values) is missing.
    """
    try:
        from tf_sgd_regimes.schedules import schedule_values
    except ImportError:
        return None
    values = np.asarray(schedule_values(1.0, int(total_steps), float(decay_factor),
                                        int(warmup_steps)), dtype=float)
    with plt.rc_context(RC):
        figure, axis = plt.subplots(figsize=(4.5, 3.0))
        axis.plot(np.arange(len(values)) / len(values), values, color="black")
        axis.set_yscale("log", base=2)
        axis.set_xlabel("fraction of the training budget")
        axis.set_ylabel("learning rate / initial learning rate")
        axis.set_title(f"schedule (decay factor {decay_factor:g})")
    return figure


def noise_scale_figure(noise: pd.DataFrame, breakpoints: Dict[str, dict], title: str = ""):
    """Gradient noise scale B_simple vs batch size: at init (dashed) and mid-training at each
    batch size's optimal LR (markers), beside the measured breakpoint B* (dotted)."""
    with plt.rc_context(RC):
        figure, axis = plt.subplots(figsize=(4.5, 3.4))
        for optimizer, rows in _by_optimizer(noise):
            style = _style(optimizer)
            rows = rows.sort_values("batch_size")
            mid = rows.dropna(subset=["b_simple_mid"])
            axis.plot(mid["batch_size"], mid["b_simple_mid"],
                      **dict(style, label=f"{style['label']} B_simple mid-training"))
            init = rows["b_simple_init"].dropna()
            if len(init):
                axis.axhline(float(init.iloc[0]), color=style["color"], linestyle="--",
                             linewidth=0.8, label=f"{style['label']} B_simple at init")
            fit = breakpoints.get(optimizer) or {}
            if "breakpoint" in fit:
                axis.axvline(fit["breakpoint"], color=style["color"], linestyle=":",
                             label=f"{style['label']} B* = {fit['breakpoint']:.3g}")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("batch size of the run")
        axis.set_ylabel("B_simple = tr(Σ) / |G|²")
        axis.set_title(title)
        axis.legend(fontsize=7)
    return figure
