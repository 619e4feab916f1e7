"""The Python entry point: run a deck with your own network and data from a script.

    # my_study.py, launched as: mpiexec -n 4 python my_study.py [run options | check | bench | sgd | scout]
    import torch, rewl

    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    task = rewl.ModuleTask(model, train=(X_train, y_train), test=(X_test, y_test))
    raise SystemExit(rewl.run("my_deck.toml", task=task))

The deck stays data (``[task] kind = "custom"``, no code named in it); the task (a ``ModuleTask``,
a ``rewl.Task`` subclass, or any callable taking the rank's torch device) is given here, on every
rank. The script takes the command line of ``rewl run`` (``--set``, ``--resume``, ``--force``,
``--out``, ``--deadline``, ``--stop-file``), or as its first argument one of the commands that
need the task: ``check``, ``bench``, ``sgd``, ``scout`` (``python my_study.py bench --walkers 256``).
docs/tasks.md, "Your own network".
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tasks import TaskFactory

# the commands a script takes as its first argument (the rest read run files, no task needed)
SCRIPT_COMMANDS = ("run", "check", "status", "bench", "sgd", "scout")


def run(deck: str | Path, task: TaskFactory, out: str | None = None, resume: bool = False, force: bool = False,
        overrides: tuple[str, ...] = (), stop_file: str | None = None, deadline: float | None = None,
        argv: list[str] | None = None) -> int:
    """Run (or resume) `deck` with `task` under MPI, as ``rewl run`` does, or another command of the
    script's command line; returns its exit code (0 done; 2 a set-up problem on any rank: deck,
    task, data, layout, output directory, printed once by rank 0; 1 a failed write or any other
    exception, which aborts the whole job). Call it on every rank.

    `argv` (default ``sys.argv[1:]``): ``[COMMAND] [OPTIONS]`` with COMMAND one of run (the default),
    check, status, bench, sgd, scout and the options of ``rewl COMMAND DECK``; the keyword arguments are
    the run's defaults, added to what the command line gives. A script with arguments of its own
    passes what is left of them (or ``[]``)."""
    from .cli import main, parser
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in SCRIPT_COMMANDS else "run"
    # --help alone lists the commands; anything else without a command is run's
    full = argv if argv in (["-h"], ["--help"]) else [command, *argv]
    if command == "run":
        full += ["--set=" + o for o in overrides]
        full += (["--out", out] if out else []) + (["--resume"] if resume else []) + (["--force"] if force else [])
        full += (["--stop-file", stop_file] if stop_file else []) + (["--deadline", str(deadline)] if deadline else [])
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "my_study.py"
    return main(full, custom_task=task, parser_=parser(prog=f"python {script}", script_deck=str(deck)))
