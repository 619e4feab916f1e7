"""Moves of a batch of walkers: batched WLMC single-parameter moves with move-size adaptation,
batched WLMD Langevin steps, and the gradient drive that brings fresh walkers into their window.
Pure tensor code, no MPI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import SamplerConfig
from .grid import Grid
from .tasks import Task
from .wl import Estimate, bin_cvs, deposit, deposit_kernel, entropy_slopes, gaussian_kernel, wall_slope, wl_accept


@dataclass
class Walkers:
    """A rank's batch of walkers and their current CVs and bins."""

    params: torch.Tensor   # (B, n_params)
    x: torch.Tensor        # (B,) float64
    y: torch.Tensor        # (B,) float64
    ix: torch.Tensor       # (B,) long, local x bin in the window (clamped into it)
    iy: torch.Tensor       # (B,) long
    velocities: torch.Tensor | None = None   # (B, n_params) under wlmd

    @classmethod
    def at(cls, task: Task, params: torch.Tensor, grid: Grid, x_lo: int, n_xw: int) -> tuple["Walkers", torch.Tensor]:
        """Walkers at `params` with CVs evaluated; also returns which are inside the window (B,)."""
        walkers = cls(params, *([torch.empty(0)] * 4))
        return walkers, walkers.refresh(task, grid, x_lo, n_xw)

    def refresh(self, task: Task, grid: Grid, x_lo: int, n_xw: int) -> torch.Tensor:
        """Recompute the CVs and bins of the current parameters; returns the inside mask (B,)."""
        with torch.no_grad():
            x, y = task.cvs(self.params)
        self.x, self.y = x.double(), y.double()
        self.ix, self.iy, inside = bin_cvs(grid, self.x, self.y, x_lo, n_xw)
        return inside


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


@dataclass(frozen=True)
class Langevin:
    """Settings of the WLMD integrator for one window."""

    dt: float
    gamma: float
    split: bool                      # baoab (True) or the reference kick-friction-drift (False)
    wall_strength: float
    kernel: torch.Tensor             # (2R + 1,) normalised Gaussian ln g update, in bins
    x_range: tuple[float, float]     # the window's x range; soft walls outside
    y_range: tuple[float, float]     # the grid's y range; soft walls outside

    @classmethod
    def from_config(cls, cfg: SamplerConfig, grid: Grid, x_lo: int, n_xw: int, device: torch.device) -> "Langevin":
        edges = grid.x.edges
        return cls(cfg.dt, cfg.gamma, cfg.integrator == "baoab", cfg.wall_strength,
                   gaussian_kernel(cfg.kernel_width, device=device),
                   (float(edges[x_lo]), float(edges[x_lo + n_xw])), (grid.y.min, grid.y.max))


@dataclass
class MDCounters:
    """Walker-steps of WLMD since the start, and how many of them were inside the window (the
    rest were in the soft walls): (1,) float64 each."""

    steps: torch.Tensor
    inside: torch.Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> "MDCounters":
        return cls(torch.zeros(1, dtype=torch.float64, device=device), torch.zeros(1, dtype=torch.float64, device=device))

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.steps, self.inside

    def reset_counters(self) -> None:
        self.steps.zero_()
        self.inside.zero_()


def thermal_velocities(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Maxwell velocities at kT = 1 and unit mass: standard normal, shape of `like`."""
    return torch.randn(like.shape, generator=gen, device=like.device, dtype=like.dtype)


def wlmd_step(task: Task, grid: Grid, walkers: Walkers, est: Estimate, md: Langevin, counters: MDCounters,
              x_lo: int, gen: torch.Generator, update: bool = True) -> None:
    """One batched Wang-Landau molecular-dynamics step of all walkers (B, n_params).

    Potential U(w) = ln g(x(w), y(w)) (kT = 1), so the weights sample g / g_est in (x, y) and a
    converged estimate makes the histogram flat; outside the window's x range and the grid's y
    range soft walls c d^2 are added. One forward and one backward per step: the CVs x, y (B,)
    at the current weights bin the walkers and receive the kernel update of ln g; the force is
    -(dU/dx grad x + dU/dy grad y), the slopes interpolated from the estimate (summing over walkers
    before the backward gives every walker its own gradient: a walker's CVs depend only on its own
    row). Then, with the friction step O: v <- (1 - gamma) v + sqrt(gamma (2 - gamma)) xi,
      baoab:     v += F dt; w += v dt / 2; O; w += v dt / 2   (BAOAB with the two half kicks of
                 consecutive steps merged: still one force per step);
      reference: v += F dt; O; w += v dt                       (the reference study's scheme).
    The reference scheme damps the force kick together with the velocity: its configurational
    temperature is 1 + gamma / (2 (1 - gamma)) where the force is weak, so Wang-Landau converges
    to S_true * T (5 % too steep at gamma = 0.1; negligible at the study's gamma <= 1e-2). BAOAB
    samples at T = 1 for any gamma. Positions are reflected at the weight box (velocity reversed).
    walkers.x/y/ix/iy are left at the CVs of the weights before the move (``Walkers.refresh``
    brings them up to date).
    """
    params, v = walkers.params, walkers.velocities
    n_xw = est.ln_g.shape[0]
    w = params.detach().requires_grad_(True)
    with torch.enable_grad():
        x, y, hard = task.md_cvs(w)
        xd, yd = x.detach().double(), y.detach().double()
        ix, iy, inside = bin_cvs(grid, xd, yd, x_lo, n_xw)
        if update and not est.converged:
            deposit_kernel(est, ix, iy, inside, md.kernel, hard)
        fx = (xd - grid.x.min) / grid.x.width - x_lo
        fy = (yd - grid.y.min) / grid.y.width
        du_dx, du_dy = entropy_slopes(est.ln_g, fx, fy, grid.x.width, grid.y.width)
        du_dx = du_dx + wall_slope(xd, *md.x_range, md.wall_strength)
        du_dy = du_dy + wall_slope(yd, *md.y_range, md.wall_strength)
        potential = (du_dx.to(x.dtype) * x).sum() + (du_dy.to(y.dtype) * y).sum()
        grad, = torch.autograd.grad(potential, w)
    with torch.no_grad():
        v.add_(grad, alpha=-md.dt)
        drift = 0.5 * md.dt if md.split else 0.0
        if md.split:
            params.add_(v, alpha=drift)
        noise = torch.randn(v.shape, generator=gen, device=v.device, dtype=v.dtype)
        v.mul_(1.0 - md.gamma).add_(noise, alpha=math.sqrt(md.gamma * (2.0 - md.gamma)))
        params.add_(v, alpha=md.dt - drift)
        reflect_at_box(params, v, task.lo, task.hi)
    walkers.x, walkers.y, walkers.ix, walkers.iy = xd, yd, ix, iy
    counters.steps += len(xd)
    counters.inside += inside.sum()


def reflect_at_box(params: torch.Tensor, velocities: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
    """Reflecting walls, in place: a coordinate past a wall is mirrored back into [lo, hi] and its
    velocity reversed. params, velocities (B, n); lo, hi (n,). Three passes over the arrays when
    nothing crossed (the usual step), which matters at a million parameters."""
    inside = torch.maximum(torch.minimum(params, hi), lo)
    excess = params - inside                     # signed distance past the wall, 0 inside
    if not bool(excess.any()):
        return
    crossed = excess.ne(0)
    params.copy_(torch.maximum(torch.minimum(inside - excess, hi), lo))   # clamp: a step longer than the box
    velocities.mul_(1.0 - 2.0 * crossed.to(velocities.dtype))


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
