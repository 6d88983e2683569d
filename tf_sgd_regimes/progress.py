"""Progress of a sweep: cells done / total, diverged, elapsed and ETA.

Plain lines (no carriage returns or cursor tricks) so the same output reads well in a
terminal, a log file and a notebook cell.
"""

import sys
import time
from typing import Optional, TextIO


def format_seconds(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Tracks work as member-steps (members x steps), which predicts time better than cells."""

    def __init__(self, total_cells: int, total_work: float, done_cells: int = 0,
                 stream: Optional[TextIO] = None, min_interval_s: float = 5.0):
        self.total_cells = total_cells
        self.total_work = max(total_work, 1.0)
        self.done_cells = done_cells
        self.skipped_cells = done_cells
        self.diverged = 0
        self.work_done = 0.0
        self.stream = stream or sys.stdout
        self.min_interval_s = min_interval_s
        self.start = time.perf_counter()
        self._last_print = 0.0
        self._pack_work_done = 0.0
        self.pack_label = ""

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def eta(self) -> float:
        done = self.work_done + self._pack_work_done
        if done <= 0:
            return float("nan")
        remaining = max(self.total_work - done, 0.0)
        return self.elapsed() / done * remaining

    def line(self, extra: str = "") -> str:
        percent = 100.0 * (self.work_done + self._pack_work_done) / self.total_work
        return (f"[sweep] cells {self.done_cells}/{self.total_cells} "
                f"diverged {self.diverged}  {percent:5.1f}% of work  "
                f"elapsed {format_seconds(self.elapsed())}  ETA {format_seconds(self.eta())}"
                f"{'  ' + self.pack_label if self.pack_label else ''}{'  ' + extra if extra else ''}")

    def start_pack(self, label: str) -> None:
        self.pack_label = label
        self._pack_work_done = 0.0

    def pack_step(self, member_steps: float, extra: str = "") -> None:
        """Called after every chunk; prints at most every `min_interval_s` seconds."""
        self._pack_work_done = member_steps
        now = time.perf_counter()
        if now - self._last_print >= self.min_interval_s:
            self._print(self.line(extra))

    def end_pack(self, cells: int, diverged: int, pack_work: float) -> None:
        self.done_cells += cells
        self.diverged += diverged
        self.work_done += pack_work
        self._pack_work_done = 0.0
        self._print(self.line())

    def _print(self, text: str) -> None:
        self._last_print = time.perf_counter()
        print(text, file=self.stream, flush=True)
