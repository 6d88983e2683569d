"""Report tables in the paper's layout: build, compare with the paper, format as text/MD/LaTeX."""

import math
import re
from typing import Optional

import numpy as np
import pandas as pd

from tf_sgd_regimes import reference
from tf_sgd_regimes.report import analysis

OPTIMIZER_NAMES = {"sgd": "SGD", "momentum": "Momentum"}


def is_accuracy(metric: str) -> bool:
    return "acc" in metric.lower()


def display_scale(metric: str, values) -> float:
    """Accuracies stored as fractions are shown in percent, as in the paper."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return 100.0 if is_accuracy(metric) and (finite.size == 0 or finite.max() <= 1.0) else 1.0


def metric_label(metric: str, scale: float = 1.0) -> str:
    label = metric.replace("_", " ")
    return f"{label} (%)" if scale == 100.0 else label


# The engine's "train_loss" is the training objective, data loss + the L2 penalty; when
# there is a penalty it also records the data loss alone as "train_data_loss".
OBJECTIVE, DATA_LOSS = "train_loss", "train_data_loss"


def paper_train_metric(settings: analysis.Settings) -> str:
    """The metric compared with the paper's "final training loss/perplexity" column.

    The paper's tables print the data loss (table 5's 0.0009 on a WRN-28-10 is impossible
    with an L2 term), so a train_loss selection is compared through its data loss.
    """
    return DATA_LOSS if settings.train_metric == OBJECTIVE else settings.train_metric


def _data_loss_stats(rows: pd.DataFrame, statistic: str):
    """train_data_loss statistics; without a recorded penalty the objective is the data
    loss, so cells that lack the field (L2 = 0, or older records) fall back to train_loss."""
    objective = rows.get(f"{OBJECTIVE}_{statistic}", pd.Series(np.nan, index=rows.index))
    if f"{DATA_LOSS}_{statistic}" not in rows:
        return objective.to_numpy()
    data = rows[f"{DATA_LOSS}_{statistic}"]
    return data.where(data.notna(), objective).to_numpy()


def optimizer_table(optimal: pd.DataFrame, settings: analysis.Settings,
                    optimizer: str) -> pd.DataFrame:
    """One optimizer's rows: batch size (and budget), best-k test and train statistics,
    optimal effective LR, its range and edge flag. Numbers are in the records' units.
    With train_metric "train_loss" (the objective, incl. L2) the data loss is added as
    train_data_loss_mean/std."""
    test, train = settings.selection_metric, settings.train_metric
    rows = optimal[optimal["optimizer"] == optimizer].sort_values(["batch_size", "epochs"])
    out = pd.DataFrame({
        "batch_size": rows["batch_size"].astype(int).to_numpy(),
        "epochs": rows["epochs"].to_numpy(),
        "k": rows.get("k", pd.Series(np.nan, index=rows.index)).to_numpy(),
        "n": rows.get("n_runs", pd.Series(np.nan, index=rows.index)).to_numpy(),
        f"{test}_mean": rows.get(f"{test}_mean", np.nan),
        f"{test}_std": rows.get(f"{test}_std", np.nan),
        f"{train}_mean": rows.get(f"{train}_mean", np.nan),
        f"{train}_std": rows.get(f"{train}_std", np.nan),
        "optimal_lr": rows["optimal_lr"].to_numpy(),
        "lr_low": rows["lr_low"].to_numpy(),
        "lr_high": rows["lr_high"].to_numpy(),
        "edge": rows["edge"].fillna("").to_numpy(),
    })
    if train == OBJECTIVE:
        out[f"{DATA_LOSS}_mean"] = _data_loss_stats(rows, "mean")
        out[f"{DATA_LOSS}_std"] = _data_loss_stats(rows, "std")
    return out.reset_index(drop=True)


def add_paper(table: pd.DataFrame, settings: analysis.Settings, optimizer: str):
    """Adds paper_* columns and differences for the rows the paper reports.

    Returns:
      (table, summary): summary states the largest differences, or None without a reference.
    """
    if not settings.paper_reference:
        return table, None
    paper = reference.rows_frame(settings.paper_reference)
    paper = paper[paper["optimizer"] == optimizer]
    if paper.empty:
        return table, None
    test, train = settings.selection_metric, paper_train_metric(settings)
    scale = display_scale(test, table[f"{test}_mean"])  # paper accuracies are in percent
    columns = ["batch_size", "test_mean", "test_std", "train_mean", "train_std",
               "effective_lr", "lr_low", "lr_high", "effective_lr_text"]
    merged = table.merge(paper[columns].rename(columns={
        c: f"paper_{c}" for c in columns if c != "batch_size"}), on="batch_size", how="left")
    merged["test_difference"] = merged[f"{test}_mean"] * scale - merged["paper_test_mean"]
    merged["train_difference"] = merged[f"{train}_mean"] - merged["paper_train_mean"]
    merged["lr_octaves_difference"] = np.log2(merged["optimal_lr"] / merged["paper_effective_lr"])
    both = merged.dropna(subset=["test_difference"])
    if both.empty:
        return merged, (f"paper {settings.paper_reference}: no batch size in common with "
                        f"this sweep (paper has {sorted(paper['batch_size'])})")
    worst = both.loc[both["test_difference"].abs().idxmax()]
    parts = [f"largest {metric_label(test, scale)} difference vs paper "
             f"{settings.paper_reference}: {worst['test_difference']:+.3g} "
             f"at B={worst['batch_size']}"]
    if both["train_difference"].notna().any():
        worst_train = both.loc[both["train_difference"].abs().idxmax()]
        parts.append(f"{metric_label(train)}: {worst_train['train_difference']:+.3g} at "
                     f"B={worst_train['batch_size']}")
    if both["lr_octaves_difference"].notna().any():
        worst_lr = both.loc[both["lr_octaves_difference"].abs().idxmax()]
        parts.append(f"optimal LR: {worst_lr['lr_octaves_difference']:+.2g} octaves at "
                     f"B={worst_lr['batch_size']}")
    return merged, "; ".join(parts)


# ------------------------------------------------------------------------------ formatting


def format_lr(value: float) -> str:
    """2^-3 for powers of two, 2^0.5 for powers of sqrt(2), else 3 significant digits."""
    if value is None or not np.isfinite(value) or value <= 0:
        return "-"
    exponent = math.log2(value)
    if abs(exponent * 2 - round(exponent * 2)) < 1e-9:
        text = f"{exponent:g}"
        return f"2^{text}"
    return f"{value:.3g}"


def column_decimals(means, stds, scale: float = 1.0) -> int:
    """Decimals for a whole column: one significant digit of its median std, as the paper
    prints (94.4 ± 0.1, 0.349 ± 0.004); three significant digits of the means without stds."""
    stds = np.asarray(stds, dtype=float) * scale
    stds = stds[np.isfinite(stds) & (stds > 0)]
    if stds.size:
        return int(min(6, max(1, -math.floor(math.log10(np.median(stds))))))
    means = np.abs(np.asarray(means, dtype=float) * scale)
    means = means[np.isfinite(means) & (means > 0)]
    if not means.size:
        return 2
    return int(min(6, max(1, 2 - math.floor(math.log10(np.median(means))))))


def format_mean_std(mean: float, std: Optional[float], scale: float = 1.0,
                    decimals: int = 3) -> str:
    """'mean ± std' (the mean alone when std is None or NaN); '-' when there is no mean."""
    if mean is None or not np.isfinite(mean):
        return "-"
    text = f"{mean * scale:.{decimals}f}"
    if std is None or not np.isfinite(std):
        return text
    return f"{text} ± {std * scale:.{decimals}f}"


def _column(means, stds, scale: float = 1.0) -> list:
    decimals = column_decimals(means, stds, scale)
    return [format_mean_std(m, s, scale, decimals) for m, s in zip(means, stds)]


def display_rows(table: pd.DataFrame, settings: analysis.Settings,
                 show_epochs: bool = False) -> pd.DataFrame:
    """The table as strings, with the column headers the paper uses."""
    test, train = settings.selection_metric, settings.train_metric
    scale = display_scale(test, table[f"{test}_mean"]) if len(table) else 1.0
    train_scale = display_scale(train, table[f"{train}_mean"]) if len(table) else 1.0
    out = pd.DataFrame({"batch size": table["batch_size"].astype(str)})
    if show_epochs:
        out["epochs"] = table["epochs"].map(lambda e: f"{e:g}")
    out["k of n"] = [f"{int(k)} of {int(n)}" if np.isfinite(k) and np.isfinite(n) else "-"
                     for k, n in zip(table["k"], table["n"])]
    out[f"optimal {metric_label(test, scale)}"] = _column(
        table[f"{test}_mean"], table[f"{test}_std"], scale)
    if train == OBJECTIVE and f"{DATA_LOSS}_mean" in table:
        # Both: the data loss (what the paper prints) and the objective incl. L2.
        out["final train loss (data)"] = _column(
            table[f"{DATA_LOSS}_mean"], table[f"{DATA_LOSS}_std"])
        out["final train objective (incl. L2)"] = _column(
            table[f"{OBJECTIVE}_mean"], table[f"{OBJECTIVE}_std"])
    else:
        out[f"final {metric_label(train, train_scale)}"] = _column(
            table[f"{train}_mean"], table[f"{train}_std"], train_scale)
    out["optimal effective LR (range)"] = [
        "-" if not np.isfinite(lr) else f"{format_lr(lr)} ({format_lr(lo)} to {format_lr(hi)})"
        for lr, lo, hi in zip(table["optimal_lr"], table["lr_low"], table["lr_high"])]
    out["edge"] = ["" if not e else f"{e} edge" for e in table["edge"]]
    if "paper_test_mean" in table:
        paper_scale = 100.0 if is_accuracy(test) else 1.0
        out[f"paper {metric_label(test, paper_scale)}"] = _column(
            table["paper_test_mean"], table["paper_test_std"])
        out[f"paper {metric_label(train)}"] = _column(
            table["paper_train_mean"], table["paper_train_std"])
        out["paper LR"] = [t if isinstance(t, str) and t else "-"
                           for t in table["paper_effective_lr_text"]]
    return out


def to_text(rows: pd.DataFrame) -> str:
    """Aligned plain-text table for the terminal."""
    columns = list(rows.columns)
    widths = [max([len(c)] + [len(v) for v in rows[c]]) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for _, row in rows.iterrows():
        lines.append("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths)).rstrip())
    return "\n".join(lines)


def to_markdown(rows: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(rows.columns) + " |",
             "|" + "|".join("---" for _ in rows.columns) + "|"]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
              for row in rows.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    text = str(text)
    for plain, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"),
                           ("_", r"\_"), ("#", r"\#")):
        text = text.replace(plain, escaped)
    text = text.replace("±", r"$\pm$")
    return re.sub(r"2\^(-?[\d.]+)", r"$2^{\1}$", text)


def to_latex(rows: pd.DataFrame, caption: Optional[str] = None) -> str:
    """A booktabs tabular (wrapped in a table environment when a caption is given)."""
    body = [r"\begin{tabular}{" + "l" * len(rows.columns) + "}", r"\toprule",
            " & ".join(_latex_escape(c) for c in rows.columns) + r" \\", r"\midrule"]
    body += [" & ".join(_latex_escape(v) for v in row) + r" \\"
             for row in rows.itertuples(index=False)]
    body += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        body = [r"\begin{table}", r"\centering", rf"\caption{{{_latex_escape(caption)}}}"] + body
        body.append(r"\end{table}")
    return "\n".join(body) + "\n"
