"""The errors a user can fix: their message says what is wrong and what to do, so they are
printed as one line, without a traceback. Every other exception is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Base of the errors whose message is the whole story (a deck key, a file, a layout)."""


class StartError(UserError, RuntimeError):
    """A run cannot start: its window cannot be reached, its output directory is taken, a
    resume does not match the run it continues."""


class WriteFailed(UserError, OSError):
    """A checkpoint or run file could not be written (a full disk, a lost filesystem); the
    previous complete checkpoint and the run file it matches are intact."""
