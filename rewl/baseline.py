"""SGD/Adam baselines: many independent trainings of the task's network, batched over runs.

Every run has its own initial weights and its own minibatch sequence; the runs share one batched
forward (the samplers' machinery), and summing their losses gives each run its own gradient,
because a run's loss depends only on its own row of parameters. Along each trajectory the CVs of
the landscape (x = ln L_train, y) are recorded, so the analysis can bin them on the same grid.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from . import __version__
from .config import Config
from .storage import BaselineRecord
from .tasks import TaskFactory, make_task


def train_baselines(cfg: Config, runs: int | None = None, device: torch.device | None = None,
                    custom_task: TaskFactory | None = None) -> BaselineRecord:
    """Train `runs` networks (default [baseline] runs) of the deck's task (or `custom_task`'s) and
    record their trajectories."""
    b = cfg.baseline
    runs = runs or b.runs
    device = device or torch.device("cpu")
    task = make_task(cfg, device, custom_task)
    t0 = time.perf_counter()
    params = task.initial_weights(runs, b.seed).requires_grad_(True)
    optimizer = (torch.optim.SGD if b.optimizer == "sgd" else torch.optim.Adam)([params], lr=b.learning_rate)
    gen = torch.Generator(device=device).manual_seed(b.seed + 1)
    n_points = task.train_point_losses(params[:1].detach()).shape[1]
    batch = b.batch_size or n_points
    steps, xs, ys, accs = [], [], [], []

    def record(step: int) -> None:
        with torch.no_grad():
            x, y = task.cvs(params.detach())
            acc = task.hard_test_accuracy(params.detach(), y)
        steps.append(step)
        xs.append(x.double().cpu().numpy())
        ys.append(y.double().cpu().numpy())
        accs.append(np.full(runs, np.nan) if acc is None else acc.double().cpu().numpy())

    record(0)
    for step in range(1, b.steps + 1):
        if batch < n_points:
            # an independent minibatch for every run: the first `batch` of a random order
            order = torch.rand(runs, n_points, generator=gen, device=device).argsort(dim=1)
            mask = torch.zeros(runs, n_points, device=device, dtype=task.dtype)
            mask.scatter_(1, order[:, :batch], 1.0)
        else:
            mask = torch.ones(runs, n_points, device=device, dtype=task.dtype)
        loss = (task.train_point_losses(params) * mask).sum() / batch
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % b.record_interval == 0 or step == b.steps:
            record(step)
    return BaselineRecord(
        deck_text=cfg.text, deck_path=cfg.path, task=task.name, optimizer=b.optimizer,
        learning_rate=b.learning_rate, batch_size=batch, x_label=task.x_label, y_label=task.y_label,
        step=np.array(steps, dtype=np.int64), x=np.stack(xs, axis=1), y=np.stack(ys, axis=1),
        accuracy=np.stack(accs, axis=1),
        elapsed_seconds=time.perf_counter() - t0, rewl_version=__version__)
