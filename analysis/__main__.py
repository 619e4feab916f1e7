"""``python -m analysis``: the same as ``rewl analyse``."""
import os
import sys

from .cli import main

try:
    sys.exit(main(prog="python -m analysis"))
except BrokenPipeError:
    # output piped into `head` and the like: stop quietly, as Unix tools do
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)
