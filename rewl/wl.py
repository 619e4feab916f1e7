"""Wang-Landau kernels: pure tensor code on one window's estimate; no MPI here.

Shapes: a window owns n_xw x bins and all n_y y bins; ln_g, hist and visits are (n_xw, n_y)
float64 tensors. Walker bins are local x indices ix (B,) and y indices iy (B,).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import ScheduleConfig
from .grid import Grid


@dataclass
class Estimate:
    """One window's running entropy estimate and its schedule state."""

    ln_g: torch.Tensor      # (n_xw, n_y) ln density of states, up to a constant
    hist: torch.Tensor      # (n_xw, n_y) visits in the current stage
    visits: torch.Tensor    # (n_xw, n_y) visits over the whole run (the visited mask)
    ln_f: float
    walkers: int = 1        # walkers sharing this estimate (all ranks of the window)
    stage: int = 0          # completed reductions of ln f
    one_over_t: bool = False  # True once the 1/t schedule took over
    converged: bool = False

    @classmethod
    def zeros(cls, n_xw: int, n_y: int, ln_f: float, device: torch.device, walkers: int = 1) -> "Estimate":
        z = lambda: torch.zeros(n_xw, n_y, dtype=torch.float64, device=device)  # noqa: E731
        return cls(z(), z(), z(), ln_f, walkers)


def bin_cvs(grid: Grid, x: torch.Tensor, y: torch.Tensor, x_lo: int, n_xw: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local bins of CVs x, y (B,): returns ix (B,) in [0, n_xw), iy (B,) and inside (B,) bool.

    Out-of-window values are flagged by `inside` and their indices clamped so lookups stay legal.
    """
    ix = grid.x.index(x) - x_lo
    iy = grid.y.index(y)
    inside = (ix >= 0) & (ix < n_xw) & (iy >= 0) & (iy < grid.y.bins)
    return ix.clamp_(0, n_xw - 1), iy.clamp_(0, grid.y.bins - 1), inside


def wl_accept(ln_g: torch.Tensor, ix_old: torch.Tensor, iy_old: torch.Tensor, ix_new: torch.Tensor,
              iy_new: torch.Tensor, inside: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Wang-Landau acceptance min(1, g(old) / g(new)) for proposals inside the window: (B,) bool."""
    ln_ratio = ln_g[ix_old, iy_old] - ln_g[ix_new, iy_new]
    return inside & (torch.log(uniform) < ln_ratio)


def deposit(est: Estimate, ix: torch.Tensor, iy: torch.Tensor) -> None:
    """Add ln f / M to ln g and one visit to the histograms at each walker's bin (repeats add up).

    M = est.walkers: multiple-walker Wang-Landau averages the walkers' ln g after each step, so one
    step of all M walkers raises ln g by ln f in total, as one walker would. Adding the full ln f
    per walker overshoots: hundreds of walkers starting in one bin bury it for a long time."""
    n_y = est.ln_g.shape[1]
    flat = ix * n_y + iy
    ones = torch.ones_like(flat, dtype=torch.float64)
    est.hist.view(-1).index_add_(0, flat, ones)
    est.visits.view(-1).index_add_(0, flat, ones)
    est.ln_g.view(-1).index_add_(0, flat, ones * (est.ln_f / est.walkers))


def established_bins(visits: torch.Tensor, min_fraction: float) -> torch.Tensor:
    """Bins visited at least `min_fraction` x the mean visits of visited bins over the run (bool).

    On a 2-D grid, fringe bins (a rare test accuracy at a given loss) may be hit once and then
    not for a long time; counting them would stall every flatness test. min_fraction = 0 gives
    the classic criterion over all visited bins."""
    visited = visits > 0
    if not bool(visited.any()):
        return visited
    return visited & (visits >= min_fraction * visits[visited].mean())


def flatness(hist: torch.Tensor, visits: torch.Tensor, min_fraction: float) -> float:
    """min H / mean H over the established bins; 0 until every x row of the window was visited.

    The x range of a window is known in advance, its y range is not: like the "all bins visited"
    rule of Belardinelli and Pereyra, ln f may not fall before walkers have reached both ends of
    the window, or the unexplored rows would never be filled."""
    if not bool((visits.sum(dim=1) > 0).all()):
        return 0.0
    h = hist[established_bins(visits, min_fraction)]
    if h.numel() == 0:
        return 0.0
    mean = float(h.mean())
    return float(h.min()) / mean if mean > 0 else 0.0


def advance_schedule(est: Estimate, cfg: ScheduleConfig, flat: float, steps_per_bin: float) -> bool:
    """Apply the ln f schedule after a flatness check; returns True when the histogram was reset.

    halving: ln f /= 2 whenever min H >= threshold * mean H over the visited bins.
    1/t (Belardinelli-Pereyra 2007): ln f /= 2 whenever every visited bin was seen again in this
    stage (min H > 0; their criterion, which rare fringe bins of a 2-D grid cannot stall), until
    ln f < 1/t; then ln f = 1/t with t = steps per visited bin of one walker, so the error keeps falling
    as t^-1/2 instead of saturating.
    A window converges once ln f <= ln_f_final; its estimate is then frozen.
    """
    if est.converged:
        return False
    reset = False
    if est.one_over_t:
        est.ln_f = min(est.ln_f, 1.0 / steps_per_bin)
    elif (flat > 0) if cfg.kind == "1/t" else (flat >= cfg.flatness):
        before = est.ln_f
        est.ln_f /= 2.0
        est.stage += 1
        reset = True
        if cfg.kind == "1/t" and est.ln_f < 1.0 / steps_per_bin:
            est.one_over_t = True
            est.ln_f = min(before, 1.0 / steps_per_bin)   # ln f never grows
    if reset:
        est.hist.zero_()
    if est.ln_f <= cfg.ln_f_final:
        est.converged = True
    return reset


def schedule_progress(ln_f: float, converged: bool, cfg: ScheduleConfig) -> float:
    """Fraction of the way from ln_f_initial to ln_f_final on a log scale, in [0, 1]."""
    if converged:
        return 1.0
    span = math.log(cfg.ln_f_initial / cfg.ln_f_final)
    return min(1.0, max(0.0, math.log(cfg.ln_f_initial / ln_f) / span))
