"""rewl: replica-exchange Wang-Landau sampling of neural-network entropy landscapes.

``rewl.Task`` and ``rewl.run`` are the Python entry point for your own network and data
(``rewl/api.py``). They load lazily: ``rewl run`` must install its stop handlers before
torch is imported.
"""
__version__ = "0.1.0"
__all__ = ["Task", "TaskError", "run"]


def __getattr__(name: str):
    if name in ("Task", "TaskError"):
        from . import tasks
        return getattr(tasks, name)
    if name == "run":
        from .api import run
        return run
    raise AttributeError(f"module 'rewl' has no attribute {name!r}")
