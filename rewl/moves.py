"""Moves of a batch of walkers: batched WLMC single-parameter moves, move-size adaptation, and
the gradient drive that brings fresh walkers into their window. Pure tensor code, no MPI.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .grid import Grid
from .tasks import Task
from .wl import Estimate, bin_cvs, deposit, wl_accept


@dataclass
class Walkers:
    """A rank's batch of walkers and their current CVs and bins."""

    params: torch.Tensor   # (B, n_params)
    x: torch.Tensor        # (B,) float64
    y: torch.Tensor        # (B,) float64
    ix: torch.Tensor       # (B,) long, local x bin in the window
    iy: torch.Tensor       # (B,) long

    @classmethod
    def at(cls, task: Task, params: torch.Tensor, grid: Grid, x_lo: int, n_xw: int) -> tuple["Walkers", torch.Tensor]:
        """Walkers at `params` with CVs evaluated; also returns which are inside the window (B,)."""
        with torch.no_grad():
            x, y = task.cvs(params)
        x, y = x.double(), y.double()
        ix, iy, inside = bin_cvs(grid, x, y, x_lo, n_xw)
        return cls(params, x, y, ix, iy), inside


@dataclass
class MoveSizes:
    """Per-group move size sigma, acceptance counters since the last adaptation, and run totals
    of the counters before it."""

    sigma: torch.Tensor            # (n_groups,)
    attempted: torch.Tensor        # (n_groups,) float64, since the last adaptation
    accepted: torch.Tensor
    total_attempted: torch.Tensor  # (n_groups,) float64, up to the last adaptation
    total_accepted: torch.Tensor

    @classmethod
    def initial(cls, task: Task, fraction: float) -> "MoveSizes":
        z = torch.zeros(task.n_groups, dtype=torch.float64, device=task.lo.device)
        return cls(task.group_half_width * fraction, z.clone(), z.clone(), z.clone(), z.clone())

    def adapt(self, task: Task, target: float) -> None:
        """Scale each group's sigma by acceptance / target (clamped to [0.5, 2]), within
        [1e-6, 2] box half-widths; then fold the counters into the totals."""
        rate = self.accepted / self.attempted.clamp(min=1.0)
        factor = (rate / target).clamp(0.5, 2.0).to(self.sigma.dtype)
        factor = torch.where(self.attempted > 0, factor, torch.ones_like(factor))
        half = task.group_half_width
        self.sigma = torch.minimum(torch.maximum(self.sigma * factor, 1e-6 * half), 2.0 * half)
        self.total_attempted += self.attempted
        self.total_accepted += self.accepted
        self.attempted.zero_()
        self.accepted.zero_()

    def reset_counters(self) -> None:
        for counter in (self.attempted, self.accepted, self.total_attempted, self.total_accepted):
            counter.zero_()

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Attempted and accepted moves per group over the whole run: (n_groups,) each."""
        return self.total_attempted + self.attempted, self.total_accepted + self.accepted


def wlmc_step(task: Task, grid: Grid, walkers: Walkers, est: Estimate, moves: MoveSizes, x_lo: int,
              gen: torch.Generator, update: bool = True) -> torch.Tensor:
    """One batched Wang-Landau Monte Carlo step: every walker proposes w_i += sigma U(-1, 1) on one
    random parameter i; proposals outside the weight box or the window are rejected; the rest are
    accepted with min(1, g(old) / g(new)). Then ln g and the histograms get each walker's bin.
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
    ix, iy, inside = bin_cvs(grid, x, y, x_lo, est.ln_g.shape[0])
    accept = wl_accept(est.ln_g, walkers.ix, walkers.iy, ix, iy, inside & in_box, uniform)

    params[rows, idx] = torch.where(accept, params[rows, idx], old)
    walkers.x = torch.where(accept, x, walkers.x)
    walkers.y = torch.where(accept, y, walkers.y)
    walkers.ix = torch.where(accept, ix, walkers.ix)
    walkers.iy = torch.where(accept, iy, walkers.iy)
    moves.attempted.index_add_(0, group, torch.ones_like(uniform))
    moves.accepted.index_add_(0, group, accept.double())
    if update and not est.converged:
        deposit(est, walkers.ix, walkers.iy)
    return accept


def drive_into_window(task: Task, params: torch.Tensor, x_range: tuple[float, float], y_range: tuple[float, float],
                      max_iterations: int, learning_rate: float) -> tuple[torch.Tensor, int]:
    """Move walkers (B, n_params) by Adam steps, kept in the box, until x lies in the central half
    of x_range (and a differentiable y inside y_range); walkers that arrive stop moving.

    Random weights sit at high training loss; windows may lie below or above it, so the drive goes
    either way: the loss is relu(|x - centre| - width / 4), not squared, so Adam's steps keep
    their size up to the target instead of fading near it. Some walkers cannot move at all (a
    network whose ReLUs are all dead has zero gradient): every 500 iterations, once at least half
    have arrived, the rest are replaced by copies of arrived walkers (the equilibration that follows
    separates the copies). Returns the walkers and the iterations used; raises RuntimeError naming
    the farthest x when fewer than half arrived within max_iterations.
    """
    def miss(values: torch.Tensor, lo: float, hi: float, margin: float) -> torch.Tensor:
        centre, half = 0.5 * (lo + hi), (0.5 - margin) * (hi - lo)
        out = torch.relu((values - centre).abs() - half)
        return torch.where(torch.isfinite(values), out, torch.full_like(out, 1e3))

    params = params.clone()
    m = torch.zeros_like(params)
    v = torch.zeros_like(params)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for it in range(1, max_iterations + 1):
        p = params.detach().requires_grad_(True)
        with torch.enable_grad():
            off = miss(task.x_of(p), *x_range, 0.25)
            y = task.y_of(p)
            if y is not None:
                off = off + miss(y, *y_range, 0.05)
            grad, = torch.autograd.grad(off.sum(), p)
        moving = off > 0
        if not bool(moving.any()):
            return params, it - 1
        if it % 500 == 0 or it == max_iterations:
            arrived = torch.nonzero(~moving).squeeze(1)
            if 2 * len(arrived) >= len(params):
                stuck = torch.nonzero(moving).squeeze(1)
                params[stuck] = params[arrived[torch.arange(len(stuck), device=params.device) % len(arrived)]]
                return params, it - 1
        grad = torch.nan_to_num(grad)
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = learning_rate * (m / (1 - beta1 ** it)) / ((v / (1 - beta2 ** it)).sqrt() + eps)
        params = torch.where(moving.unsqueeze(1), params - step, params)
        params = torch.maximum(torch.minimum(params, task.hi), task.lo)
    with torch.no_grad():
        x = task.x_of(params)
    centre = 0.5 * sum(x_range)
    worst = float((x - centre).abs().max())
    raise RuntimeError(
        f"after {max_iterations} gradient iterations some walkers are still outside x in "
        f"[{x_range[0]:.4g}, {x_range[1]:.4g}] (farthest x is {worst:.4g} from the window centre {centre:.4g}); "
        "the window may be unreachable inside the weight box: narrow [grid.x] or raise [init] max_iterations")
