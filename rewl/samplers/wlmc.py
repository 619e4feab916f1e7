"""Wang-Landau Monte Carlo: batched single-parameter moves with per-group move-size adaptation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..grid import Window
from ..tasks import Task
from ..walkers import Walkers
from ..wl import Estimate, deposit, level_unvisited, wl_accept
from .base import Sampler


@dataclass
class MoveSizes:
    """Per-group move size sigma and acceptance counters: since the last adaptation (counted every
    step; the adaptation reads them) and up to it (folded in at each adaptation, so a step updates
    one pair of counters). All (n_groups,); ``totals`` gives the run's."""

    sigma: torch.Tensor
    attempted_since_adapt: torch.Tensor    # float64
    accepted_since_adapt: torch.Tensor
    attempted_until_adapt: torch.Tensor    # float64
    accepted_until_adapt: torch.Tensor

    @classmethod
    def initial(cls, task: Task, fraction: float) -> MoveSizes:
        z = torch.zeros(task.n_groups, dtype=torch.float64, device=task.lo.device)
        return cls(task.group_half_width * fraction, z.clone(), z.clone(), z.clone(), z.clone())

    def count(self, group: torch.Tensor, accepted: torch.Tensor) -> None:
        """One attempt per walker in its group (B,), accepted (B,) bool."""
        self.attempted_since_adapt.index_add_(0, group, torch.ones(group.shape, dtype=torch.float64, device=group.device))
        self.accepted_since_adapt.index_add_(0, group, accepted.double())

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Attempted and accepted moves per group over the run."""
        return (self.attempted_until_adapt + self.attempted_since_adapt,
                self.accepted_until_adapt + self.accepted_since_adapt)

    def adapt(self, task: Task, target: float) -> None:
        """Scale each group's sigma by acceptance / target (clamped to [0.5, 2]), within
        [1e-6, 2] box half-widths; then restart the counters since adaptation."""
        rate = self.accepted_since_adapt / self.attempted_since_adapt.clamp(min=1.0)
        factor = (rate / target).clamp(0.5, 2.0).to(self.sigma.dtype)
        factor = torch.where(self.attempted_since_adapt > 0, factor, torch.ones_like(factor))
        half = task.group_half_width
        self.sigma = torch.minimum(torch.maximum(self.sigma * factor, 1e-6 * half), 2.0 * half)
        self.attempted_until_adapt += self.attempted_since_adapt
        self.accepted_until_adapt += self.accepted_since_adapt
        self.attempted_since_adapt.zero_()
        self.accepted_since_adapt.zero_()

    def reset_counters(self) -> None:
        for counter in (self.attempted_since_adapt, self.accepted_since_adapt, self.attempted_until_adapt,
                        self.accepted_until_adapt):
            counter.zero_()


def wlmc_step(task: Task, window: Window, walkers: Walkers, est: Estimate, moves: MoveSizes,
              gen: torch.Generator, update: bool = True, home: torch.Tensor | None = None) -> torch.Tensor:
    """One batched Wang-Landau Monte Carlo step: every walker proposes w_i += sigma U(-1, 1) on one
    random parameter i; proposals outside the weight box or the window (or, with `home` (B,), the
    walker's own local x bin) are rejected; the rest are accepted with min(1, g(old) / g(new)).
    Then ln g and the histograms get each walker's bin (unless `update` is False).
    Returns the accepted mask (B,)."""
    params = walkers.params
    batch, device = params.shape[0], params.device
    rows = torch.arange(batch, device=device)
    idx = torch.randint(0, task.n_params, (batch,), generator=gen, device=device)
    shift = torch.rand(batch, generator=gen, device=device, dtype=params.dtype).mul_(2).sub_(1)
    uniform = torch.rand(batch, generator=gen, device=device, dtype=torch.float64)
    group = task.group[idx]
    old = params[rows, idx]
    new = old + moves.sigma[group] * shift
    in_box = (new >= task.lo[idx]) & (new <= task.hi[idx])
    params[rows, idx] = torch.where(in_box, new, old)

    x, y = task.cvs(params)
    x, y = x.double(), y.double()
    ix, iy, inside = window.bin(x, y)
    if home is not None:
        inside = inside & (ix == home)
    accept = wl_accept(est.ln_g, walkers.ix, walkers.iy, ix, iy, inside & in_box, uniform)

    params[rows, idx] = torch.where(accept, params[rows, idx], old)
    walkers.x = torch.where(accept, x, walkers.x)
    walkers.y = torch.where(accept, y, walkers.y)
    walkers.ix = torch.where(accept, ix, walkers.ix)
    walkers.iy = torch.where(accept, iy, walkers.iy)
    moves.count(group, accept)
    if update and not est.converged:
        deposit(est, walkers.ix, walkers.iy)
    return accept


class WLMC(Sampler):
    """Wang-Landau Monte Carlo: one random parameter per walker and step, sizes adapted per
    parameter group (layer) toward ``target_acceptance`` every ``adapt_interval`` steps."""

    kind = "wlmc"
    rate_label = "acc"

    def __init__(self, cfg, task, window, device):
        super().__init__(cfg, task, window, device)
        self.moves = MoveSizes.initial(task, cfg.sigma_initial)

    @property
    def counter_names(self) -> list[str]:
        return list(self.task.group_names)

    def start(self, walkers: Walkers, est: Estimate, gen: torch.Generator, steps: int) -> None:
        home = walkers.ix.clone()
        with torch.no_grad():
            for k in range(steps):
                wlmc_step(self.task, self.window, walkers, est, self.moves, gen, update=False, home=home)
                if (k + 1) % self.cfg.adapt_interval == 0:
                    self.moves.adapt(self.task, self.cfg.target_acceptance)
        self.moves.reset_counters()

    def step(self, walkers: Walkers, est: Estimate, gen: torch.Generator) -> None:
        with torch.no_grad():
            wlmc_step(self.task, self.window, walkers, est, self.moves, gen)

    def at_sync(self, step: int, est: Estimate, walkers: Walkers) -> None:
        """Adapt the move sizes; level the bins no walker has visited yet with their visited
        neighbours (``level_unvisited``; runs begun before schema 4 kept zeros there)."""
        if step % self.cfg.adapt_interval == 0:
            self.moves.adapt(self.task, self.cfg.target_acceptance)
        if est.per_visit and not est.converged:
            level_unvisited(est.ln_g, est.visits)

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.moves.totals()

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self.moves, name).cpu().numpy() for name in _STATE}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        t = {name: torch.as_tensor(state[name], device=self.device) for name in _STATE}
        t["sigma"] = t["sigma"].to(self.task.dtype)
        self.moves = MoveSizes(**t)


_STATE = ("sigma", "attempted_since_adapt", "accepted_since_adapt", "attempted_until_adapt", "accepted_until_adapt")
