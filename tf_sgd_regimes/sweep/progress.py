"""Progress of a sweep: cells done / total, diverged, elapsed and ETA, per pack and overall.

Plain lines (no carriage returns or cursor tricks) so the same output reads well in a
terminal, a log file and a notebook cell.
"""

import sys
import time
from typing import Optional, TextIO

# A step costs a fixed overhead (dispatch, optimizer update) plus a part that grows with
# the batch; 32 examples' worth of overhead keeps B = 4 packs from looking nearly free.
STEP_OVERHEAD_EXAMPLES = 32


def cell_work(steps: int, batch_size: int) -> float:
    """Relative cost of training one cell: steps x (batch + fixed per-step overhead)."""
    return float(steps) * (float(batch_size) + STEP_OVERHEAD_EXAMPLES)


def format_seconds(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _eta(elapsed: float, done: float, total: float) -> float:
    if done <= 0:
        return float("nan")
    return elapsed / done * max(total - done, 0.0)


class Progress:
    """Tracks a sweep's time as training plus per-cell bookkeeping, to predict the rest.

    Time goes to two things with different drivers: training, which grows with the work
    (cell_work units: steps x batch), and bookkeeping (handing cells out, ledger records,
    TensorBoard files, oracle state), which grows with the number of cells. The sweep
    says when a pack's training starts and ends (start_pack / training_done) and when
    each cell is recorded (cell_done); the ETA is

        training seconds per work unit x work left + other seconds per cell x cells left,

    both rates measured over the recent half of this session's cells (so a machine
    that speeds up or slows down, or a slow first pack, moves the ETA). With a free
    engine (the NQM) the second term is all there is; on a TPU the first dominates. Work
    restored from a checkpoint counts as done but not as work of this session.
    """

    def __init__(self, total_cells: int, total_work: float, done_cells: int = 0,
                 stream: Optional[TextIO] = None, min_interval_s: float = 5.0,
                 clock=time.perf_counter):
        self.total_cells = total_cells
        self.total_work = max(float(total_work), 1.0)  # work left when the session began
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
        self.pack_label = ""
        self._pack_work = 1.0
        self._pack_done = 0.0
        self._pack_resumed = 0.0
        self._pack_start = self.start
        self._training = False  # the current pack is training (not yet training_done)
        self.train_seconds = 0.0  # spent training finished packs' work
        self.session_cells = 0  # cells recorded by this session
        self.resumed_work = 0.0  # restored from checkpoints: done, but not by this session
        # (session cells, elapsed, train seconds, session work) at the start and at the
        # end of each pack: the window of the rates starts at one of these.
        self._marks = [(0, 0.0, 0.0, 0.0)]
        self._window = 0  # index of the mark the rates are measured from

    def elapsed(self) -> float:
        return self.clock() - self.start

    def _train_seconds(self) -> float:
        return self.train_seconds + (self.clock() - self._pack_start if self._training else 0.0)

    def eta(self) -> float:
        """Seconds until the sweep ends: training rate x work left + per-cell cost x cells
        left, the rates over the recent half of the session's cells."""
        done = self.work_done + self._pack_done
        session_work = done - self.resumed_work
        cells_left = max(self.total_cells - self.done_cells, 0)
        if session_work <= 0 and self.session_cells == 0:
            return float("nan")
        cells0, elapsed0, train0, work0 = self._marks[self._window]
        cells = self.session_cells - cells0
        if cells <= 0:  # nothing recorded since the window's start: the whole session
            cells0, elapsed0, train0, work0 = self._marks[0]
            cells = self.session_cells
        train = self._train_seconds() - train0
        other = max(self.elapsed() - elapsed0 - train, 0.0)
        work = session_work - work0
        work_left = max(self.total_work - done, 0.0)
        eta = train / work * work_left if work > 0 else 0.0
        if cells > 0:
            eta += other / cells * cells_left
        return eta

    def _mark(self) -> None:
        """Remembers where a pack started or ended; moves the window to the latest mark
        that leaves at least half of the session's cells inside it."""
        self._marks.append((self.session_cells, self.elapsed(), self._train_seconds(),
                            self.work_done + self._pack_done - self.resumed_work))
        half = self.session_cells / 2.0
        while (self._window + 1 < len(self._marks)
               and self._marks[self._window + 1][0] <= half):
            self._window += 1

    def pack_eta(self) -> float:
        return _eta(self.clock() - self._pack_start, self._pack_done - self._pack_resumed,
                    self._pack_work - self._pack_resumed)

    def line(self, extra: str = "") -> str:
        percent = 100.0 * min(1.0, (self.work_done + self._pack_done) / self.total_work)
        text = (f"[sweep] cells {self.done_cells}/{self.total_cells} "
                f"diverged {self.diverged}"
                + (f" failed {self.failed}" if self.failed else "")
                + f"  {percent:5.1f}% of work  "
                f"elapsed {format_seconds(self.elapsed())}  ETA {format_seconds(self.eta())}")
        if self.pack_label:
            text += (f"  | {self.pack_label} "
                     f"{100.0 * self._pack_done / self._pack_work:5.1f}% "
                     f"ETA {format_seconds(self.pack_eta())}")
        return text + (f"  {extra}" if extra else "")

    def start_pack(self, label: str, pack_work: float = 0.0) -> None:
        """The pack's training starts now."""
        self.pack_label = label
        self._pack_work = max(float(pack_work), 1.0)
        self._pack_done = 0.0
        self._pack_resumed = 0.0
        self._pack_start = self.clock()
        self._training = True
        self._mark()

    def pack_resumed(self, work: float) -> None:
        """The pack restarted from a checkpoint holding `work` of its work."""
        self._pack_done = self._pack_resumed = float(work)
        self.resumed_work += float(work)
        self._print(self.line("resumed from checkpoint"))

    def pack_step(self, work: float, extra: str = "") -> None:
        """`work` done in the current pack so far; prints at most every `min_interval_s`."""
        self._pack_done = float(work)
        if self.clock() - self._last_print >= self.min_interval_s:
            self._print(self.line(extra))

    def training_done(self) -> None:
        """The pack's training ended; what follows (records, files) is bookkeeping."""
        if self._training:
            self.train_seconds += self.clock() - self._pack_start
            self._training = False
        self._pack_done = self._pack_work

    def cell_done(self, diverged: bool = False, failed: bool = False) -> None:
        """One cell of the pack got its record."""
        self.done_cells += 1
        self.session_cells += 1
        self.diverged += int(bool(diverged))
        self.failed += int(bool(failed))

    def end_pack(self, cells: int, diverged: int, pack_work: float, failed: int = 0) -> None:
        """The pack is finished. `cells`/`diverged`/`failed` count cells not reported by
        cell_done."""
        self.training_done()
        self.done_cells += cells
        self.session_cells += cells
        self.diverged += diverged
        self.failed += failed
        self.work_done += float(pack_work)
        self.pack_label = ""
        self._pack_done = self._pack_resumed = 0.0
        self._mark()
        self._print(self.line())

    def _print(self, text: str) -> None:
        self._last_print = self.clock()
        print(text, file=self.stream, flush=True)
