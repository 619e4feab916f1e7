"""The Python entry point: run a deck with your own task from a script.

    # my_study.py, launched as: mpiexec -n 4 python my_study.py
    import rewl

    class MyNet(rewl.Task):
        def __init__(self, device): ...      # data, model; self.set_box(name, lo, hi, groups)
        def cvs(self, walkers): ...          # (B, n_params) -> x (B,), y (B,)
        def x_of(self, walkers): ...         # x alone, differentiable

    raise SystemExit(rewl.run("my_deck.toml", task=MyNet))

The deck stays data (``[task] kind = "custom"``, no code named in it); the task class (or any
callable taking the rank's torch device) is given here, on every rank. docs/tasks.md, "Your own task".
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .stop import StopRequest

if TYPE_CHECKING:
    from .tasks import TaskFactory


def run(deck: str | Path, task: TaskFactory, out: str | None = None, resume: bool = False, force: bool = False,
        overrides: tuple[str, ...] = (), stop_file: str | None = None, deadline: float | None = None) -> int:
    """Run (or resume) `deck` with `task` (a ``rewl.Task`` subclass, or a callable device -> Task)
    under MPI, as ``rewl run`` does; returns its exit code (0 done; 2 a set-up problem on any rank:
    deck, task, data, layout, output directory, printed once by rank 0; 1 a failed write or any
    other exception, which aborts the whole job). Call it on every rank."""
    stop = StopRequest(stop_file, deadline)
    from .cli import run_checked
    return run_checked(deck, tuple(overrides), out, resume, force, stop, task)
