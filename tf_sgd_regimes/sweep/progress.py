"""Progress of a sweep: cells done / total, diverged, elapsed and ETA, per pack and overall.

Plain lines (no carriage returns or cursor tricks) so the same output reads well in a
terminal, a log file and a notebook cell.
"""

import sys
import time
from typing import Optional, TextIO

from tf_sgd_regimes.sweep import eta_model

# A step costs a fixed overhead (dispatch, optimizer update) plus a part that grows with
# the batch; 32 examples' worth of overhead keeps B = 4 packs from looking nearly free.
STEP_OVERHEAD_EXAMPLES = 32


# A gap between measured chunks above this many times the pack's mean so far is not priced
# as a cost per step (see Progress.pack_step).
OUTLIER_GAPS = 5.0


def cell_work(steps: int, batch_size: int, overhead: float = STEP_OVERHEAD_EXAMPLES,
              knee: Optional[float] = None) -> float:
    """Relative cost of training one cell: steps x (batch + fixed per-step overhead), x
    (1 + batch / knee) with a knee (engine.WORK_SHAPE: a model's measured shape)."""
    work = float(steps) * (float(batch_size) + overhead)
    return work * (1.0 + batch_size / knee) if knee else work


def format_seconds(seconds: float, tenths_below: float = 0.0) -> str:
    """H:MM:SS or M:SS; M:SS.s below `tenths_below` seconds (the last seconds of an ETA,
    where a whole second is a large part of what is left)."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    if 0 <= seconds < tenths_below:
        return f"0:{seconds:04.1f}"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _eta(elapsed: float, done: float, total: float) -> float:
    if done <= 0:
        return float("nan")
    return elapsed / done * max(total - done, 0.0)


class Progress:
    """Tracks a sweep's time pack by pack, to predict the rest.

    A pack's time splits into parts with different drivers, each measured as it runs:

    - compute: the engine's measured seconds per chunk (ChunkReport.compute_s), which
      grow with the work (cell_work units: steps x batch); an engine that measures none
      (the NQM) gives its training wall time instead;
    - between measured chunks (reports, TensorBoard scalars): a cost per step (a gap
      many times the pack's usual one, such as the probe's trace, is other time);
    - the engine's other time (re-initialising, the noise probe, evaluation);
    - records (ledger, TensorBoard files, oracle), from training's end to the pack's;
    - one-offs, not expected again: a chunk whose call traced or compiled (compute_s
      None) beyond its work, and the session's first pack's engine time (its evaluation
      and probe trace; its start-up).

    The ETA is what is left of the running pack (its measured rate and reports x its
    work left, then its records at their pace so far, or before they start, the last
    pack's evaluation and its own records priced by its cells and steps) plus the
    packs after it, priced by eta_model from this session's finished packs (all of
    them: eta_model.pricing): their compute by batch size, given the `plan` of work
    left per batch size (eta_model.Plan; until two batch sizes are measured, or without
    a plan, the finished packs' seconds per work unit); their one-offs, given the
    engine's prediction of which compile or trace (`one_offs`, eta_model.OneOffs); and
    their reports, engine time and records (eta_model.besides_compute). Until a pack after the session's
    first has finished, the first pack's one-off sets the priors of the later packs'
    one-offs, and its engine time and records those of what they pay besides (while
    it trains, shares of its one-off: eta_model.LATER_BASE_SHARE, and for its own
    evaluation and records LATER_PACK_SHARE). Work restored from a checkpoint
    counts as done but not as work of this session.
    """

    def __init__(self, total_cells: int, total_work: float, done_cells: int = 0,
                 stream: Optional[TextIO] = None, min_interval_s: float = 5.0,
                 clock=time.perf_counter, total_steps: float = 0.0,
                 engine_times_chunks: bool = False, plan: Optional[dict] = None,
                 one_offs: Optional[list] = None):
        self.total_cells = total_cells
        # The engine reports each chunk's compute seconds (ChunkReport.compute_s; the NQM
        # engine does not): until one is measured, the first pack's rate is unknown.
        self._engine_times_chunks = bool(engine_times_chunks)
        self.total_work = max(float(total_work), 1.0)  # work left when the session began
        # Steps of the cells left when the session began, summed over cells (0: not
        # known); a pack's steps drive its chunk reports and their bookkeeping.
        self.total_steps = float(total_steps)
        self._steps_done = 0.0  # cell-steps of finished packs
        self.done_cells = done_cells
        self.skipped_cells = done_cells
        self.diverged = 0
        self.failed = 0
        self.work_done = 0.0  # trained in this session, finished packs
        self.stream = stream or sys.stdout
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.start = clock()
        self._last_print = float("-inf")
        self._printed_tenth = 0  # the tenth of the work the last line showed
        self.pack_label = ""
        self._pack_work = 1.0
        self._pack_done = 0.0
        self._pack_resumed = 0.0
        self._pack_start = self.start
        self._training = False  # the current pack is training (not yet training_done)
        self.train_seconds = 0.0  # spent training finished packs' work
        self.session_cells = 0  # cells recorded by this session
        self.resumed_work = 0.0  # restored from checkpoints: done, but not by this session
        # The running pack's span starts where the previous one ended (so handing a pack
        # out is part of its cost).
        self._pack_origin = self.start
        self._pack_cells = 0  # cells the running pack records (start_pack), 0: unknown
        self._pack_recorded = 0  # cells recorded so far in the running pack
        self._train_end: Optional[float] = None
        self._compute_s = 0.0  # the running pack's measured compute seconds ...
        self._compute_work = 0.0  # ... and the work they trained
        self._reported_work = 0.0  # the running pack's work at its last pack_step
        self._reported_at: Optional[float] = None  # when that was
        # Chunks without a measurement (they traced or compiled) of the running pack:
        # their seconds and work; the seconds beyond the work are a one-off.
        self._untimed_s = self._untimed_work = 0.0
        # Time between measured chunks besides their compute (the caller's report,
        # TensorBoard scalars, the probe): a cost per step of the pack, not per work unit.
        self._gap_s = self._gap_work = 0.0
        self._gaps = 0  # gaps measured in the running pack
        self._events_s = 0.0  # the running pack's gaps beyond the usual (OUTLIER_GAPS)
        self._pack_steps = 0
        self._measured = False  # the engine measures compute (some chunk had compute_s)
        self._last_rate: Optional[float] = None  # compute seconds per unit, last pack
        # (seconds, cells) of the last pack after its last step report (evaluation,
        # records): what the running pack still has to do after training.
        self._last_tail: Optional[tuple] = None
        # Finished packs of this session: their cells, work of this session and seconds
        # of compute, engine, records, per-step gaps; and steps (see end_pack).
        self._packs = []
        # The work left per batch size (None: not given) and the compute measured per
        # batch size, which price the packs to come by their own batch size (eta_model).
        self._plan = eta_model.Plan(plan) if plan else None
        self._batch_rates = eta_model.BatchRates()
        self._pack_batch = 0
        # (batch size, "compile" / "trace" / None) of the packs to come, as the engine
        # predicts them (None: not given, no one-off priced), and the running pack's kind.
        self._one_offs = eta_model.OneOffs(one_offs) if one_offs is not None else None
        self._pack_kind = None

    def elapsed(self) -> float:
        return self.clock() - self.start

    def _rate(self) -> Optional[float]:
        """Compute seconds per work unit of the running pack (None: nothing to go by)."""
        if self._compute_work > 0:
            return self._compute_s / self._compute_work
        trained = self._pack_done - self._pack_resumed
        if self._train_end is not None and trained > 0:  # an engine that measures nothing
            return (self._train_end - self._pack_start) / trained
        if self._last_rate is not None:
            # Nothing measured in this pack yet (its first chunk traced or compiled): its
            # batch size's rate from those measured, else the last pack's. Packs need not
            # come in ascending batch size (grid.spread), and the last pack's rate can be
            # 4x off (the demo's B = 2 pack after B = 128 read up to +74%).
            return self._batch_rate(self._pack_batch) or self._last_rate
        if trained > 0:  # the first pack, before its first measurement: all it took
            return (self.clock() - self._pack_start) / trained
        return None

    def _gap_rate(self) -> float:
        """Seconds between the running pack's measured chunks besides their compute, per
        work unit."""
        return self._gap_s / self._gap_work if self._gap_work > 0 else 0.0

    def _running_pack(self) -> Optional[tuple]:
        """(seconds left, projected whole seconds, work of this session) of the running
        pack, or None before anything tells its cost."""
        if not self.pack_label:
            return None
        rate = self._rate()
        if rate is None:
            return None
        now = self.clock()
        spent = now - self._pack_origin
        # Its chunks still to come cost their compute and, like the chunks so far, the
        # reports between them (the demo's first pack: 114 reports, ~3 ms each).
        compute_left = (rate + self._gap_rate()) * max(self._pack_work - self._pack_done, 0.0)
        if self._train_end is not None and self._pack_recorded > 0:
            # Recording cells: what they took so far, per cell, for the cells still due.
            per_cell = (now - self._train_end) / self._pack_recorded
            other_left = per_cell * max(self._pack_cells - self._pack_recorded, 0)
        else:
            if self._last_tail is not None:
                # The last pack's evaluation (per member) and this pack's records by its
                # cells and steps: the demo's records took 0.3-0.6 s after its B = 1 and
                # 2 packs (7,000-14,000 steps), 0.06-0.1 s after those of 14-449 steps,
                # so the last pack's whole tail priced the next one's 0.3-0.5 s off.
                seconds, cells = self._last_tail
                last = self._packs[-1]
                seconds = max(seconds - last["records"], 0.0)
                if self._pack_cells and cells:
                    seconds *= self._pack_cells / cells
                    per_cell, per_step = eta_model.records_prices(self._packs)
                    seconds += (per_cell + per_step * self._pack_steps) * self._pack_cells
                else:
                    seconds += last["records"]
            else:
                # The session's first pack: its evaluation and records are still to
                # come, priced like a later pack's costs (eta_model.LATER_PACK_SHARE).
                seconds = (eta_model.LATER_PACK_SHARE * self._running_one_off()
                           if self._measured else 0.0)
            if self._train_end is not None and self._reported_at is not None:
                seconds -= now - self._reported_at  # the tail has begun
            other_left = max(seconds, 0.0)
        left = compute_left + other_left
        return left, spent + left, self._pack_work - self._pack_resumed

    def eta(self) -> float:
        """Seconds until the sweep ends (NaN before anything tells): see the class."""
        running = self._running_pack()
        if running is None and not self._packs:
            return float("nan")
        if not self._packs and self._engine_times_chunks and not self._measured:
            # Only chunks that traced or compiled so far: their seconds say nothing of
            # the rate, so "?" rather than the 20 minutes they would project.
            return float("nan")
        eta = running[0] if running is not None else 0.0
        current = self._pack_work if self.pack_label else 0.0
        work_left = max(self.total_work - self.work_done - current, 0.0)
        if not self._packs and not self._measured:
            # An engine that measures nothing (the NQM), first pack: the packs after it
            # cost what it costs per work unit.
            left, seconds, work = running
            return left + (seconds / work * work_left if work > 0 else 0.0)
        window = eta_model.pricing(self._packs)
        if self._measured:
            # A pack whose every chunk traced measured no rate (the digits WRN's first:
            # 28 steps, one chunk): its training time holds the trace, so the packs that
            # were timed, or else the running one, price the rest's compute.
            window = [p for p in window if p["timed"]]
        compute = sum(p["compute"] for p in window)
        work = sum(p["work"] for p in window)
        if work <= 0:  # only the running pack to go by
            rate = self._rate()
            compute, work = (rate, 1.0) if rate is not None else (0.0, 1.0)
        cells_left = max(self.total_cells - self.done_cells
                         - (max(self._pack_cells - self._pack_recorded, 0)
                            if self.pack_label else 0), 0)
        running_steps = self._pack_steps * self._pack_cells if self.pack_label else 0.0
        steps_left = max(self.total_steps - self._steps_done - running_steps, 0.0)
        predicted = self._one_offs is not None and self._measured
        first = None  # no later pack has finished: the prior, from the first's one-off
        if predicted and len(self._packs) <= 1:
            first = self._packs[0]["one_off"] if self._packs else self._running_one_off()
        running_gaps = None  # the running pack's gaps so far, over its steps
        if self._gap_work > 0 and self._pack_steps > 0:
            running_gaps = (self._gap_s, self._gap_work / self._pack_work * self._pack_steps)
        by_batch = self._compute_by_batch()
        eta += ((compute / work * work_left if by_batch is None else by_batch)
                + eta_model.besides_compute(
                    self._packs, cells_left, steps_left, self._pack_cells,
                    by_kind=self._one_offs is not None, first_one_off=first,
                    running_gaps=running_gaps,
                    untimed=self._one_offs is None and not self._measured)
                + self._one_offs_left())
        return eta

    def _compute_by_batch(self) -> Optional[float]:
        """Compute seconds of the packs still to start by batch size (eta_model.Plan),
        the running pack's rate so far included; None: no plan or too few measured."""
        if self._plan is None or not self._measured:
            return None
        running = ((self._pack_batch, self._compute_s, self._compute_work)
                   if self.pack_label else None)
        return self._plan.compute_left(self._batch_rates.points(running))

    def _batch_rate(self, batch_size: int) -> Optional[float]:
        """Compute seconds per work unit at `batch_size` from the finished packs' rates."""
        return self._plan.rate(self._batch_rates.points(), batch_size) if self._plan else None

    def _one_offs_left(self) -> float:
        """Seconds the packs still to start will pay once (eta_model.OneOffs)."""
        if self._one_offs is None or not self._measured:  # the NQM: nothing to scale
            return 0.0
        first = self._packs[0]["one_off"] if self._packs else self._running_one_off()
        running = None
        if self._packs and self.pack_label and self._reported_at is not None:
            running = (self._pack_kind, self._running_one_off())
        return self._one_offs.left(first, running)

    def _running_one_off(self) -> float:
        """The running pack's traced chunks' seconds beyond their work."""
        rate = self._rate() if self.pack_label else None
        return max(self._untimed_s - (rate or 0.0) * self._untimed_work, 0.0)

    def pack_eta(self) -> float:
        if self._engine_times_chunks and self._compute_work <= 0:
            return float("nan")  # only traced chunks in this pack so far (see eta)
        return _eta(self.clock() - self._pack_start, self._pack_done - self._pack_resumed,
                    self._pack_work - self._pack_resumed)

    def line(self, extra: str = "") -> str:
        percent = 100.0 * self._fraction()
        text = (f"[sweep] cells {self.done_cells}/{self.total_cells} "
                f"diverged {self.diverged}"
                + (f" failed {self.failed}" if self.failed else "")
                + f"  {percent:5.1f}% of work  "
                f"elapsed {format_seconds(self.elapsed())}  ETA {format_seconds(self.eta(), 10.0)}")
        if self.pack_label:
            text += (f"  | {self.pack_label} "
                     f"{100.0 * self._pack_done / self._pack_work:5.1f}% "
                     f"ETA {format_seconds(self.pack_eta())}")
        return text + (f"  {extra}" if extra else "")

    def start_pack(self, label: str, pack_work: float = 0.0, cells: int = 0,
                   steps: int = 0, batch_size: int = 0) -> None:
        """The pack's training starts now; it will record `cells` cells (0: unknown) and
        train `steps` steps (0: unknown) at batch size `batch_size` (0: unknown)."""
        self.pack_label = label
        self._pack_work = max(float(pack_work), 1.0)
        self._pack_done = 0.0
        self._pack_resumed = 0.0
        self._pack_start = self.clock()
        self._training = True
        self._pack_cells = int(cells)
        self._pack_steps = int(steps)
        self._pack_batch = int(batch_size)
        if self._plan is not None:
            self._plan.start(batch_size, pack_work)
        self._pack_kind = self._one_offs.start(batch_size) if self._one_offs else None
        self._gap_s = self._gap_work = self._events_s = 0.0
        self._gaps = 0
        self._pack_recorded = 0
        self._train_end = None
        self._compute_s = self._compute_work = self._reported_work = 0.0
        self._reported_at = None
        self._untimed_s = self._untimed_work = 0.0

    def pack_resumed(self, work: float) -> None:
        """The pack restarted from a checkpoint holding `work` of its work."""
        self._pack_done = self._pack_resumed = self._reported_work = float(work)
        self.resumed_work += float(work)
        self._print(self.line("resumed from checkpoint"))

    def pack_step(self, work: float, extra: str = "",
                  compute_s: Optional[float] = None,
                  one_off_s: Optional[float] = None) -> None:
        """`work` done in the current pack so far; `compute_s`: the seconds the engine
        measured for the work since the last call (None: not measured, e.g. it compiled);
        `one_off_s`: the seconds it traced or compiled before that work (ChunkReport).
        Prints at most every `min_interval_s`."""
        now = self.clock()
        if work > self._reported_work:
            since = self._reported_at if self._reported_at is not None else self._pack_start
            if compute_s is not None:
                self._measured = True
                self._compute_s += float(compute_s)
                self._compute_work += float(work) - self._reported_work
                if one_off_s is not None:
                    # Traced apart from the chunk: all before its compute is the pack's
                    # one-off, as a traced chunk's time beyond its work is (below).
                    self._untimed_s += max(now - since - float(compute_s), float(one_off_s))
                elif self._reported_at is not None:  # the first chunk's start is set-up
                    gap = max(now - self._reported_at - float(compute_s), 0.0)
                    if self._gaps >= 3:
                        # A gap many times the usual is an event, not a report (the noise
                        # probe mid-pack: 0.9 s where the first pack traces it, against
                        # ~3 ms a report): the pack's other time, not a cost per step.
                        usual = min(gap, OUTLIER_GAPS * self._gap_s / self._gaps)
                        self._events_s += gap - usual
                        gap = usual
                    self._gap_s += gap
                    self._gap_work += float(work) - self._reported_work
                    self._gaps += 1
            else:
                self._untimed_s += now - since
                self._untimed_work += float(work) - self._reported_work
        self._reported_work = max(self._reported_work, float(work))
        self._reported_at = now
        self._pack_done = float(work)
        if self.clock() - self._last_print >= self.min_interval_s:
            self._print(self.line(extra))
        elif int(10 * self._fraction()) > self._printed_tenth and self.eta() == self.eta():
            # Also a line at each tenth of the work, so a short sweep's first pack shows
            # its ETA (the demo's first pack holds a quarter of the work and 7 s).
            self._print(self.line(extra))

    def training_done(self) -> None:
        """The pack's training ended; what follows (records, files) is bookkeeping."""
        if self._training:
            self.train_seconds += self.clock() - self._pack_start
            self._training = False
            self._train_end = self.clock()
        self._pack_done = self._pack_work

    def cell_done(self, diverged: bool = False, failed: bool = False) -> None:
        """One cell of the pack got its record."""
        self.done_cells += 1
        self.session_cells += 1
        self._pack_recorded += 1
        self.diverged += int(bool(diverged))
        self.failed += int(bool(failed))

    def end_pack(self, cells: int, diverged: int, pack_work: float, failed: int = 0) -> None:
        """The pack is finished. `cells`/`diverged`/`failed` count cells not reported by
        cell_done."""
        self.training_done()
        rate = self._rate()
        now = self.clock()
        self.done_cells += cells
        self.session_cells += cells
        self._pack_recorded += cells
        self.diverged += diverged
        self.failed += failed
        self.work_done += float(pack_work)
        own_work = max(float(pack_work) - self._pack_resumed, 0.0)
        train_end = self._train_end if self._train_end is not None else now
        measured = self._measured and rate is not None and self._reported_at is not None
        pack = eta_model.pack_parts(
            now - self._pack_origin, now - train_end, train_end - self._pack_start,
            own_work, rate if measured else None, (self._untimed_s, self._untimed_work),
            (self._gap_s, self._gap_work) if self.total_steps > 0 and self._pack_steps else None)
        pack.update(cells=self._pack_recorded, kind=self._pack_kind, steps=self._pack_steps
                    * (own_work / self._pack_work if self._pack_work else 0.0),
                    timed=self._compute_work > 0, events=self._events_s)
        if self._one_offs is not None and self._packs:  # the first holds the start-up
            self._one_offs.add(self._pack_kind, pack["one_off"])
        self._packs.append(pack)
        self._steps_done += self._pack_steps * self._pack_recorded
        self._batch_rates.add(self._pack_batch, self._compute_s, self._compute_work)
        if rate is not None:
            self._last_rate = rate
        tail = now - (self._reported_at if self._reported_at is not None else train_end)
        self._last_tail = (max(tail, 0.0), self._pack_recorded)
        self._pack_origin = now
        self.pack_label = ""
        self._pack_done = self._pack_resumed = 0.0
        self._print(self.line())

    def _fraction(self) -> float:
        return min(1.0, (self.work_done + self._pack_done) / self.total_work)

    def _print(self, text: str) -> None:
        self._last_print = self.clock()
        self._printed_tenth = int(10 * self._fraction())
        print(text, file=self.stream, flush=True)
