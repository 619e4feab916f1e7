"""Wang-Landau kernels: pure tensor code on one window's estimate; no MPI here.

Shapes: a window owns n_x x bins and all n_y y bins; ln_g, hist and visits are (n_x, n_y)
float64 tensors. Walker bins are local x indices ix (B,) and y indices iy (B,) (``Window.bin``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .records import EstimateRecord


@dataclass
class Estimate:
    """One window's running entropy estimate and its schedule state."""

    ln_g: torch.Tensor      # (n_x, n_y) ln density of states, up to a constant
    hist: torch.Tensor      # (n_x, n_y) visits in the current stage
    visits: torch.Tensor    # (n_x, n_y) visits over the whole run (the visited mask)
    ln_f: float
    walkers: int = 1        # walkers sharing this estimate (all ranks of the window)
    stage: int = 0          # completed reductions of ln f
    one_over_t: bool = False  # True once the 1/t schedule took over
    converged: bool = False
    flatness: float = 0.0   # at the last flatness check: the schedule's criterion (``flatness``)
    accuracy_sum: torch.Tensor | None = None  # (n_x, n_y) hard test accuracy summed over visits (wlmd
                                              # with a smoothed accuracy as y); mean = accuracy_sum / visits
    # diagnostics, at the last flatness check (``visit_diagnostics``) and the last checkpoint
    flatness_all: float = 0.0          # min H / mean H over every visited bin
    rare_fraction: float = float("nan")  # visited bins with visits below 10 % of the median
    ln_g_change: float = float("nan")  # max |change of ln g| since the previous checkpoint, after its constant
    ln_g_checkpoint: torch.Tensor | None = None  # (n_x, n_y) ln g at the previous checkpoint

    @classmethod
    def zeros(cls, shape: tuple[int, int], ln_f: float, device: torch.device, walkers: int = 1,
              with_accuracy: bool = False) -> Estimate:
        z = lambda: torch.zeros(shape, dtype=torch.float64, device=device)  # noqa: E731
        return cls(z(), z(), z(), ln_f, walkers, accuracy_sum=z() if with_accuracy else None)

    def merged_arrays(self) -> tuple[str, ...]:
        """Names of the arrays whose increments the ranks of a window sum."""
        return ("ln_g", "hist", "visits") + (("accuracy_sum",) if self.accuracy_sum is not None else ())

    def mark_checkpoint(self, scheduled: bool = True) -> None:
        """Measure how much ln g changed since the previous scheduled checkpoint; a scheduled one
        becomes the new reference. (A stop or the end of the budget writes unscheduled ones: where
        a run was interrupted must not change what it reports.)"""
        if self.ln_g_checkpoint is not None:
            self.ln_g_change = ln_g_change(self.ln_g_checkpoint, self.ln_g, self.visits > 0)
        if scheduled or self.ln_g_checkpoint is None:
            self.ln_g_checkpoint = self.ln_g.clone()

    def to_record(self) -> EstimateRecord:
        n = lambda a: None if a is None else a.cpu().numpy()  # noqa: E731
        return EstimateRecord(ln_g=n(self.ln_g), hist=n(self.hist), visits=n(self.visits), ln_f=self.ln_f,
                              stage=self.stage, one_over_t=self.one_over_t, converged=self.converged,
                              flatness=self.flatness, accuracy_sum=n(self.accuracy_sum),
                              flatness_all=self.flatness_all, rare_fraction=self.rare_fraction,
                              ln_g_change=self.ln_g_change, ln_g_checkpoint=n(self.ln_g_checkpoint))

    @classmethod
    def from_record(cls, rec: EstimateRecord, walkers: int, device: torch.device) -> Estimate:
        t = lambda a: None if a is None else torch.as_tensor(a, device=device)  # noqa: E731
        return cls(t(rec.ln_g), t(rec.hist), t(rec.visits), float(rec.ln_f), walkers, int(rec.stage),
                   bool(rec.one_over_t), bool(rec.converged), float(rec.flatness), t(rec.accuracy_sum),
                   float(rec.flatness_all), float(rec.rare_fraction), float(rec.ln_g_change), t(rec.ln_g_checkpoint))


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
    flat = ix * est.ln_g.shape[1] + iy
    ones = torch.ones_like(flat, dtype=torch.float64)
    _count_visits(est, flat, ones)
    est.ln_g.view(-1).index_add_(0, flat, ones * (est.ln_f / est.walkers))


def _count_visits(est: Estimate, flat: torch.Tensor, counts: torch.Tensor, accuracy: torch.Tensor | None = None) -> None:
    """hist and visits += counts (B,) at the flat bins (B,); accuracy_sum += counts x accuracy (B,)."""
    est.hist.view(-1).index_add_(0, flat, counts)
    est.visits.view(-1).index_add_(0, flat, counts)
    if accuracy is not None and est.accuracy_sum is not None:
        est.accuracy_sum.view(-1).index_add_(0, flat, counts * accuracy.double())


def gaussian_kernel(width_bins: float, dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> torch.Tensor:
    """Normalised Gaussian weights of standard deviation `width_bins` at integer offsets
    -R..R, R = ceil(4 width): shape (2R + 1,), summing to 1."""
    radius = math.ceil(4.0 * width_bins)
    d = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (d / width_bins) ** 2)
    return k / k.sum()


def reflect(index: torch.Tensor, n: int) -> torch.Tensor:
    """Fold integer bin indices (any shape) into [0, n) by mirroring at the edges -1/2 and n - 1/2."""
    m = torch.remainder(index, 2 * n)
    return torch.where(m >= n, 2 * n - 1 - m, m)


def deposit_kernel(est: Estimate, ix: torch.Tensor, iy: torch.Tensor, inside: torch.Tensor, kernel: torch.Tensor,
                   accuracy: torch.Tensor | None = None) -> None:
    """Wang-Landau molecular dynamics update: ln g += (ln f / M) K(bin - walker bin) around each
    walker inside the window, K = kernel (2R + 1,) in x times kernel in y; the histograms count
    single bins. Walkers (B,) outside the window (in the soft walls) deposit nothing.

    The kernel is mirrored at the window's x edges and the grid's y edges: a flat histogram then
    raises every bin equally (the folded kernel is symmetric with unit row sums), where a cut kernel
    would under-fill the edge bins and bias ln g there.
    Outside walkers are weighted by 0 rather than filtered out: no data-dependent shapes, so no
    device synchronisation per step."""
    n_x, n_y = est.ln_g.shape
    radius = (kernel.numel() - 1) // 2
    offsets = torch.arange(-radius, radius + 1, device=ix.device)
    kx = reflect(ix[:, None] + offsets, n_x)                    # (B, 2R + 1)
    ky = reflect(iy[:, None] + offsets, n_y)
    flat = (kx[:, :, None] * n_y + ky[:, None, :]).reshape(-1)  # (B (2R + 1)^2,)
    counts = inside.to(torch.float64)                           # (B,) 1 inside, 0 in the walls
    weight = (kernel[:, None] * kernel[None, :]).mul(est.ln_f / est.walkers)
    est.ln_g.view(-1).index_add_(0, flat, (counts[:, None, None] * weight).reshape(-1))
    _count_visits(est, ix * n_y + iy, counts, accuracy)


def entropy_slopes(ln_g: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, x_width: float,
                   y_width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """dS/dx and dS/dy of the estimate at fractional bin coordinates fx, fy (B,) (bin k spans
    [k, k + 1), its centre is k + 1/2): central differences of ln_g (n_x, n_y) at bin centres
    (one-sided at the edges), interpolated bilinearly between centres; positions beyond the
    outermost centres take the edge value. Returns two (B,) float64 tensors."""
    n_x, n_y = ln_g.shape
    cx = (fx.double() - 0.5).clamp(0, n_x - 1)
    cy = (fy.double() - 0.5).clamp(0, n_y - 1)
    i0 = cx.floor().long().clamp(max=max(n_x - 2, 0))
    j0 = cy.floor().long().clamp(max=max(n_y - 2, 0))
    tx, ty = cx - i0, cy - j0
    # the four surrounding centres at once, (B, 4): (i0, j0), (i1, j0), (i0, j1), (i1, j1)
    i = torch.stack([i0, i0 + 1, i0, i0 + 1], dim=1).clamp_(max=n_x - 1)
    j = torch.stack([j0, j0, j0 + 1, j0 + 1], dim=1).clamp_(max=n_y - 1)
    weight = torch.stack([(1 - tx) * (1 - ty), tx * (1 - ty), (1 - tx) * ty, tx * ty], dim=1)
    flat = ln_g.reshape(-1)

    def central(up: torch.Tensor, down: torch.Tensor, at_up, at_down, width: float) -> torch.Tensor:
        return (flat[at_up] - flat[at_down]) / ((up - down).clamp(min=1) * width)

    up_i, down_i = (i + 1).clamp(max=n_x - 1), (i - 1).clamp(min=0)
    up_j, down_j = (j + 1).clamp(max=n_y - 1), (j - 1).clamp(min=0)
    d_dx = central(up_i, down_i, up_i * n_y + j, down_i * n_y + j, x_width)
    d_dy = central(up_j, down_j, i * n_y + up_j, i * n_y + down_j, y_width)
    return (weight * d_dx).sum(dim=1), (weight * d_dy).sum(dim=1)


def wall_slope(values: torch.Tensor, lo: float, hi: float, strength: float) -> torch.Tensor:
    """Derivative of the soft walls c (lo - v)^2 below lo and c (v - hi)^2 above hi: (B,)."""
    return 2.0 * strength * (torch.relu(values - hi) - torch.relu(lo - values))


def established_bins(visits: torch.Tensor, min_fraction: float) -> torch.Tensor:
    """Bins visited at least `min_fraction` x the mean visits of visited bins over the run (bool).
    min_fraction = 0 (the default) gives every visited bin."""
    visited = visits > 0
    if min_fraction <= 0 or not bool(visited.any()):
        return visited
    return visited & (visits >= min_fraction * visits[visited].mean())


def deep_bins(ln_g: torch.Tensor, visits: torch.Tensor, depth: float) -> torch.Tensor:
    """Visited bins whose ln g lies more than `depth` below the highest ln g of the visited bins of
    their own x row: (n_x, n_y) bool. At that x such a bin holds less than e^-depth of the weight
    of the row's largest bin."""
    visited = visits > 0
    row_top = torch.where(visited, ln_g, -math.inf).amax(dim=1, keepdim=True)
    return visited & (ln_g < row_top - depth)


def flatness(hist: torch.Tensor, visits: torch.Tensor, min_fraction: float, ln_g: torch.Tensor | None = None,
             depth: float = math.inf) -> float:
    """min H / mean H over the visited bins (``established_bins``: all of them by default) that are
    not more than `depth` below the top of their x row (``deep_bins``; needs `ln_g`); 0 until every
    x row of the window was visited.

    The x range of a window is known in advance, its y range is not: like the "all bins visited"
    rule of Belardinelli and Pereyra, ln f may not fall before walkers have reached both ends of
    the window, or the unexplored rows would never be filled."""
    if not bool((visits.sum(dim=1) > 0).all()):
        return 0.0
    counted = established_bins(visits, min_fraction)
    if ln_g is not None and math.isfinite(depth):
        counted = counted & ~deep_bins(ln_g, visits, depth)
    if not bool(counted.any()):
        return 0.0
    mean = float(hist[counted].mean())
    return float(hist[counted].min()) / mean if mean > 0 else 0.0


RARE = 0.1     # a visited bin is rare below this fraction of the median visits of the visited bins


def visit_diagnostics(hist: torch.Tensor, visits: torch.Tensor) -> tuple[float, float]:
    """(flatness over every visited bin: min H / mean H of the stage histogram; the fraction of
    visited bins whose run visits are below RARE x their median). (0, nan) before any visit."""
    visited = visits > 0
    if not bool(visited.any()):
        return 0.0, float("nan")
    h = hist[visited]
    mean = float(h.mean())
    v = visits[visited]
    rare = float((v < RARE * v.median()).double().mean())
    return (float(h.min()) / mean if mean > 0 else 0.0), rare


def ln_g_change(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> float:
    """max |(after - before) - c| over the bins of `mask`, c their mean change: how much the shape
    of ln g moved (a converged estimate only shifts by a constant)."""
    if not bool(mask.any()):
        return float("nan")
    d = (after - before)[mask]
    return float((d - d.mean()).abs().max())
