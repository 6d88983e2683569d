"""Statistics over ledger records: best k of n, optimal effective LR and range, regimes.

Conventions (documented here because every table and figure depends on them):
  * A cell group is one (optimizer, batch size, epoch budget, effective LR); its runs are
    the seeds. `failed` runs are missing data (a crash says nothing about the optimizer)
    and are left out; `diverged` runs are data: their selection metric ranks as the worst
    possible value, so a group whose best k contains a diverged run is not eligible to be
    optimal (it sits at or past the stability edge).
  * Best k: the k runs with the best selection metric, k = min(best_k, runs present), ties
    broken by seed. Every other metric is averaged over the SAME k runs.
  * Std is the sample standard deviation (ddof=1) of the k values; 0 when k = 1.
  * Optimum: the eligible learning rate with the best best-k mean; ties go to the smaller
    learning rate. Range: the eligible learning rates whose best-k mean lies within
    `range_rule_std` times the optimum's std of the optimum's mean (reported as lowest to
    highest such rate). Edge flag: the optimum is the smallest or largest learning rate with
    any record (complete or diverged) for that batch size and budget.
  * Regime breakpoint: log2(optimal ε_eff) = c + s·min(log2 B − log2 B*, 0), fitted by least
    squares (B* scanned on a fine grid, c and s in closed form); B* is the batch size where
    the optimal rate stops growing, s the small-batch slope, 2^c the critical learning rate.
    Its confidence interval is a percentile bootstrap that resamples the seeds of every cell
    group, recomputes the optima and refits.
  * Momentum beats SGD at B when (mean_momentum − mean_sgd), signed so that positive is
    better, exceeds `advantage_std` · sqrt(std_momentum² + std_sgd²); the reported batch
    size is the smallest B from which this holds at B and every larger B with both optima.
"""

import dataclasses
from typing import Dict, Iterable, List, Optional

import numpy as np
import pandas as pd

GROUP_KEYS = ("optimizer", "batch_size", "epochs")
_HIGHER_IS_BETTER = ("accuracy", "acc", "top1", "top5", "auc", "f1")
_LOWER_IS_BETTER = ("loss", "perplexity", "mse", "error", "nll")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Analysis settings (config.analysis); see the module docstring for the rules."""

    selection_metric: str = "test_accuracy"
    selection_mode: str = "max"
    best_k: int = 12
    num_seeds: int = 15
    range_rule_std: float = 1.0
    train_metric: str = "train_loss"
    split: str = "test"
    paper_reference: Optional[str] = None
    advantage_std: float = 1.0
    num_bootstrap: int = 200
    ci_level: float = 0.95
    bootstrap_seed: int = 0

    def __post_init__(self):
        if self.selection_mode not in ("max", "min"):
            raise ValueError(
                f"config.analysis.selection_mode is {self.selection_mode!r}; use 'max' or 'min'")
        if int(self.best_k) < 1:
            raise ValueError(f"config.analysis.best_k is {self.best_k}; it must be >= 1")
        if self.split not in ("test", "validation"):
            raise ValueError(
                f"config.analysis.split is {self.split!r}; use 'test' or 'validation'")


def settings_from(analysis) -> Settings:
    """Builds Settings from a dict, a ConfigDict (config.analysis) or None (defaults)."""
    if analysis is None:
        return Settings()
    if isinstance(analysis, Settings):
        return analysis
    data = analysis.to_dict() if hasattr(analysis, "to_dict") else dict(analysis)
    known = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: v for k, v in data.items() if k in known})


def metric_mode(name: str) -> str:
    """'max' or 'min' for a metric name (accuracy up, loss/perplexity/MSE down)."""
    lowered = name.lower()
    if any(token in lowered for token in _LOWER_IS_BETTER):
        return "min"
    if any(token in lowered for token in _HIGHER_IS_BETTER):
        return "max"
    raise ValueError(f"cannot tell whether metric {name!r} is better high or low; "
                     "set config.analysis.selection_mode")


def tidy(records: Iterable[dict]) -> pd.DataFrame:
    """One row per record: cell_id, status, hparams.* and metrics.* as flat columns."""
    rows = []
    for record in records:
        row = {k: v for k, v in record.items() if not isinstance(v, dict)}
        for key, value in (record.get("hparams") or {}).items():
            row[key] = value
        for key, value in (record.get("metrics") or {}).items():
            row[key] = np.nan if value is None else float(value)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        for column in GROUP_KEYS + ("effective_lr", "seed"):
            if column not in frame:
                frame[column] = np.nan
        # Budgets are floats (steps·B/N); an unknown budget groups as 0 rather than vanishing.
        frame["epochs"] = frame["epochs"].astype(float).round(9).fillna(0.0)
    return frame


def _metric_names(frame: pd.DataFrame, records_metrics: Iterable[str]) -> List[str]:
    return [m for m in records_metrics if m in frame.columns]


def cell_stats(records: Iterable[dict], settings: Settings) -> pd.DataFrame:
    """Best-k statistics per cell group.

    Returns:
      One row per (optimizer, batch_size, epochs, effective_lr) with n_runs, n_diverged,
      n_failed, k, eligible, best_seeds and <metric>_mean / <metric>_std for every metric.
    """
    records = list(records)
    frame = tidy(records)
    if frame.empty:
        return pd.DataFrame()
    metrics = sorted({m for r in records for m in (r.get("metrics") or {})})
    if settings.selection_metric not in metrics:
        raise ValueError(f"selection metric {settings.selection_metric!r} "
                         f"(config.analysis.selection_metric) is not in the records' "
                         f"metrics {metrics}")
    metrics = _metric_names(frame, metrics)
    sign = 1.0 if settings.selection_mode == "max" else -1.0
    rows = []
    for key, group in frame.groupby(
        list(GROUP_KEYS) + ["effective_lr"], sort=True, dropna=False
    ):
        usable = group[group["status"] != "failed"].sort_values("seed", kind="stable")
        score = sign * usable[settings.selection_metric].to_numpy(dtype=float)
        # A diverged (or metric-less) run ranks last: it is the worst possible outcome.
        score = np.where(np.isfinite(score) & (usable["status"] != "diverged"), score, -np.inf)
        k = min(int(settings.best_k), len(usable))
        order = np.argsort(-score, kind="stable")[:k]
        best = usable.iloc[order]
        row = dict(zip(list(GROUP_KEYS) + ["effective_lr"], key))
        row.update(n_runs=len(usable), n_diverged=int((usable["status"] == "diverged").sum()),
                   n_failed=len(group) - len(usable), k=k,
                   eligible=bool(k > 0 and np.all(np.isfinite(score[order]))),
                   best_seeds=tuple(int(s) for s in best["seed"]))
        for metric in metrics:
            values = best[metric].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            row[f"{metric}_mean"] = float(finite.mean()) if len(finite) else np.nan
            row[f"{metric}_std"] = float(finite.std(ddof=1)) if len(finite) > 1 else (
                0.0 if len(finite) else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _optimum(cells: pd.DataFrame, metric: str, mode: str, range_rule_std: float) -> dict:
    """Optimal LR, range and edge flag within one (optimizer, B, epochs) slice of cells."""
    cells = cells.sort_values("effective_lr")
    lrs = cells["effective_lr"].to_numpy(dtype=float)
    out = dict(grid_min=lrs.min(), grid_max=lrs.max(), n_lrs=len(lrs))
    eligible = cells[cells["eligible"] & np.isfinite(cells[f"{metric}_mean"])]
    if eligible.empty:
        return dict(out, optimal_lr=np.nan, lr_low=np.nan, lr_high=np.nan, edge=None)
    sign = 1.0 if mode == "max" else -1.0
    means = sign * eligible[f"{metric}_mean"].to_numpy(dtype=float)
    best = int(np.argmax(means))  # first maximum = smallest learning rate on a tie
    row = eligible.iloc[best]
    tolerance = range_rule_std * row[f"{metric}_std"]
    within = eligible[means >= means[best] - tolerance - 1e-12]["effective_lr"]
    optimal_lr = float(row["effective_lr"])
    edge = "low" if optimal_lr == lrs.min() else ("high" if optimal_lr == lrs.max() else None)
    if len(lrs) == 1:
        edge = "only"
    out.update(optimal_lr=optimal_lr, lr_low=float(within.min()), lr_high=float(within.max()),
               edge=edge)
    for column in cells.columns:
        if column.endswith("_mean") or column.endswith("_std") or column in ("k", "n_runs"):
            out[column] = row[column]
    return out


def optima(cells: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Optimal effective LR per (optimizer, batch_size, epochs) for the selection metric,
    with its range, edge flag and the optimum's best-k statistics for every metric."""
    if cells.empty:
        return pd.DataFrame()
    rows = []
    for key, group in cells.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        row = dict(zip(GROUP_KEYS, key))
        row.update(_optimum(group, settings.selection_metric, settings.selection_mode,
                            settings.range_rule_std))
        rows.append(row)
    return pd.DataFrame(rows)


# Metrics counted in whole examples: their resolution is one example of the split.
_COUNTED = ("accuracy", "acc", "top1", "top5", "error_rate")


def metric_resolution(records: Iterable[dict], metric: str) -> float:
    """The smallest difference `metric` can show: one example of the evaluation split for a
    counted metric (accuracy), else 0 (only exact equality is a tie).

    The split's size comes from the records' data fingerprint ("data": {"num_test"}); older
    records without it give it away through their values, which are multiples of 1 / n.
    """
    if not any(token in metric.lower() for token in _COUNTED):
        return 0.0
    records = list(records)
    sizes = {int(r["data"]["num_test"]) for r in records
             if isinstance(r.get("data"), dict) and r["data"].get("num_test")}
    if metric.startswith("train_"):
        sizes = {int(r["data"]["num_train"]) for r in records
                 if isinstance(r.get("data"), dict) and r["data"].get("num_train")}
    if sizes:
        return 1.0 / max(sizes)
    import fractions
    import math

    denominator = 1
    for record in records:
        value = (record.get("metrics") or {}).get(metric)
        if value is None or not np.isfinite(value):
            continue
        fraction = fractions.Fraction(float(value)).limit_denominator(100_000)
        if abs(float(fraction) - float(value)) > 1e-7:
            return 0.0  # not a count: treat as continuous
        denominator = math.lcm(denominator, fraction.denominator)
        if denominator > 100_000:
            return 0.0
    return 1.0 / denominator if denominator > 1 else 0.0


def ties(cells: pd.DataFrame, settings: Settings, resolution: float) -> pd.DataFrame:
    """Slices whose optimum is not unique: other eligible learning rates have a best-k
    mean of the selection metric within `resolution` of the optimum's (metric_resolution).

    The optimum then follows the grid (on an exact tie the smallest rate is taken), not
    the data; the report says so. Returns one row per such slice: GROUP_KEYS, optimal_lr, tied_lrs
    (all tied rates, ascending), n_tied.
    """
    columns = list(GROUP_KEYS) + ["optimal_lr", "tied_lrs", "n_tied"]
    metric = f"{settings.selection_metric}_mean"
    if cells.empty or metric not in cells:
        return pd.DataFrame(columns=columns)
    rows = []
    sign = 1.0 if settings.selection_mode == "max" else -1.0
    for key, group in cells.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        eligible = group[group["eligible"] & np.isfinite(group[metric])]
        eligible = eligible.sort_values("effective_lr")
        if len(eligible) < 2:
            continue
        means = sign * eligible[metric].to_numpy(dtype=float)
        best = means.max()
        # Within the resolution: a difference smaller than one example is not a difference.
        tolerance = (float(resolution) * (1 - 1e-6) if resolution > 0
                     else 1e-12 * max(1.0, abs(best)))
        tied = eligible[means >= best - tolerance]["effective_lr"].to_numpy(dtype=float)
        if len(tied) > 1:
            optimal = float(eligible["effective_lr"].to_numpy(dtype=float)[int(np.argmax(means))])
            rows.append(dict(zip(GROUP_KEYS, key), optimal_lr=optimal,
                             tied_lrs=tuple(float(v) for v in tied), n_tied=len(tied)))
    return pd.DataFrame(rows, columns=columns)


def sweep_kind(records: Iterable[dict]) -> str:
    """'epoch_budget' if some (optimizer, B) was trained for several budgets, else 'batch_size'."""
    frame = tidy(records)
    if frame.empty:
        return "batch_size"
    counts = frame.groupby(["optimizer", "batch_size"])["epochs"].nunique()
    return "epoch_budget" if (counts > 1).any() else "batch_size"


def budget_optima(records: List[dict], settings: Settings) -> pd.DataFrame:
    """Per (optimizer, B, epochs): LR optimal for the test (selection) metric vs for the
    training metric (paper figures 2, 9, 10), each with its own best-k ranking."""
    by_test = optima(cell_stats(records, settings), settings)
    train_settings = dataclasses.replace(settings, selection_metric=settings.train_metric,
                                         selection_mode=metric_mode(settings.train_metric))
    by_train = optima(cell_stats(records, train_settings), train_settings)
    keep = list(GROUP_KEYS)
    test_cols = keep + ["optimal_lr", f"{settings.selection_metric}_mean",
                        f"{settings.selection_metric}_std"]
    train_cols = keep + ["optimal_lr", f"{settings.train_metric}_mean",
                         f"{settings.train_metric}_std"]
    merged = by_test[test_cols].rename(columns={"optimal_lr": "optimal_lr_test"}).merge(
        by_train[train_cols].rename(columns={"optimal_lr": "optimal_lr_train"}),
        on=keep, how="outer", suffixes=("", "_at_train_optimum"))
    return merged.sort_values(keep).reset_index(drop=True)


# ----------------------------------------------------------------------- regime breakpoint


def fit_two_piece(log2_batch, log2_lr, resolution: float = 0.01) -> dict:
    """Least-squares fit of y = c + s·min(x − x*, 0) with x = log2 B, y = log2 ε_eff.

    Returns:
      {"log2_breakpoint", "slope", "log2_critical_lr", "sse"}; x* is scanned over
      {min x} and [second-smallest x, max x] (x* = max x means no plateau was seen;
      x* = min x no growth).
    """
    x = np.asarray(log2_batch, dtype=float)
    y = np.asarray(log2_lr, dtype=float)
    if len(x) < 3 or len(np.unique(x)) < 3:
        raise ValueError(f"a two-piece fit needs optima at >= 3 batch sizes, got {len(x)}")
    # x* is either min x (no growth) or at least the second-smallest x: between the two,
    # one point alone would set the slope as (its offset) / (x* - min x), unbounded.
    second = np.unique(x)[1]
    steps = max(2, int(round((x.max() - second) / resolution)) + 1)
    candidates = np.concatenate([[x.min()], np.linspace(second, x.max(), steps)])
    u = np.minimum(x[None, :] - candidates[:, None], 0.0)
    u_mean = u.mean(axis=1, keepdims=True)
    var = ((u - u_mean) ** 2).sum(axis=1)
    cov = ((u - u_mean) * (y - y.mean())[None, :]).sum(axis=1)
    slope = np.where(var > 1e-12, cov / np.where(var > 1e-12, var, 1.0), 0.0)
    intercept = y.mean() - slope * u_mean[:, 0]
    sse = ((y[None, :] - intercept[:, None] - slope[:, None] * u) ** 2).sum(axis=1)
    best = int(np.argmin(np.round(sse, 10)))  # ties: the smallest breakpoint
    return dict(log2_breakpoint=float(candidates[best]), slope=float(slope[best]),
                log2_critical_lr=float(intercept[best]), sse=float(sse[best]))


def _score_arrays(frame: pd.DataFrame, settings: Settings) -> Dict[tuple, np.ndarray]:
    """Per (B, epochs, lr) group: selection scores, higher better, -inf for diverged runs."""
    sign = 1.0 if settings.selection_mode == "max" else -1.0
    out = {}
    usable = frame[frame["status"] != "failed"]
    for key, group in usable.groupby(
        ["batch_size", "epochs", "effective_lr"], sort=True, dropna=False
    ):
        group = group.sort_values("seed", kind="stable")
        score = sign * group[settings.selection_metric].to_numpy(dtype=float)
        out[key] = np.where(np.isfinite(score) & (group["status"] != "diverged"), score, -np.inf)
    return out


def _bootstrap_optima(scores: Dict[tuple, np.ndarray], best_k: int, reps: int, rng):
    """(batch sizes, lrs per B, optimal log2 lr per rep and B); rep 0 is the original data."""
    batches = sorted({(b, e) for b, e, _ in scores})
    result = np.full((reps + 1, len(batches)), np.nan)
    for j, (b, e) in enumerate(batches):
        lrs = sorted(lr for bb, ee, lr in scores if (bb, ee) == (b, e))
        means = np.empty((reps + 1, len(lrs)))
        for i, lr in enumerate(lrs):
            values = scores[(b, e, lr)]
            n, k = len(values), min(best_k, len(values))
            index = np.vstack([np.arange(n)[None, :], rng.integers(0, n, size=(reps, n))])
            top = -np.sort(-values[index], axis=1, kind="stable")[:, :k]
            means[:, i] = np.where(np.all(np.isfinite(top), axis=1), top.mean(axis=1), -np.inf)
        best = np.argmax(means, axis=1)  # first maximum = smallest lr, as in `optima`
        found = np.isfinite(means[np.arange(reps + 1), best])
        result[found, j] = np.log2(np.asarray(lrs))[best[found]]
    return batches, result


def regime_breakpoint(records: List[dict], settings: Settings, optimizer: str) -> dict:
    """B*, small-batch slope and critical LR for one optimizer, with bootstrap CIs over seeds.

    Returns:
      dict with breakpoint, slope, critical_lr, their *_ci (low, high) tuples, num_points,
      plateau_seen / growth_seen flags, or {"error": reason} when it cannot be fitted.
    """
    frame = tidy(records)
    if frame.empty or optimizer not in set(frame["optimizer"]):
        return {"optimizer": optimizer, "error": "no records"}
    frame = frame[frame["optimizer"] == optimizer]
    rng = np.random.default_rng(settings.bootstrap_seed)
    batches, log2_opt = _bootstrap_optima(_score_arrays(frame, settings), int(settings.best_k),
                                          int(settings.num_bootstrap), rng)
    x = np.log2([b for b, _ in batches])
    fits = []
    for rep in range(log2_opt.shape[0]):
        ok = np.isfinite(log2_opt[rep])
        try:
            fits.append(fit_two_piece(x[ok], log2_opt[rep][ok]))
        except ValueError as e:
            if rep == 0:
                return {"optimizer": optimizer, "error": str(e)}
    point, boot = fits[0], fits[1:]
    alpha = (1.0 - settings.ci_level) / 2.0

    def interval(name):
        values = np.array([f[name] for f in boot]) if boot else np.array([point[name]])
        return tuple(float(v) for v in np.quantile(values, [alpha, 1.0 - alpha]))

    b_ci, lr_ci = interval("log2_breakpoint"), interval("log2_critical_lr")
    ok = np.isfinite(log2_opt[0])
    return dict(optimizer=optimizer, breakpoint=2.0 ** point["log2_breakpoint"],
                breakpoint_ci=(2.0 ** b_ci[0], 2.0 ** b_ci[1]), slope=point["slope"],
                slope_ci=interval("slope"), critical_lr=2.0 ** point["log2_critical_lr"],
                critical_lr_ci=(2.0 ** lr_ci[0], 2.0 ** lr_ci[1]), num_points=int(ok.sum()),
                plateau_seen=point["log2_breakpoint"] < x[ok].max() - 1e-9,
                growth_seen=point["log2_breakpoint"] > x[ok].min() + 1e-9,
                num_bootstrap=len(boot), ci_level=settings.ci_level)


def momentum_advantage(optimal: pd.DataFrame, settings: Settings) -> dict:
    """Where Momentum beats SGD by more than the noise (rule in the module docstring).

    Returns:
      {"per_batch": DataFrame(batch_size, difference, noise, beats), "from_batch_size": B or None}
    """
    metric = settings.selection_metric
    sign = 1.0 if settings.selection_mode == "max" else -1.0
    columns = ["batch_size", f"{metric}_mean", f"{metric}_std"]
    if optimal.empty or not {"sgd", "momentum"} <= set(optimal["optimizer"]):
        return {"per_batch": pd.DataFrame(), "from_batch_size": None}
    sgd = optimal[optimal["optimizer"] == "sgd"][columns]
    mom = optimal[optimal["optimizer"] == "momentum"][columns]
    both = mom.merge(sgd, on="batch_size", suffixes=("_momentum", "_sgd")).dropna()
    both = both.sort_values("batch_size").reset_index(drop=True)
    both["difference"] = sign * (both[f"{metric}_mean_momentum"] - both[f"{metric}_mean_sgd"])
    both["noise"] = settings.advantage_std * np.hypot(both[f"{metric}_std_momentum"],
                                                      both[f"{metric}_std_sgd"])
    both["beats"] = both["difference"] > both["noise"]
    start = None
    for i in range(len(both) - 1, -1, -1):  # walk down from the largest batch size
        if not both["beats"].iloc[i]:
            break
        start = int(both["batch_size"].iloc[i])
    return {"per_batch": both, "from_batch_size": start}
