"""rewl: replica-exchange Wang-Landau sampling of neural-network entropy landscapes.

``rewl.ModuleTask`` (any ``nn.Module`` and its data), ``rewl.Task`` (a task written by hand) and
``rewl.run`` are the Python entry point for your own network and data (``rewl/api.py``). They
load lazily: ``rewl run`` must install its stop handlers before torch is imported.
"""
__version__ = "0.1.0"
__all__ = ["ModuleTask", "Task", "TaskError", "run"]


def __getattr__(name: str):
    if name in ("ModuleTask", "Task", "TaskError"):
        from . import tasks
        return getattr(tasks, name)
    if name == "run":
        from .api import run
        return run
    raise AttributeError(f"module 'rewl' has no attribute {name!r}")
