"""``python -m analysis``: the same as ``rewl analyse``."""
from rewl.console import exit_with

from .cli import main

exit_with(lambda: main(prog="python -m analysis"))
