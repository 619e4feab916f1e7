"""The registry of task kinds: the deck's `[task] kind` -> its class, and `check`'s description
of a deck whose data is not in place."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import GRADIENT_SAMPLERS, Config
from ..models import FNN, ResNet10, SmallCNN, n_params
from .base import Task, TaskError, TaskFactory, validate_task
from .box import BoxQuadraticTask
from .images import Cifar10Task, MnistTask, network_summary
from .spiral import SpiralRegressionTask, SpiralTask
from .tabular import FeaturesTask, HousePricesTask

# `[task] kind` -> the class built from the deck (config.TASKS also lists "custom", built from Python)
KINDS: dict[str, Callable[[Config, torch.device], Task]] = {
    "spiral": SpiralTask, "spiral_regression": SpiralRegressionTask, "mnist": MnistTask, "cifar10": Cifar10Task,
    "features": FeaturesTask, "house_prices": HousePricesTask, "box_quadratic": BoxQuadraticTask,
}


def make_task(cfg: Config, device: torch.device, custom: TaskFactory | None = None) -> Task:
    """The deck's task on `device`; for ``kind = "custom"`` the user's factory builds it (and is
    checked against the contract)."""
    if cfg.task.kind == "custom":
        if custom is None:
            raise TaskError(f"{cfg.path}: [task] kind = \"custom\" is run from Python: rewl.run(deck, task=MyTask)")
        task = custom(device)
        # y differentiable only where a gradient sampler pushes along it (y flattened)
        validate_task(task, device, md=cfg.sampler.kind in GRADIENT_SAMPLERS and not cfg.grid.y_recorded)
        return task
    if custom is not None:
        raise TaskError(f"{cfg.path}: a task was given from Python, but the deck's [task] kind is {cfg.task.kind!r}; "
                        "set kind = \"custom\"")
    return KINDS[cfg.task.kind](cfg, device)


def describe_unbuilt(cfg: Config, problem: str) -> tuple[str, int]:
    """The deck's network and the reason its task could not be built (for `check` without data),
    and the network's parameter count."""
    m = cfg.model
    if cfg.task.kind == "mnist":
        module = SmallCNN(2, m.activation)
        net = network_summary("mnist", module)
    elif cfg.task.kind == "cifar10":
        module = ResNet10(activation=m.activation)
        net = network_summary("cifar10", module)
    else:
        module = FNN(cfg.task.features, m.hidden, 1, m.activation)
        net = f"FNN {' -> '.join(map(str, [cfg.task.features, *m.hidden, 1]))} ({n_params(module)} parameters)"
    return f"{cfg.task.kind}: {net}; NOT READY: {problem}", n_params(module)
