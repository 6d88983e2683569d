"""The ETA's prices of the packs to come, learnt from the packs this session measured.

Compute: the work model (engine.cell_work) prices a cell's compute by its steps and
batch size, but its curve was fitted on one machine: on another, batches from B = 32 on
cost 2.5-4.3x more per work unit than B = 1 (BENCHMARKS.md, issue 13's ETA section). So
each batch size still to come is priced by what the measured ones cost, interpolated in
log B, and past the largest measured one scaled from it (rate_at). One-offs: the packs
the engine predicts to compile or trace, at what that kind cost so far (OneOffs). The
rest: engine time, records and reports per cell, cell-step and step (besides_compute).
"""

import math
from typing import Dict, List, Optional, Tuple

# The session's first pack's own evaluation and records, priced while it trains, as a
# share of its one-off (its traced first chunk beyond its work: start-up, trace,
# compile). Fitted as what each later pack paid besides compute and reports: on the demo
# (11 packs, two compiling with XLA, two tracing) the ten later packs paid 8.8 and 9.6 s
# for a first one-off of 4.5 and 5.0 s (BENCHMARKS.md, issue 13's ETA section), 0.2
# each; the first pack's evaluation and records measured 0.2 of it on the Intel machine.
LATER_PACK_SHARE = 0.2
# A later pack's one-off by kind (OneOffs), until one of that kind is measured, as a
# share of the first pack's one-off: XLA compiles cost 0.5-0.6 of it on the 2-core AMD
# machine (the first pack compiling too) and 0.55-0.67 on the Intel one (the first
# pack tracing), traces 0.15-0.3 (BENCHMARKS.md, issue 13's ETA section).
ONE_OFF_SHARE = {"compile": 0.6, "trace": 0.2}
# A later pack's engine time and records besides its one-off (re-initialising, probe,
# evaluation, records), while the session's first pack still trains (once it has
# finished, its own: besides_compute), as a share of the first pack's one-off:
# 0.26-1.04 s, mean 0.46 s, against 7.4 s on the Intel machine (0.06); from B = 32 on
# 0.15-0.25 s against 4.5-5 s on the AMD one (0.04; more where the steps are many).
LATER_BASE_SHARE = 0.05


def rate_at(points: List[Tuple[int, float]], batch_size: int,
            step_work: Optional[Dict[int, float]] = None) -> float:
    """Compute seconds per work unit at `batch_size`, from measured (batch size, seconds
    per work unit) `points` (at least one; any order).

    Args:
      step_work: work units of one cell-step per batch size (the plan's); without it,
        past the largest measured batch size the rate is the highest measured.

    Between two measured batch sizes the rate is interpolated as a power of B (a line in
    log B, log rate), as batch sizes double from pack to pack; below the smallest, it is
    the smallest's. Past the largest measured, it is the cheaper of:

    - the highest rate per work unit measured at any batch size: the work model's
      scaling, with a rate that does not fall at larger batches. On the machines
      measured it stayed flat (the one the model was fitted on) or grew with B (this
      2-core AMD one: 1.2-2.3x the B = 1 pack's at B = 4 to 16, 2.5-4.3x from B = 32 on;
      BENCHMARKS.md), while from pack to pack it jitters (B = 8 read 0.66-1.25x B = 4's):
      the largest batch's own rate priced what followed 6 and 12 points lower at 62-70%
      of the demo's work in two of three recordings (the same in the third);
    - the largest's cost per example, the same at any larger B. The work model's steps
      cost less per example as the batch grows (its fixed overhead of 32 examples) and
      past B = 181 more again (engine.WORK_SHAPE, fitted on another machine); where
      a machine's cost per example stays flat, as on this one from B = 32 on, the knee
      alone priced B = 512 and 1024 8-47% high from B = 128 and 256. (Past XLA's packs,
      B <= 4, this bound is loose: the model divides their work by
      engine.XLA_AUTO_SPEEDUP, so their cost per example in work units is high.)

    A line in B through the largest two or three measured (a step's cost: a fixed part
    plus a cost per example) was tried on three recorded demo runs and not kept: through
    XLA's packs it priced the rest 75-127% high, and through other packs, with the
    running pack's first chunks, up to 60% high.
    """
    points = sorted((int(b), float(r)) for b, r in points)
    if not points:
        raise ValueError("no measured batch size to price from")
    for b, rate in points:
        if b == batch_size:
            return rate
    if batch_size < points[0][0]:
        return points[0][1]
    for (b0, r0), (b1, r1) in zip(points, points[1:]):
        if b0 < batch_size < b1:
            if r0 <= 0 or r1 <= 0:
                return r0 + (r1 - r0) * (batch_size - b0) / (b1 - b0)
            t = math.log(batch_size / b0) / math.log(b1 / b0)
            return math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0)))
    largest, rate = points[-1]
    highest = max(r for _, r in points)
    if not step_work or largest not in step_work or batch_size not in step_work:
        return highest
    per_example = rate * step_work[largest] / largest  # seconds per example of a step
    return min(highest, per_example * batch_size / step_work[batch_size])


class BatchRates:
    """Compute seconds and the work units they trained, per batch size, this session."""

    def __init__(self):
        self._sums: Dict[int, List[float]] = {}

    def add(self, batch_size: int, seconds: float, work: float) -> None:
        if batch_size <= 0 or work <= 0:
            return
        row = self._sums.setdefault(int(batch_size), [0.0, 0.0])
        row[0] += float(seconds)
        row[1] += float(work)

    def points(self, running: Optional[Tuple[int, float, float]] = None
               ) -> List[Tuple[int, float]]:
        """(batch size, seconds per work unit), with the running pack's (batch size,
        seconds, work) measured so far added to its batch size's."""
        sums = {b: list(row) for b, row in self._sums.items()}
        if running is not None and running[0] > 0 and running[2] > 0:
            row = sums.setdefault(int(running[0]), [0.0, 0.0])
            row[0] += running[1]
            row[1] += running[2]
        return sorted((b, s / w) for b, (s, w) in sums.items() if w > 0)


class Plan:
    """The work left per batch size: the session's plan (work, cells, cell-steps per
    batch size), less the packs started since."""

    def __init__(self, plan: Dict):
        # Keys may come back from JSON as strings (tools/eta_replay.py).
        rows = {int(b): [float(v) for v in row] for b, row in plan.items()}
        self._work_left = {b: row[0] for b, row in rows.items()}
        # Work units per cell-step of each batch size (rate_at's step_work).
        self.step_work = {b: row[0] / row[2] for b, row in rows.items() if row[2] > 0}

    def start(self, batch_size: int, work: float) -> None:
        if int(batch_size) in self._work_left:
            left = self._work_left[int(batch_size)] - float(work)
            self._work_left[int(batch_size)] = max(left, 0.0)

    def work_left(self) -> Dict[int, float]:
        return {b: work for b, work in self._work_left.items() if work > 0}

    def rate(self, points: List[Tuple[int, float]], batch_size: int) -> Optional[float]:
        """Compute seconds per work unit at `batch_size` by rate_at from the measured
        (batch size, rate) `points`; None without a batch size or two points."""
        if batch_size <= 0 or len(points) < 2:
            return None
        return rate_at(points, batch_size, self.step_work)

    def compute_left(self, points: List[Tuple[int, float]]) -> Optional[float]:
        """Compute seconds of the work left, each batch size at its rate (rate_at); None
        until two batch sizes are measured (the work model at the finished packs' rate
        prices the rest until then)."""
        if len(points) < 2:
            return None
        return sum(rate_at(points, b, self.step_work) * w for b, w in self.work_left().items())


def pack_parts(seconds: float, records: float, trained_s: float, work: float,
               rate: Optional[float], untimed: Tuple[float, float],
               gaps: Optional[Tuple[float, float]]) -> dict:
    """A finished pack's seconds by what drives them (the prices of the packs to come
    read these): compute, one-off, engine time, records, gaps between chunks.

    Args:
      seconds: the pack's whole span; records: from training's end to the pack's end.
      trained_s: its training's seconds; work: its work units of this session.
      rate: its measured compute seconds per work unit (None: nothing measured, all of
        training counts as compute).
      untimed: (seconds, work) of its chunks that traced or compiled: beyond their work
        a one-off (a later pack of the same shape does not trace again).
      gaps: (seconds, work) between its measured chunks besides compute, priced per
        step (None: no steps to price them by; they stay in the engine's time).
    """
    if rate is not None:
        compute, one_off = rate * work, max(untimed[0] - rate * untimed[1], 0.0)
    else:
        compute, one_off = trained_s, 0.0
    engine = max(seconds - compute - one_off - records, 0.0)  # the rest is the engine's
    gap = gaps[0] / gaps[1] * work if gaps is not None and gaps[1] > 0 else 0.0
    return {"work": work, "one_off": one_off, "compute": compute,
            "engine": max(engine - gap, 0.0), "records": records, "gaps": min(gap, engine)}


def pricing(packs: List[dict]) -> List[dict]:
    """The finished `packs` whose costs price the packs to come: all of them, newest first.

    It was the latest holding about half of the finished cells, so that a machine that
    speeds up or slows down would move the ETA. On the 2-core machine this was built on
    its speed moves 20-40% within seconds and comes back: a fixed workload's time left,
    priced by its mean unit so far, missed 20% in 22-30% of simulated 6-60-s sweeps,
    priced by the latest half of its units in 38-59% (BENCHMARKS.md, "The machine's own
    floor under the ETA"). Replayed over 86 recorded sweeps, all packs rather than the
    latest half: worst error over 20% in 25 of them, not 28; mean worst 17.3%, not 17.8%.
    """
    return list(reversed(packs))


def besides_compute(packs: List[dict], cells_left: float, steps_left: float,
                    running_cells: int, by_kind: bool = False,
                    first_one_off: Optional[float] = None,
                    running_gaps: Optional[Tuple[float, float]] = None,
                    untimed: bool = False) -> float:
    """Seconds the packs still to start pay besides compute and one-offs.

    Args:
      packs: the session's finished packs (progress.Progress's records of them: cells,
        steps per cell, seconds of engine time, records and gaps between chunks, kind).
      cells_left, steps_left: the cells and cell-steps of the packs still to start.
      running_cells: the running pack's cells (the pack size before any has finished).
      by_kind: the engine predicted the packs' one-offs (progress.Progress's one_offs):
        engine time from the packs that neither compiled nor traced, records by cells
        and steps (records_prices); else both per cell of the finished packs.
      first_one_off: no pack after the session's first has finished: their engine time
        and records are the first pack's (records at the lower of per cell and per
        step), or while the first still trains, LATER_BASE_SHARE x this each.
      running_gaps: (seconds, pack-steps) between the running pack's chunks, when no
        finished pack tells the cost per step.
      untimed: the engine measures no compute and predicts no one-offs (the NQM): until
        a pack after the first has finished, the first pack's engine time prices the
        rest's, start-up included, rather than nothing.
    """
    window = pricing(packs)
    per_pack = (sum(p["cells"] for p in packs) / len(packs) if packs
                else max(running_cells, 1))
    # The engine's own time (re-initialising, probe, evaluation): the session's first
    # pack also traced its evaluation and probe, so it is left out; a pack that compiled
    # or traced made a new runner, which traced its evaluation too.
    later = [p for p in window if p is not packs[0]] if packs else []
    if untimed and not later:
        # Its first pack's engine time is mostly its hand-out (the 13,530-cell NQM
        # sweep: 0.3-0.4 s, a later pack's 0.12-0.15 s), which prices the later packs'
        # high but less so than nothing: its second pack read -10 to -37% without it,
        # +6 to +27% with it, in four recordings (BENCHMARKS.md, issue 13's ETA section).
        later = window
    plain = ([p for p in later if p["kind"] is None] if by_kind else []) or later
    plain_cells = sum(p["cells"] for p in plain)
    engine = sum(p["engine"] for p in plain) / plain_cells if plain_cells else 0.0
    cells = sum(p["cells"] for p in window)
    per_cell, per_step = (sum(p["records"] for p in window) / cells if cells else 0.0), 0.0
    if by_kind:
        per_cell, per_step = records_prices(packs)
    if first_one_off is not None and packs and packs[0]["cells"] > 0:
        # The first pack has finished: its own engine time and records, per cell. Its
        # runner traced its evaluation with its step, in its one-off (engine._PackRunner
        # .warm), so what is left is a later pack's: the digits CNN's first 0.53 s, its
        # later ones 0.45-0.55 s; the demo's 0.14 s, its later plain ones 0.09-0.17 s.
        # LATER_BASE_SHARE of the first one-off priced the CNN's at 0.17 s, its ETA 18-24%
        # low until its second pack ended (BENCHMARKS.md, issue 13's ETA section). Not
        # its events between chunks (a trace there, as of the noise probe's, is its own).
        first = packs[0]
        engine = max(first["engine"] - first.get("events", 0.0), 0.0) / first["cells"]
        # Its records grow with the cells and the steps (records_prices), which one pack
        # cannot tell apart: the packs left are priced at the lower of all per cell and
        # all per step. The demo's first pack (B = 1024, 14 steps, the fewest) recorded
        # in 0.04-0.09 s, the later ones in 0.06-0.6 s: without records, its ETA read
        # up to 22% low at 10% of the work on a fast run; a first pack of the most steps
        # would price all per cell high.
        records = first["records"] / first["cells"]
        if first["steps"] > 0 and steps_left / first["steps"] < cells_left:
            per_cell, per_step = 0.0, records / first["steps"]
        else:
            per_cell, per_step = records, 0.0
    elif first_one_off is not None:
        engine = LATER_BASE_SHARE * first_one_off / max(per_pack, 1.0)
        per_cell = per_step = 0.0
    seconds = (per_cell + engine) * cells_left + per_step * steps_left
    # Per-step costs (reports between chunks), times the steps of the packs left (their
    # cell-steps over a pack's cells): learnt on the packs after the first, else on the
    # first, else on the running pack.
    stepped, gaps = sum(p["steps"] for p in later), sum(p["gaps"] for p in later)
    if stepped <= 0:
        stepped, gaps = sum(p["steps"] for p in window), sum(p["gaps"] for p in window)
        if running_gaps is not None:
            # With the running pack's: the first pack's steps are few (the demo's
            # B = 1024: 14, one gap of 4 ms), and a gap comes per chunk, not per step,
            # so they alone priced the packs to come at 0.29 ms a step where they paid
            # 0.015 (4 s of the demo's 14 s left at 10% of its work).
            gaps, stepped = gaps + running_gaps[0], stepped + running_gaps[1]
    if stepped > 0:
        seconds += gaps / stepped * steps_left / max(per_pack, 1.0)
    return seconds


def records_prices(packs: List[dict]) -> Tuple[float, float]:
    """(seconds per cell, seconds per cell-step) of the records of finished packs (their
    "cells", "steps" per cell and "records" seconds), by least squares.

    A pack's records (ledger, TensorBoard files, oracle) grow with its steps as well as
    its cells: the demo's B = 1 pack (14,370 steps) took 0.59 s, the packs of 14-449
    steps 0.09-0.13 s, for 78 cells each. Until two step counts tell the parts apart,
    or where the fit is negative, per cell only.
    """
    rows = [(float(p["cells"]), float(p["cells"]) * float(p["steps"]), float(p["records"]))
            for p in packs if p["cells"] > 0]
    cells = sum(c for c, _, _ in rows)
    if not rows:
        return 0.0, 0.0
    flat = sum(r for _, _, r in rows) / cells
    aa = sum(c * c for c, _, _ in rows)
    ab = sum(c * s for c, s, _ in rows)
    bb = sum(s * s for _, s, _ in rows)
    ar = sum(c * r for c, _, r in rows)
    br = sum(s * r for _, s, r in rows)
    det = aa * bb - ab * ab
    if det <= 1e-9 * aa * bb:
        return flat, 0.0
    per_cell, per_step = (ar * bb - br * ab) / det, (aa * br - ab * ar) / det
    if per_cell < 0 or per_step < 0:
        return flat, 0.0
    return per_cell, per_step


class OneOffs:
    """The one-offs of the packs to come, by kind, and those this session measured.

    The engine predicts which packs will compile with XLA or trace their step
    (engine.Engine.one_offs: a new runner, or a shape no trace covers); each such pack
    is priced at the mean one-off measured for its kind in the packs after the session's
    first (its chunks that traced or compiled, beyond their work), and a pack that does
    neither at nothing. Until a kind is measured, at ONE_OFF_SHARE of the first pack's
    one-off, which also holds the session's start-up.
    """

    def __init__(self, predicted: List[Tuple[int, Optional[str]]]):
        # (batch size, kind) of the packs to come, in order (JSON gives lists).
        self._to_come = [(int(b), kind) for b, kind in predicted]
        self._measured: Dict[str, List[float]] = {}

    def start(self, batch_size: int) -> Optional[str]:
        """The kind of the pack starting at `batch_size` (the first one to come there)."""
        for index, (b, kind) in enumerate(self._to_come):
            if b == int(batch_size):
                del self._to_come[index]
                return kind
        return None

    def add(self, kind: Optional[str], seconds: float) -> None:
        """A finished pack after the session's first paid `seconds` of one-off."""
        if kind is not None:
            self._measured.setdefault(kind, []).append(float(seconds))

    def price(self, kind: str, first: float, running: Optional[tuple] = None) -> float:
        """Seconds one pack of `kind` pays; `running`: the running pack's (kind, one-off
        so far), a measurement of its kind once its traced chunks are done."""
        seen = list(self._measured.get(kind, []))
        if running is not None and running[0] == kind:
            seen.append(running[1])
        if seen:
            return sum(seen) / len(seen)
        return ONE_OFF_SHARE.get(kind, 0.0) * first

    def left(self, first: float, running: Optional[tuple] = None) -> float:
        """Seconds of one-offs the packs still to start will pay."""
        return sum(self.price(kind, first, running) for _, kind in self._to_come
                   if kind is not None)
