"""SIGTERM (a preemption notice) as a flag the training loop polls, and the exit codes."""

import signal
import threading
from typing import Optional

# Exit statuses of `python -m tf_sgd_regimes.run` beyond 0 (done) and 2 (bad input).
EXIT_DISK_FULL = 74  # sysexits EX_IOERR: free space, then re-run the same command
EXIT_PREEMPTED = 75  # sysexits EX_TEMPFAIL: checkpoint saved, re-run to resume


class StopRequest:
    """Context manager: while active, SIGTERM sets `requested` instead of killing us.

    The sweep polls `requested` after every chunk of steps (engine `should_stop`), saves
    the running pack's checkpoint and stops. A second SIGTERM is honoured at once with
    the previous handler, for a user who really means it. Outside the main thread
    (where Python cannot install handlers) it does nothing but can still be set by hand.
    """

    def __init__(self, signals=(signal.SIGTERM,)):
        self.signals = tuple(signals)
        self.requested = False
        self.signal_number: Optional[int] = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested:  # second notice: do what would have happened without us
            previous = self._previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, previous)
            signal.raise_signal(signum)
            return
        self.requested = True
        self.signal_number = signum

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
