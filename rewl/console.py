"""The ``rewl`` command (and ``python -m rewl``): stop handlers first, then the command line.

Standard library only at import: ``rewl run`` must install its signal handlers before torch is
imported (rewl/stop.py), so the console script's entry point lives here, not in rewl/cli.py.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable


def main() -> None:
    """Entry point of the ``rewl`` console script; exits with the command's code."""
    if sys.argv[1:2] == ["run"]:
        from .stop import install_handlers
        install_handlers()
    from .cli import main as cli_main
    exit_with(cli_main)


def exit_with(command: Callable[[], int]) -> None:
    """Exit with `command`'s code; output piped into `head` and the like stops it quietly, as Unix
    tools do."""
    try:
        sys.exit(command())
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
