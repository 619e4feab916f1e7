"""Wang-Landau molecular dynamics: batched Langevin dynamics of every weight on the potential
U(w) = ln g(x(w), y(w)), the force from one batched backward pass per step."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..config import SamplerConfig
from ..grid import Window
from ..tasks import Task
from ..walkers import Walkers
from ..wl import (
    Estimate,
    KernelTable,
    bin_ln_g,
    deposit_kernel,
    entropy_slopes,
    gaussian_kernel,
    kernel_table,
    reach_fraction,
    reachable_scale,
    scaled_table,
    wall_slope,
)
from .base import Sampler
from .walls import WallControl, steepest_gradient


@dataclass(frozen=True)
class Langevin:
    """Settings of the WLMD integrator for one window."""

    dt: float
    gamma: float
    split: bool                      # baoab (True) or the reference kick-friction-drift (False)
    wall_strength: float
    kernel: torch.Tensor             # (2R + 1,) normalised Gaussian ln g update, in bins
    x_range: tuple[float, float] | tuple[torch.Tensor, torch.Tensor]   # the window's x range (or (B,) ranges
                                                                        # per walker); soft walls outside
    y_range: tuple[float, float]     # the grid's y range; soft walls outside
    wall_deposits: bool = False      # walkers in the x walls deposit at the edge bin they left

    @classmethod
    def from_config(cls, cfg: SamplerConfig, window: Window, wall_strength: float, device: torch.device) -> Langevin:
        return cls(cfg.dt, cfg.gamma, cfg.integrator == "baoab", wall_strength,
                   gaussian_kernel(cfg.kernel_width, device=device), window.x_range, window.y_range, cfg.wall_deposits)


@dataclass
class MDCounters:
    """Walker-steps of WLMD since the start, and how many of them were inside the window (the
    rest were in the soft walls): (1,) float64 each."""

    steps: torch.Tensor
    inside: torch.Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> MDCounters:
        return cls(torch.zeros(1, dtype=torch.float64, device=device), torch.zeros(1, dtype=torch.float64, device=device))

    def reset_counters(self) -> None:
        self.steps.zero_()
        self.inside.zero_()


def wall_settling(n_params: int, wall_strength: float) -> float:
    """How far past a window's edge walkers settle, in units of the CV, where the walls' slope
    2 c d balances an entropy rising by n_params / 2 per unit of the CV: the slope of S in ln L
    where the loss is quadratic in every weight (large weights). It is flatter near a minimum (only
    the directions that change the loss count) and steeper where the loss grows more slowly than
    quadratically (MNIST just below its plateau of uniform outputs)."""
    return n_params / (4.0 * wall_strength)


def thermal_velocities(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Maxwell velocities at kT = 1 and unit mass: standard normal, shape of `like`."""
    return torch.randn(like.shape, generator=gen, device=like.device, dtype=like.dtype)


def wlmd_step(task: Task, window: Window, walkers: Walkers, est: Estimate, md: Langevin, counters: MDCounters,
              gen: torch.Generator, deposits: KernelTable, region: torch.Tensor | None = None, update: bool = True) -> None:
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
    With `md.wall_deposits`, walkers in the soft walls past the window's x edges (y inside the
    grid) raise ln g at the edge bin they left, uncounted in the histograms.
    `deposits` is the kernel (``kernel_table``); with `region` (n_x, n_y) bool, the bins reached so
    far, the slopes take no difference across its edges (``entropy_slopes``). The walkers'
    offsets inside their bins go to the estimate (``reach_fraction``). With y recorded, ln g is
    flat in y and exerts no force along it, so the step evaluates the training points alone
    (``Task.x_of``; y is read at synchronisations by ``Walkers.refresh``): 1.7 to 2 times the
    walker-steps per second of the step on all points (docs/performance.md).
    walkers.x/y/ix/iy are left at the CVs of the weights before the move (y nan when recorded;
    ``Walkers.refresh`` brings them up to date).
    """
    params, v = walkers.params, walkers.velocities
    grid = window.grid
    recorded = grid.y_recorded
    w = params.detach().requires_grad_(True)
    with torch.enable_grad():
        if recorded:       # ln g is flat in y and y is recorded at synchronisations: the training points alone
            x, y, hard = task.x_of(w), None, None
            xd = x.detach().double()
            yd = torch.full_like(xd, math.nan)
        else:
            x, y, hard = task.md_cvs(w)
            xd, yd = x.detach().double(), y.detach().double()
        ix, iy, inside = window.bin(xd, yd)
        fx, fy = window.fractional(xd, yd)
        if update and not est.converged:
            in_walls = None
            if md.wall_deposits:
                in_walls = ~inside if recorded else ~inside & (yd >= md.y_range[0]) & (yd <= md.y_range[1])
            deposit_kernel(est, ix, iy, inside, deposits, hard, (fx - ix, fy - iy), in_walls)
        du_dx, du_dy = entropy_slopes(est.ln_g, fx, fy, grid.x.width, grid.y.width, region)
        du_dx = du_dx + wall_slope(xd, *md.x_range, md.wall_strength)
        potential = (du_dx.to(x.dtype) * x).sum()
        if not recorded:
            du_dy = du_dy + wall_slope(yd, *md.y_range, md.wall_strength)
            potential = potential + (du_dy.to(y.dtype) * y).sum()
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


class WLMD(Sampler):
    """Wang-Landau molecular dynamics (``wlmd_step``). Its counters are walker-steps and those
    inside the window (the rest were in the soft walls). It keeps the kernel's scaling to the
    region visited so far (``reachable_scale``), renewed at synchronisations when the region grew,
    and the bins' reachable fractions (``reach_fraction``), renewed at every synchronisation (every
    rank of a window has the same merged estimate then). Runs begun before the scaling or the
    fractions existed have none in their checkpoints and continue as they began, with the window's
    edges only or whole bins."""

    kind = "wlmd"
    rate_label = "in"
    fixed_walls_hint = ("walkers sit in the soft walls outside their windows, where ln g is not updated; raise "
                        "[sampler] wall_strength (`rewl check` estimates how far past the edge they settle) and "
                        "watch T= (stiffer walls may need a smaller dt), or set it to \"auto\"")
    auto_walls_hint = ("walkers sit in the soft walls outside their windows, where ln g is not updated; the tuned walls "
                       "(c= in this line) stop rising where kT leaves 1 +- 0.1: lower [sampler] dt so they can stiffen")
    carries_velocities = True
    keeps_offsets = True

    def __init__(self, cfg, task, window, device):
        super().__init__(cfg, task, window, device)
        self.walls = WallControl(cfg.wall_strength)
        self.langevin = Langevin.from_config(cfg, window, self.walls.strength, device)
        self.counters = MDCounters.zeros(device)
        self.mirrored = kernel_table(window.shape, self.langevin.kernel)
        self.set_edges(torch.zeros(window.shape, dtype=torch.float64, device=device),
                       torch.ones(window.shape, dtype=torch.float64, device=device))

    def set_edges(self, scale: torch.Tensor | None, fraction: torch.Tensor | None) -> None:
        """The kernel's scaling to the reached region (``reachable_scale``; None: the window's and
        the grid's edges only), the bins' reachable fractions (``reach_fraction``; None: whole
        bins), and the deposit table and region mask that follow from them."""
        self.edge_scale, self.fraction = scale, fraction
        self.deposits = scaled_table(self.mirrored, scale, fraction)
        self.region = None if scale is None else scale > 0

    @property
    def counter_names(self) -> list[str]:
        return ["md_inside"]

    def start(self, walkers: Walkers, est: Estimate, gen: torch.Generator, steps: int) -> None:
        walkers.velocities = thermal_velocities(walkers.params, gen)
        if self.walls.auto:
            w = walkers.params.detach().requires_grad_(True)
            with torch.enable_grad():
                x, _, _ = self.task.md_cvs(w)
                steepest = steepest_gradient(x, w)
            self.walls.begin(self.task.n_params, self.window.grid.x.width, self.cfg.dt, steepest)
            self.langevin = replace(self.langevin, wall_strength=self.walls.strength)
        edges = torch.as_tensor(self.window.grid.x.edges, dtype=torch.float64, device=self.device)
        home = self.window.lo + walkers.ix
        held = replace(self.langevin, x_range=(edges[home], edges[home + 1]))     # walls around each walker's x bin
        for _ in range(steps):
            wlmd_step(self.task, self.window, walkers, est, held, self.counters, gen, self.deposits, self.region,
                      update=False)
        walkers.refresh(self.task, self.window)
        self.counters.reset_counters()

    def step(self, walkers: Walkers, est: Estimate, gen: torch.Generator) -> None:
        wlmd_step(self.task, self.window, walkers, est, self.langevin, self.counters, gen, self.deposits, self.region)

    def at_sync(self, step: int, est: Estimate, walkers: Walkers) -> None:
        if self.walls.auto and self.walls.decide(step, float(self.counters.steps), float(self.counters.inside)):
            self.langevin = replace(self.langevin, wall_strength=self.walls.strength)
        scale, fraction = self.edge_scale, self.fraction
        if self.region is not None and not torch.equal(self.region, est.visits > 0):
            scale = reachable_scale(est.visits, self.mirrored, self.edge_scale)
        moments = est.offset_moments()
        if fraction is not None and moments is not None:
            ends = (self.window.lo == 0, self.window.hi == self.window.grid.x.bins)
            fraction = reach_fraction(est.visits, moments, ends)
        if scale is not self.edge_scale or (fraction is not None and not torch.equal(fraction, self.fraction)):
            self.set_edges(scale, fraction)
        est.reach = self.fraction

    def bin_ln_g(self, ln_g: torch.Tensor) -> torch.Tensor:
        return bin_ln_g(ln_g, self.fraction)

    def end_block(self, walkers: Walkers) -> None:
        walkers.refresh(self.task, self.window)
        if self.walls.auto:
            self.walls.observe(self.kinetic_temperature(walkers))

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.counters.steps, self.counters.inside

    def state(self) -> dict[str, np.ndarray]:
        optional = {"edge_scale": self.edge_scale, "reach_fraction": self.fraction}
        return {"steps": self.counters.steps.cpu().numpy(), "inside": self.counters.inside.cpu().numpy(),
                **{key: value.cpu().numpy() for key, value in optional.items() if value is not None},
                **self.walls.state()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.counters = MDCounters(torch.as_tensor(state["steps"], device=self.device),
                                   torch.as_tensor(state["inside"], device=self.device))
        scale, fraction = (state.get(key) for key in ("edge_scale", "reach_fraction"))
        self.set_edges(*(None if a is None else torch.as_tensor(a, device=self.device) for a in (scale, fraction)))
        self.walls.load_state(state)
        self.langevin = replace(self.langevin, wall_strength=self.walls.strength)

    @property
    def low_rate_hint(self) -> str:
        return self.auto_walls_hint if self.walls.auto else self.fixed_walls_hint

    @property
    def wall_strength(self) -> float:
        return self.walls.strength

    def kinetic_temperature(self, walkers: Walkers) -> float:
        return float(walkers.velocities.double().square().mean())
