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
    """Tracks work in cell_work units, which predicts time better than counting cells.

    Work restored from a checkpoint counts as done but not as work of this session, so
    the rate (and the ETA) is measured only on what this process trained.
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
        self.resumed_work = 0.0  # restored from checkpoints: done, but not by this session

    def elapsed(self) -> float:
        return self.clock() - self.start

    def eta(self) -> float:
        """Seconds until the sweep ends, at this session's rate."""
        done = self.work_done + self._pack_done
        session = done - self.resumed_work
        if session <= 0:
            return float("nan")
        return self.elapsed() / session * max(self.total_work - done, 0.0)

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
        self.pack_label = label
        self._pack_work = max(float(pack_work), 1.0)
        self._pack_done = 0.0
        self._pack_resumed = 0.0
        self._pack_start = self.clock()

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

    def end_pack(self, cells: int, diverged: int, pack_work: float, failed: int = 0) -> None:
        self.done_cells += cells
        self.diverged += diverged
        self.failed += failed
        self.work_done += float(pack_work)
        self.pack_label = ""
        self._pack_done = self._pack_resumed = 0.0
        self._print(self.line())

    def skip_cells(self, cells: int) -> None:
        """Cells found finished (by another worker) while the sweep ran."""
        self.done_cells += cells

    def _print(self, text: str) -> None:
        self._last_print = self.clock()
        print(text, file=self.stream, flush=True)
