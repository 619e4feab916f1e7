"""Wang-Landau Hamiltonian Monte Carlo: every walker moves all its weights along a leapfrog
trajectory steered by the window's smoothed ln g, and an exact Metropolis test on the binned
estimate decides, so the walkers sample the Wang-Landau target for any step size.

Why: single-parameter moves need O(d) trials to cross a d-dimensional distribution, Hamiltonian
trajectories O(d^1/4) (../docs/convergence.md, "Moves that travel"); and unlike Langevin dynamics
without a test (WLMD) the step size buys speed without a bias.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..grid import Window
from ..tasks import Task
from ..walkers import Walkers
from ..wl import Estimate, deposit, entropy_slopes, level_unvisited
from .base import Sampler
from .wlmd import reflect_at_box

JITTER = 0.2            # each walker's step is eps times U(1 - JITTER, 1 + JITTER): no resonant trajectories
EPS_BOUNDS = (1e-4, 2.0)  # eps, in units of each weight's scale
SCALE_FLOOR = 1e-3      # a weight's scale is at least this fraction of its box half width
START_ADAPT = 100       # steps between adaptations while fresh walkers equilibrate
PRIOR_WALKERS = 8       # the layer's mean variance counts as this many walkers in a weight's scale


@dataclass
class Trajectories:
    """The integrator's settings and counters of one rank: eps (the leapfrog step in units of each
    parameter's scale), the scales (n_params,) (the walkers' spread of each weight: the inverse
    square root of its mass), and attempted / accepted trajectories since the last adaptation and
    up to it, (1,) float64 each."""

    eps: torch.Tensor                    # (1,) float64
    scale: torch.Tensor                  # (n_params,) in the walkers' dtype
    attempted_since_adapt: torch.Tensor
    accepted_since_adapt: torch.Tensor
    attempted_until_adapt: torch.Tensor
    accepted_until_adapt: torch.Tensor

    @classmethod
    def initial(cls, task: Task, eps: float) -> Trajectories:
        z = torch.zeros(1, dtype=torch.float64, device=task.lo.device)
        scale = (task.hi - task.lo) / math.sqrt(12.0)      # the spread of weights uniform in the box
        return cls(torch.tensor([eps], dtype=torch.float64, device=z.device), scale.clone(), z.clone(), z.clone(),
                   z.clone(), z.clone())

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.attempted_until_adapt + self.attempted_since_adapt,
                self.accepted_until_adapt + self.accepted_since_adapt)

    def adapt_step(self, target: float) -> None:
        """eps times acceptance / target since the last adaptation (clamped to [0.5, 1.5] per call,
        within EPS_BOUNDS); then restart the counters."""
        if float(self.attempted_since_adapt) > 0:
            rate = self.accepted_since_adapt / self.attempted_since_adapt
            self.eps = (self.eps * (rate / target).clamp(0.5, 1.5)).clamp(*EPS_BOUNDS)
        self.attempted_until_adapt += self.attempted_since_adapt
        self.accepted_until_adapt += self.accepted_since_adapt
        self.attempted_since_adapt.zero_()
        self.accepted_since_adapt.zero_()

    def adapt_scales(self, task: Task, params: torch.Tensor) -> None:
        """The scales from the walkers' spread: each weight's variance over the B walkers (B, n),
        shrunk toward its group's mean variance with weight PRIOR_WALKERS / (B + PRIOR_WALKERS) (few
        walkers: the layer's spread), at least SCALE_FLOOR half widths."""
        batch = params.shape[0]
        if batch < 2:
            return
        var = params.double().var(dim=0)                                                   # (n,)
        per_group = torch.zeros(task.n_groups, dtype=torch.float64, device=params.device).index_add_(0, task.group, var)
        group_var = (per_group / torch.bincount(task.group, minlength=task.n_groups).double())[task.group]
        shrunk = (batch * var + PRIOR_WALKERS * group_var) / (batch + PRIOR_WALKERS)
        floor = SCALE_FLOOR * task.group_half_width[task.group]
        self.scale = torch.maximum(shrunk.sqrt().to(self.scale.dtype), floor)

    def reset_counters(self) -> None:
        for counter in (self.attempted_since_adapt, self.accepted_since_adapt, self.attempted_until_adapt,
                        self.accepted_until_adapt):
            counter.zero_()


def steering_gradient(task: Task, window: Window, ln_g: torch.Tensor, w: torch.Tensor, with_y: bool
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradient of the steering potential U(w) = ln g interpolated at (x(w), y(w)) for walkers
    w (B, n): (B, n), and x, y (B,) float64 there. With y recorded (`with_y` False) only the
    training loss is evaluated (ln g is flat in y) and y is returned as nan."""
    w = w.detach().requires_grad_(True)
    with torch.enable_grad():
        if with_y:
            x, y, _ = task.md_cvs(w)
        else:
            x = task.x_of(w)
            y = torch.full_like(x, math.nan)
        xd, yd = x.detach().double(), y.detach().double()
        fx, fy = window.fractional(xd, yd)
        du_dx, du_dy = entropy_slopes(ln_g, fx, fy, window.grid.x.width, window.grid.y.width)
        potential = (du_dx.to(x.dtype) * x).sum()
        if with_y:
            potential = potential + (du_dy.to(y.dtype) * y).sum()
        grad, = torch.autograd.grad(potential, w)
    return grad, xd, yd


def hmc_step(task: Task, window: Window, walkers: Walkers, est: Estimate, traj: Trajectories, n_leapfrog: int,
             gen: torch.Generator, update: bool = True, home: torch.Tensor | None = None) -> torch.Tensor:
    """One batched Wang-Landau HMC step: every walker (B, n_params) draws momenta p ~ N(0, 1) and
    follows a leapfrog trajectory of `n_leapfrog` steps of
    dw = eps_b s p (s (n_params,) the weights' scales, eps_b = eps U(0.8, 1.2) per walker) on the steering
    potential (``steering_gradient``), reflected at the weight box (the momentum component
    reversed). The end point is accepted with min(1, exp(ln g(old bin) - ln g(new bin) + K_old -
    K_new)), K = |p|^2 / 2: the leapfrog map is reversible and keeps volume for any force field, so
    the binned estimate is sampled exactly and the smoothed one only steers. A trajectory that
    leaves the window (or, with `home` (B,), the walker's own x bin) at any step is rejected: its
    reverse leaves too, so the rule stays symmetric. Then ln g and the histograms get each walker's
    bin (unless `update` is False). Returns the accepted mask (B,)."""
    params = walkers.params
    batch = params.shape[0]
    with_y = not window.grid.y_recorded
    jitter = torch.rand(batch, 1, generator=gen, device=params.device, dtype=params.dtype)
    step = (float(traj.eps) * (1.0 - JITTER + 2.0 * JITTER * jitter)) * traj.scale             # (B, n)
    momenta = torch.randn(params.shape, generator=gen, device=params.device, dtype=params.dtype)
    uniform = torch.rand(batch, generator=gen, device=params.device, dtype=torch.float64)
    kinetic_old = 0.5 * momenta.double().square().sum(dim=1)

    ln_g = est.ln_g
    w = params.clone()
    grad, _, _ = steering_gradient(task, window, ln_g, w, with_y)
    stayed = torch.ones(batch, dtype=torch.bool, device=params.device)
    for _ in range(n_leapfrog):
        momenta.sub_(0.5 * step * grad)
        w.add_(step * momenta)
        reflect_at_box(w, momenta, task.lo, task.hi)
        grad, x, y = steering_gradient(task, window, ln_g, w, with_y)
        ix, _, inside = window.bin(x, torch.zeros_like(x) if not with_y else y)
        stayed &= inside if home is None else inside & (ix == home)
        momenta.sub_(0.5 * step * grad)
    kinetic_new = 0.5 * momenta.double().square().sum(dim=1)

    if not with_y:       # the last leapfrog step evaluated x alone; the recorded y needs the test points
        with torch.no_grad():
            x, y = task.cvs(w)
        x, y = x.double(), y.double()
    ix, iy, inside = window.bin(x, y)     # flattened: x and y of the last leapfrog step, as WLMD bins them
    ln_ratio = ln_g[walkers.ix, walkers.iy] - ln_g[ix, iy] + kinetic_old - kinetic_new
    accept = stayed & inside & (torch.log(uniform) < ln_ratio)

    params.copy_(torch.where(accept[:, None], w, params))
    walkers.x = torch.where(accept, x, walkers.x)
    walkers.y = torch.where(accept, y, walkers.y)
    walkers.ix = torch.where(accept, ix, walkers.ix)
    walkers.iy = torch.where(accept, iy, walkers.iy)
    traj.attempted_since_adapt += batch
    traj.accepted_since_adapt += accept.sum()
    if update and not est.converged:
        deposit(est, walkers.ix, walkers.iy)
    return accept


class HMC(Sampler):
    """Wang-Landau Hamiltonian Monte Carlo (``hmc_step``): one trajectory of ``leapfrog_steps``
    steps per walker and step (a fixed cost: that many forward and backward passes); eps adapted
    toward ``target_acceptance`` and the weights' scales to the walkers' spread every
    ``adapt_interval`` steps."""

    kind = "hmc"
    rate_label = "acc"

    def __init__(self, cfg, task, window, device):
        super().__init__(cfg, task, window, device)
        self.traj = Trajectories.initial(task, cfg.step_size)

    @property
    def counter_names(self) -> list[str]:
        return ["trajectories"]

    def start(self, walkers: Walkers, est: Estimate, gen: torch.Generator, steps: int) -> None:
        """Trajectories confined to each walker's own x bin (as WLMC's start), so the walkers keep
        the spread over the window's bins the drive gave them; the scales follow the walkers, eps
        stays (confined to one bin, the acceptance says how wide a bin is, not how fine the
        integration must be). `steps` counts leapfrog steps (forward and backward passes), so
        ``[init] equilibration_steps`` costs about what it costs WLMC: steps / leapfrog_steps
        trajectories."""
        home = walkers.ix.clone()
        every = min(self.cfg.adapt_interval, START_ADAPT)
        for k in range(math.ceil(steps / self.cfg.leapfrog_steps)):
            if k % every == 0:
                self.traj.adapt_scales(self.task, walkers.params)
            hmc_step(self.task, self.window, walkers, est, self.traj, self.cfg.leapfrog_steps, gen, update=False,
                     home=home)
        self.traj.adapt_scales(self.task, walkers.params)
        self.traj.reset_counters()

    def step(self, walkers: Walkers, est: Estimate, gen: torch.Generator) -> None:
        hmc_step(self.task, self.window, walkers, est, self.traj, self.cfg.leapfrog_steps, gen)

    def at_sync(self, step: int, est: Estimate, walkers: Walkers) -> None:
        """Adapt eps and the scales; level never-visited bins (as WLMC)."""
        if step % self.cfg.adapt_interval == 0:
            self.traj.adapt_step(self.cfg.target_acceptance)
            self.traj.adapt_scales(self.task, walkers.params)
        if not est.converged:
            level_unvisited(est.ln_g, est.visits)

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.traj.totals()

    @property
    def step_size(self) -> float:
        return float(self.traj.eps)

    @property
    def leapfrog_steps(self) -> int:
        return self.cfg.leapfrog_steps

    def state(self) -> dict[str, np.ndarray]:
        return {f"hmc_{name}": getattr(self.traj, name).cpu().numpy() for name in _STATE}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        t = {name: torch.as_tensor(state[f"hmc_{name}"], device=self.device) for name in _STATE}
        t["scale"] = t["scale"].to(self.task.dtype)
        self.traj = Trajectories(**t)


_STATE = ("eps", "scale", "attempted_since_adapt", "accepted_since_adapt", "attempted_until_adapt",
          "accepted_until_adapt")
