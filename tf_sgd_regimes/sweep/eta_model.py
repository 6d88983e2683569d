"""The ETA's price of compute per batch size, learnt from the packs this session measured.

The work model (engine.cell_work) prices a cell's compute by its steps and batch size, but
its curve was fitted on one machine: on another, batches from B = 32 on cost 2.5-4.3x
more per work unit than B = 1 (BENCHMARKS.md, issue 13's ETA section). So each batch
size still to come is priced by what the measured ones cost, interpolated in log B, and
past the largest measured one scaled from it.
"""

import math
from typing import Dict, List, Optional, Tuple

# What a pack after the session's first pays besides compute and reports (re-initialising,
# compiling or tracing its step, evaluation, records), as a share of the first pack's
# one-off (its traced first chunk beyond its work: start-up, trace, compile), used until
# such a pack has finished. On the demo (11 packs, two of them compiling with XLA, two
# tracing) the ten later packs paid 8.8 and 9.6 s for a first one-off of 4.5 and 5.0 s
# (BENCHMARKS.md, issue 13's ETA section): about 0.2 each.
LATER_PACK_SHARE = 0.2


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
      past B = 181 more again (engine.WORK_KNEE_BATCH, fitted on another machine); where
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


def later_packs_budget(packs: List[dict], running_one_off: Optional[float],
                       packs_to_come: float) -> float:
    """What the packs still to start will pay besides compute and reports, by the prior:
    each pack after the session's first pays LATER_PACK_SHARE x the first pack's one-off,
    on average (a compile at one, little at another), so what the finished later packs
    and the running one paid beyond their share comes off.

    Args:
      packs: the session's finished packs (progress.Progress's records of them).
      running_one_off: the running pack's traced chunks' seconds beyond their work
        (None: no pack runs).
      packs_to_come: how many packs are still to start.
    """
    first = packs[0]["one_off"] if packs else (running_one_off or 0.0)
    share = LATER_PACK_SHARE * first
    costs = [p["engine"] + p["records"] + p["one_off"] for p in packs[1:]]
    if costs and costs[-1] < share:
        # The last pack paid less than its share: the packs that compile or trace are
        # behind (the demo's from B = 32 on), so the measured costs price the rest; the
        # share left unspent would otherwise pile onto the last packs.
        return 0.0
    # Only what was paid beyond the share comes off: a cheap pack earlier on does not
    # leave its unspent share to the packs after it.
    paid = sum(max(cost - share, 0.0) for cost in costs)
    if packs and running_one_off is not None:  # a later pack runs: its compile so far
        paid += max(running_one_off - share, 0.0)
    return max(share * packs_to_come - paid, 0.0)
