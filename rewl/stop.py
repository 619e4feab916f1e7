"""Stop requests: SIGTERM or SIGUSR1, a stop file, or a deadline; the driver checks them at every
synchronisation point and then checkpoints and stops (status "interrupted", resumable).

Standard library only, so ``rewl run`` installs the signal handlers before it imports
anything heavy: a signal that arrives before them kills the process (SLURM was seen to signal one
second after a job started). The file and the deadline cannot come too early: a batch script
touches the file when it is signalled, and computes the deadline from the job's end time.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

_received: list[int] = []


def _handle(signum: int, _frame: object) -> None:
    _received.append(signum)


def install_handlers() -> None:
    """Record SIGTERM and SIGUSR1 instead of dying of them (idempotent)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, _handle)


class StopRequest:
    """Asks the run to stop: a signal received since ``install_handlers``, a stop file that exists,
    or a deadline (Unix time) that has passed."""

    def __init__(self, stop_file: str | None = None, deadline: float | None = None):
        install_handlers()
        self.stop_file = Path(stop_file) if stop_file else None
        self.deadline = deadline

    def reason(self) -> str | None:
        """Why the run should stop now, or None."""
        if _received:
            return f"signal {signal.Signals(_received[0]).name}"
        if self.stop_file is not None and self.stop_file.exists():
            return f"stop file {self.stop_file}"
        if self.deadline is not None and time.time() >= self.deadline:
            return f"deadline {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.deadline))}"
        return None
