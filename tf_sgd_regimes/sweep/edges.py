"""Edge-free grids: grow the effective-LR grid until no optimum sits on its edge.

The paper's rule (DESIGN.md): the optimal learning rate must not sit on the edge of the
grid. After a sweep, `plan_extension` finds each (optimizer, batch size, epoch budget) whose
optimum (analysis.optima) is the smallest or largest learning rate tried there, and names
the next learning rate(s) beyond that edge, one geometric step of the grid further out.
A diverged learning rate counts as tried, so an optimum next to a diverged rate is interior.

Scope of the new cells. The sweep's grid is a product (keras-tuner GridSearchOracle over
batch sizes x optimizers x effective LRs x seeds), so a learning rate added to
`config.sweep.effective_lrs` is trained at every (optimizer, batch size), not only where an
edge asked for it. We accept that: the grid only grows, which `compare_for_resume` accepts;
`config.json` stays the single description of every cell in the ledger (resume and
distributed workers see the same grid); and the extra cells are data (they extend every
batch size's LR curve and show the stability edge). The cost is bounded by the caps below
and written to `edges.json`. A per-batch-size grid would need a non-product grid in
grid.py/loop.py.

Settings live under `config.sweep.extend_edges` (all optional; defaults in EdgeSettings):
  enabled             run the extension after the sweep (run.py)
  max_rounds          rounds of extension for a work directory, counted over all calls
  max_added_per_edge  learning rates added beyond the initial grid, per side, per group
  lrs_per_round       learning rates added per edge and round
  step                ratio between neighbours; 0 = the initial grid's own ratio at that edge

`<workdir>/edges.json` records the initial grid, every round (learning rates added, which
groups asked for them and why, cells trained) and the final status: "interior" (no optimum
on an edge), "cap" (edges remain, each at max_added_per_edge), "max_rounds" or "stalled"
(the run function trained no new cell).
"""

import copy
import dataclasses
import datetime
import json
import math
import os
from typing import Callable, Iterable, List, Optional

import numpy as np

from tf_sgd_regimes import atomic
from tf_sgd_regimes.report import analysis

EDGES_FILE = "edges.json"
_REL_TOL = 1e-9  # learning rates this close are the same grid point


@dataclasses.dataclass(frozen=True)
class EdgeSettings:
    """config.sweep.extend_edges; see the module docstring."""

    enabled: bool = False
    max_rounds: int = 4
    max_added_per_edge: int = 4
    lrs_per_round: int = 1
    step: float = 0.0

    def __post_init__(self):
        if int(self.max_rounds) < 0:
            raise ValueError(f"config.sweep.extend_edges.max_rounds is {self.max_rounds}; "
                             "it must be >= 0")
        if int(self.max_added_per_edge) < 0:
            raise ValueError(f"config.sweep.extend_edges.max_added_per_edge is "
                             f"{self.max_added_per_edge}; it must be >= 0")
        if int(self.lrs_per_round) < 1:
            raise ValueError(f"config.sweep.extend_edges.lrs_per_round is "
                             f"{self.lrs_per_round}; it must be >= 1")
        if self.step != 0 and not self.step > 1:
            raise ValueError(f"config.sweep.extend_edges.step is {self.step}; use 0 (the "
                             "grid's own ratio) or a ratio > 1 such as 2 or 1.4142")


def edge_settings(config) -> EdgeSettings:
    """EdgeSettings from config.sweep.extend_edges (ConfigDict or dict); defaults if absent."""
    sweep = _get(config, "sweep")
    fields = _get(sweep, "extend_edges")
    if fields is None:
        return EdgeSettings()
    data = fields.to_dict() if hasattr(fields, "to_dict") else dict(fields)
    known = {f.name for f in dataclasses.fields(EdgeSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"config.sweep.extend_edges has unknown fields {unknown}; "
                         f"known: {sorted(known)}")
    return EdgeSettings(**data)


def _get(tree, key):
    if tree is None:
        return None
    try:
        return tree[key]
    except (KeyError, TypeError, AttributeError):
        return None


def _grid_lrs(config) -> List[float]:
    lrs = _get(_get(config, "sweep"), "effective_lrs")
    if not lrs:
        raise ValueError("config.sweep.effective_lrs is empty; the grid to extend needs at "
                         "least one learning rate")
    return sorted({float(lr) for lr in lrs})


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _REL_TOL * max(abs(a), abs(b))


def _merge(values: Iterable[float], into: Iterable[float]) -> List[float]:
    """Sorted union; a value within _REL_TOL of one already present is not added again."""
    out = sorted(float(v) for v in into)
    for value in values:
        if not any(_same(value, v) for v in out):
            out.append(float(value))
    return sorted(out)


def grid_steps(initial_lrs: List[float], step: float = 0.0) -> dict:
    """The ratio between neighbours at each edge of the initial grid.

    Returns:
      {"low": ratio, "high": ratio}: `step` when it is set, else the grid's own ratio of
      its two lowest (highest) rates; 2 for a grid of one rate.
    """
    if step:
        return {"low": float(step), "high": float(step)}
    lrs = sorted(initial_lrs)
    if len(lrs) < 2:
        return {"low": 2.0, "high": 2.0}
    return {"low": lrs[1] / lrs[0], "high": lrs[-1] / lrs[-2]}


def next_lr(edge_lr: float, ratio: float, side: str, count: int = 1) -> float:
    """The rate `count` geometric steps beyond `edge_lr` on `side` ("low" or "high").

    Computed in log2 and rounded there, so a powers-of-two (or sqrt 2) grid stays exact.
    """
    sign = -1.0 if side == "low" else 1.0
    exponent = round(math.log2(edge_lr) + sign * count * math.log2(ratio), 9)
    return float(2.0 ** exponent)


def plan_extension(records, config, initial_lrs: Optional[Iterable[float]] = None) -> dict:
    """What to add so that every optimum becomes interior (pure: reads nothing else).

    Args:
      records: ledger records of the sweep so far.
      config: the experiment config (analysis settings, sweep.effective_lrs and
        sweep.extend_edges).
      initial_lrs: the grid before any extension (caps count from it); default
        config.sweep.effective_lrs.

    Returns:
      {"edges": [one dict per (optimizer, batch_size, epochs) whose optimum is on an edge
        and that may still grow: side, optimal_lr, edge_lr, grid, added_before, add, reason],
       "capped": [the same for edges at max_added_per_edge, with add = []],
       "new_lrs": learning rates not yet in the grid, "effective_lrs": the grid to run next,
       "steps": grid_steps(...)}.
    """
    records = list(records)
    edge = edge_settings(config)
    initial = sorted({float(lr) for lr in initial_lrs}) if initial_lrs else _grid_lrs(config)
    steps = grid_steps(initial, edge.step)
    grid = _merge((float(r["hparams"]["effective_lr"]) for r in records), _grid_lrs(config))
    plan = {"edges": [], "capped": [], "new_lrs": [], "effective_lrs": grid, "steps": steps}
    if not records:
        return plan
    settings = analysis.settings_from(_get(config, "analysis"))
    if not any(settings.selection_metric in (r.get("metrics") or {}) for r in records):
        return plan  # only failed runs so far: nothing says where the optimum is
    cells = analysis.cell_stats(records, settings)
    if cells.empty:
        return plan
    optimal = analysis.optima(cells, settings)
    keys = list(analysis.GROUP_KEYS)
    wanted = []
    for _, row in optimal.iterrows():
        here = cells
        for key in keys:
            here = here[here[key] == row[key]]
        tried = sorted(float(lr) for lr in here["effective_lr"])
        entry = {"optimizer": str(row["optimizer"]), "batch_size": int(row["batch_size"]),
                 "epochs": float(row["epochs"]), "grid": tried}
        if np.isfinite(row["optimal_lr"]):
            entry["optimal_lr"] = float(row["optimal_lr"])
            sides = {"low": ["low"], "high": ["high"], "only": ["low", "high"]}.get(
                row["edge"], [])
            reason = "optimum {lr:g} on the {side} edge of the learning rates tried"
        elif int(here["n_diverged"].sum()) > 0 and int(here["n_runs"].sum()) == int(
                here["n_diverged"].sum()):
            # Every rate diverged: the stable rates are below the grid.
            entry["optimal_lr"] = None
            sides, reason = ["low"], "every learning rate tried diverged"
        else:
            continue  # only failed runs: a crash says nothing about where the optimum is
        for side in sides:
            edge_lr = tried[0] if side == "low" else tried[-1]
            if side == "low":
                before = sum(lr < initial[0] and not _same(lr, initial[0]) for lr in tried)
            else:
                before = sum(lr > initial[-1] and not _same(lr, initial[-1]) for lr in tried)
            room = int(edge.max_added_per_edge) - before
            item = dict(entry, side=side, edge_lr=edge_lr, added_before=before,
                        reason=reason.format(lr=entry["optimal_lr"] or 0.0, side=side))
            if room <= 0:
                item.update(add=[], reason=item["reason"] + f"; cap reached ({before} added "
                            "beyond the initial grid, max_added_per_edge "
                            f"{edge.max_added_per_edge})")
                plan["capped"].append(item)
                continue
            count = min(int(edge.lrs_per_round), room)
            item["add"] = [next_lr(edge_lr, steps[side], side, j) for j in range(1, count + 1)]
            plan["edges"].append(item)
            wanted.extend(item["add"])
    plan["effective_lrs"] = _merge(wanted, grid)
    plan["new_lrs"] = [lr for lr in plan["effective_lrs"] if not any(_same(lr, g) for g in grid)]
    return plan


def with_lrs(config, effective_lrs: Iterable[float]):
    """A copy of `config` whose sweep.effective_lrs is `effective_lrs` (sorted tuple)."""
    out = copy.deepcopy(config)
    out["sweep"]["effective_lrs"] = tuple(sorted(float(lr) for lr in effective_lrs))
    return out


def load(workdir: str) -> Optional[dict]:
    """The work directory's edges.json, or None."""
    path = os.path.join(workdir, EDGES_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} cannot be read ({e}); it records the learning rates the "
                         "edge extension added. Restore it or delete it to start over") from e


def added_lrs(state: Optional[dict]) -> List[float]:
    """Every learning rate an edges.json state says was added, sorted."""
    if not state:
        return []
    return _merge((lr for r in state.get("rounds", []) for lr in r["added_lrs"]), [])


def with_recorded_extensions(config, workdir: str):
    """`config` grown by the learning rates earlier extensions added in `workdir`.

    Call it before building a Sweep on a work directory that was extended, so that a
    re-run or resume sees the grid its config.json holds (a grid may only grow).
    """
    extra = added_lrs(load(workdir))
    if not extra:
        return config
    return with_lrs(config, _merge(extra, _grid_lrs(config)))


def _save(workdir: str, state: dict) -> None:
    atomic.write_atomic(os.path.join(workdir, EDGES_FILE),
                        json.dumps(state, indent=1, sort_keys=True, default=float) + "\n")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def extend_edges(config, workdir: str, run_fn: Callable[[object], List[dict]],
                 max_rounds: Optional[int] = None, records: Optional[List[dict]] = None
                 ) -> List[dict]:
    """Adds learning rates beyond grid edges and runs them until every optimum is interior.

    Args:
      config: the experiment config as the user gave it (its grid is the initial grid the
        first time; later calls take the initial grid from edges.json).
      workdir: the sweep's work directory (edges.json is written there).
      run_fn: runs a config whose grid grew and returns all records of the sweep, e.g.
        `lambda c: sweep.Sweep(c, workdir).run()`.
      max_rounds: cap on rounds for this work directory, over all calls; default
        config.sweep.extend_edges.max_rounds.
      records: the sweep's records so far; default run_fn(config) (a finished sweep
        trains nothing and just returns them).

    Returns:
      All records after the last round. The rounds are in <workdir>/edges.json.
    """
    edge = edge_settings(config)
    cap = int(edge.max_rounds if max_rounds is None else max_rounds)
    state = load(workdir) or {"initial_effective_lrs": _grid_lrs(config), "rounds": [],
                              "created": _now()}
    state.update(settings=dataclasses.asdict(edge), max_rounds=cap,
                 scope="every (optimizer, batch size): the sweep grid is a product")
    initial = state["initial_effective_lrs"]
    current = with_lrs(config, _merge(added_lrs(state), _grid_lrs(config)))
    if records is None:
        records = run_fn(current)
    status = None
    while True:
        plan = plan_extension(records, current, initial_lrs=initial)
        if not plan["edges"]:
            status = "cap" if plan["capped"] else "interior"
            break
        if not plan["new_lrs"]:
            status = "stalled"  # the planned rates are in the grid but were never trained
            break
        if len(state["rounds"]) >= cap:
            status = "max_rounds"
            break
        before = {r["cell_id"] for r in records}
        current = with_lrs(current, plan["effective_lrs"])
        records = list(run_fn(current))
        new_cells = len({r["cell_id"] for r in records} - before)
        state["rounds"].append({
            "round": len(state["rounds"]) + 1, "added_lrs": plan["new_lrs"],
            "effective_lrs": plan["effective_lrs"], "edges": plan["edges"],
            "capped": plan["capped"], "new_cells": new_cells, "finished": _now()})
        _save(workdir, state)
        if new_cells == 0:
            status = "stalled"
            break
    state.update(status=status, final_effective_lrs=plan["effective_lrs"],
                 remaining_edges=plan["edges"] + plan["capped"], finished=_now())
    _save(workdir, state)
    return records
