"""Wang-Landau kernels: pure tensor code on one window's estimate; no MPI here.

Shapes: a window owns n_x x bins and all n_y y bins; ln_g, hist and visits are (n_x, n_y)
float64 tensors. Walker bins are local x indices ix (B,) and y indices iy (B,) (``Window.bin``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .records import OFFSET_ARRAYS, EstimateRecord, offset_moments


@dataclass
class Estimate:
    """One window's running entropy estimate and its schedule state."""

    ln_g: torch.Tensor      # (n_x, n_y) ln density of states, up to a constant
    hist: torch.Tensor      # (n_x, n_y) visits in the current stage
    visits: torch.Tensor    # (n_x, n_y) visits over the whole run (the visited mask)
    ln_f: float
    walkers: int = 1        # walkers sharing this estimate (all ranks of the window)
    per_visit: bool = True  # ln f is added per walker visit (False: per step of all walkers, ln f / M per
                            # visit: the rule of runs begun before schema 4, kept when they resume)
    stage: int = 0          # completed reductions of ln f
    clock_start: float = 0.0  # walker visits of the window (visits.sum()) when the current stage began; in the
                              # 1/t regime, when the stage that led to it began (1/t's t counts from there)
    one_over_t: bool = False  # True once the 1/t schedule took over
    converged: bool = False  # the run converged (every window settled and the windows join): ln g is final
    flatness: float = 0.0   # at the last flatness check: the schedule's criterion (``flatness``)
    accuracy_sum: torch.Tensor | None = None  # (n_x, n_y) hard test accuracy summed over visits (wlmd
                                              # with a smoothed accuracy as y); mean = accuracy_sum / visits
    offset_x_sum: torch.Tensor | None = None  # (n_x, n_y) wlmd: the walkers' offsets u inside their bins
    offset_y_sum: torch.Tensor | None = None  # (in bin widths, [0, 1)) summed over visits, and their
    offset_x_sq_sum: torch.Tensor | None = None  # squares (``reach_fraction``)
    offset_y_sq_sum: torch.Tensor | None = None
    # diagnostics, at the last flatness check (``visit_diagnostics``) and the last checkpoint
    flatness_all: float = 0.0          # min H / mean H over every visited bin
    rare_fraction: float = float("nan")  # visited bins with visits below 10 % of the median
    ln_g_change: float = float("nan")  # max |change of ln g| since the previous checkpoint, after its constant
    ln_g_checkpoint: torch.Tensor | None = None  # (n_x, n_y) ln g at the previous checkpoint
    reach: torch.Tensor | None = None  # (n_x, n_y) wlmd: the bins' reachable fractions, set by the sampler at
                                       # each synchronisation (``reach_fraction``); not stored with the estimate
    y_hist: torch.Tensor | None = None  # (n_x, n_y of the grid) y recorded: the walkers' visits per y bin
                                        # (``record_y``); P(y | x) = y_hist / its row sum
    edge_crossings: torch.Tensor | None = None  # (n_x - 1,) walker moves across the edge between x bins i and
                                                # i + 1, either way, over the run (``fold_crossings``)
    # over the stretch since its reference checkpoint: the previous one, or once ln f is at its end the
    # first one after (``mark_checkpoint``; ``Schedule.settle`` reads them)
    settled: bool = False              # the window's estimate stopped moving (``Schedule.settle``)
    recent_flatness: float = float("nan")   # flatness of the stretch's visits (``recent_flatness``)
    recent_crossings: float = float("nan")  # crossings of the window's least crossed x edge in it
    visits_checkpoint: torch.Tensor | None = None     # (n_x, n_y) visits when the stretch began
    crossings_checkpoint: torch.Tensor | None = None  # (n_x - 1,) edge_crossings when the stretch began

    @classmethod
    def zeros(cls, shape: tuple[int, int], ln_f: float, device: torch.device, walkers: int = 1,
              with_accuracy: bool = False, with_offsets: bool = False, recorded_y_bins: int = 0) -> Estimate:
        """A fresh estimate; `recorded_y_bins` > 0: y is recorded on that many bins (``y_hist``)."""
        z = lambda: torch.zeros(shape, dtype=torch.float64, device=device)  # noqa: E731
        offsets = {name: z() for name in OFFSET_ARRAYS} if with_offsets else {}
        y_hist = torch.zeros((shape[0], recorded_y_bins), dtype=torch.float64, device=device) if recorded_y_bins else None
        return cls(z(), z(), z(), ln_f, walkers, accuracy_sum=z() if with_accuracy else None, y_hist=y_hist,
                   edge_crossings=torch.zeros(shape[0] - 1, dtype=torch.float64, device=device), **offsets)

    def merged_arrays(self) -> tuple[str, ...]:
        """Names of the arrays whose increments the ranks of a window sum."""
        optional = ("accuracy_sum", "y_hist", "edge_crossings") + OFFSET_ARRAYS
        return ("ln_g", "hist", "visits") + tuple(name for name in optional if getattr(self, name) is not None)

    def mark_checkpoint(self, scheduled: bool = True, depth: float = math.inf, keep_stretch: bool = False) -> None:
        """Measure how much ln g changed since the previous scheduled checkpoint (after its
        constant), and over the stretch since its reference checkpoint how flat the visits were
        (``recent_flatness``, leaving out bins `depth` below the top of their x row) and how often
        walkers crossed the window's least crossed x edge. A scheduled checkpoint becomes the new
        reference of both, except that with `keep_stretch` (ln f is at its end) the stretch goes
        on from where it began: it grows until it holds the statistics to settle the window. A stop
        or the end of the budget writes unscheduled checkpoints: where a run was interrupted must
        not change what it reports."""
        if self.ln_g_checkpoint is not None:
            self.ln_g_change = ln_g_change(self.ln_g_checkpoint, self.ln_g, self.visits > 0)
        if self.visits_checkpoint is not None:
            self.recent_flatness = recent_flatness(self.visits - self.visits_checkpoint, self.visits, self.ln_g,
                                                   self.reach, depth)
        if self.crossings_checkpoint is not None:
            self.recent_crossings = float((self.edge_crossings - self.crossings_checkpoint).min())
        if scheduled or self.ln_g_checkpoint is None:
            self.ln_g_checkpoint = self.ln_g.clone()
        if (scheduled and not keep_stretch) or self.visits_checkpoint is None:
            self.visits_checkpoint = self.visits.clone()
            self.crossings_checkpoint = self.edge_crossings.clone()

    def to_record(self) -> EstimateRecord:
        n = lambda a: None if a is None else a.cpu().numpy()  # noqa: E731
        return EstimateRecord(ln_g=n(self.ln_g), hist=n(self.hist), visits=n(self.visits), ln_f=self.ln_f,
                              stage=self.stage, one_over_t=self.one_over_t, converged=self.converged,
                              per_visit=self.per_visit, clock_start=self.clock_start,
                              flatness=self.flatness, accuracy_sum=n(self.accuracy_sum),
                              **{name: n(getattr(self, name)) for name in OFFSET_ARRAYS},
                              flatness_all=self.flatness_all, rare_fraction=self.rare_fraction,
                              ln_g_change=self.ln_g_change, ln_g_checkpoint=n(self.ln_g_checkpoint),
                              y_hist=n(self.y_hist), edge_crossings=n(self.edge_crossings), settled=self.settled,
                              recent_flatness=self.recent_flatness, recent_crossings=self.recent_crossings,
                              visits_checkpoint=n(self.visits_checkpoint),
                              crossings_checkpoint=n(self.crossings_checkpoint))

    @classmethod
    def from_record(cls, rec: EstimateRecord, walkers: int, device: torch.device) -> Estimate:
        t = lambda a: None if a is None else torch.as_tensor(a, device=device)  # noqa: E731
        return cls(t(rec.ln_g), t(rec.hist), t(rec.visits), float(rec.ln_f), walkers, bool(rec.per_visit), int(rec.stage),
                   float(rec.clock_start),
                   bool(rec.one_over_t), bool(rec.converged), float(rec.flatness), t(rec.accuracy_sum),
                   *(t(getattr(rec, name)) for name in OFFSET_ARRAYS), float(rec.flatness_all),
                   float(rec.rare_fraction), float(rec.ln_g_change), t(rec.ln_g_checkpoint), y_hist=t(rec.y_hist),
                   edge_crossings=(torch.zeros(rec.ln_g.shape[0] - 1, dtype=torch.float64, device=device)  # older files
                                   if rec.edge_crossings is None else t(rec.edge_crossings)),
                   settled=bool(rec.settled), recent_flatness=float(rec.recent_flatness),
                   recent_crossings=float(rec.recent_crossings), visits_checkpoint=t(rec.visits_checkpoint),
                   crossings_checkpoint=t(rec.crossings_checkpoint))

    def offset_moments(self) -> tuple[torch.Tensor, ...] | None:
        return offset_moments(self)

    def visit_increment(self) -> float:
        """What one walker's visit adds to ln g of its bin: ln f (ln f / M under the per-step rule)."""
        return self.ln_f if self.per_visit else self.ln_f / self.walkers

    def time_per_bin(self, step: int) -> float:
        """1/t's t at `step` (``time_per_bin``)."""
        return time_per_bin(self.visits, self.clock_start, self.per_visit, step)


def time_per_bin(visits: torch.Tensor | np.ndarray, clock_start: float, per_visit: bool, step: int) -> float:
    """1/t's t of a window with run visits (n_x, n_y): walker visits per visited bin since
    `clock_start` visits; under the per-step rule (`per_visit` False), steps per visited bin since
    the start."""
    visited = max(1, int((visits > 0).sum()))
    return (float(visits.sum()) - clock_start if per_visit else step) / visited


def wl_accept(ln_g: torch.Tensor, ix_old: torch.Tensor, iy_old: torch.Tensor, ix_new: torch.Tensor,
              iy_new: torch.Tensor, inside: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Wang-Landau acceptance min(1, g(old) / g(new)) for proposals inside the window: (B,) bool."""
    ln_ratio = ln_g[ix_old, iy_old] - ln_g[ix_new, iy_new]
    return inside & (torch.log(uniform) < ln_ratio)


def deposit(est: Estimate, ix: torch.Tensor, iy: torch.Tensor) -> None:
    """Add ln f to ln g and one visit to the histograms at each walker's bin (repeats add up).

    ln f per walker visit: the estimate gains what every walker saw, so M walkers build it M times
    faster (docs/convergence.md, "Walkers and convergence"). Runs begun before schema 4 add ln f / M (M =
    est.walkers: one step of all walkers raised ln g by ln f, as one walker would) and keep that."""
    flat = ix * est.ln_g.shape[1] + iy
    ones = torch.ones_like(flat, dtype=torch.float64)
    est.hist.view(-1).index_add_(0, flat, ones)
    est.visits.view(-1).index_add_(0, flat, ones)
    est.ln_g.view(-1).index_add_(0, flat, ones * est.visit_increment())


def record_y(est: Estimate, ix: torch.Tensor, iy_grid: torch.Tensor, inside: torch.Tensor) -> None:
    """Count each walker's y in the recorded y histogram: walkers in local x bins ix (B,) with y
    bins iy_grid (B,) of the grid's y axis (``Axis.index``: -1 or n_y outside it, not counted);
    `inside` (B,) bool: False for walkers outside the window (WLMD's soft walls), not counted.
    P(y | x) is exact for any bias that depends on x alone, so every sample counts whatever the
    schedule, a converged window's too."""
    n_y = est.y_hist.shape[1]
    counts = ((iy_grid >= 0) & (iy_grid < n_y) & inside).double()
    flat = ix * n_y + iy_grid.clamp(0, n_y - 1)
    est.y_hist.view(-1).index_add_(0, flat, counts)


def mark_crossings(marks: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> None:
    """Count the x edges the walkers crossed in one step, from local x bins `before` to `after`
    (B,) each, into `marks` (n_x,): +1 at the lower bin and -1 at the upper one of each move, so
    that the cumulative sum counts every edge in between (``fold_crossings``)."""
    moved = (before != after).double()
    marks.index_add_(0, torch.minimum(before, after), moved)
    marks.index_add_(0, torch.maximum(before, after), -moved)


def fold_crossings(est: Estimate, marks: torch.Tensor) -> None:
    """Add the crossings `marks` (n_x,) gathered since the last fold (``mark_crossings``) to
    est.edge_crossings (n_x - 1,) and clear them."""
    est.edge_crossings += marks.cumsum(0)[:-1]
    marks.zero_()


def level_unvisited(ln_g: torch.Tensor, visits: torch.Tensor) -> None:
    """Give every never-visited bin of ln_g (n_x, n_y) the lowest ln g among its nearest visited
    bins (4-neighbours, spreading outward ring by ring), in place; visited bins keep theirs.

    With ln f per walker visit, visited bins rise by thousands of units while walkers explore, and a
    bin first entered later would start at 0: a trap that holds every walker that falls in until its
    own deposits catch up (under WLMC nothing but its own visits raises it), and at a small ln f that
    is never (box n = 40, 1,024 walkers: the top window held at ln f 1.2e-4 for 500,000 steps; with
    the leveling it converged at 99,700). Level with its neighbours, a new bin is no deeper than they
    are. (Leveled with the highest neighbour instead, one window of the same run was still 90 off
    after 300,000 steps.)"""
    visited = visits > 0
    if bool(visited.all()) or not bool(visited.any()):
        return
    level = torch.where(visited, ln_g, math.inf)
    for _ in range(sum(ln_g.shape)):
        padded = torch.nn.functional.pad(level[None], (1, 1, 1, 1), mode="constant", value=math.inf)[0]
        around = torch.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]).amin(dim=0)
        grown = torch.where(torch.isinf(level), around, level)
        if torch.equal(grown, level):
            break
        level = grown
    ln_g.copy_(torch.where(visited | torch.isinf(level), ln_g, level))


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


def _kernel_targets(ix: torch.Tensor, iy: torch.Tensor, shape: tuple[int, int], radius: int) -> torch.Tensor:
    """Flat indices of the bins a kernel of radius R centred on bins (ix, iy) (B,) covers, mirrored
    into the window at its edges: (B, (2R + 1)^2), x offset major."""
    n_x, n_y = shape
    offsets = torch.arange(-radius, radius + 1, device=ix.device)
    kx = reflect(ix[:, None] + offsets, n_x)                    # (B, 2R + 1)
    ky = reflect(iy[:, None] + offsets, n_y)
    return (kx[:, :, None] * n_y + ky[:, None, :]).reshape(len(ix), -1)


@dataclass(frozen=True)
class KernelTable:
    """The WLMD deposit of a walker in each bin of a window (N = n_x n_y bins, flat index
    ix n_y + iy): the bins it reaches, `targets` (N, (2R + 1)^2), and their weights (N, (2R + 1)^2),
    per unit of ln f / M; and what its visit adds to the stage histogram, `visit_weight` (N,)
    (1 / the bin's reachable fraction). Built by ``kernel_table`` and ``scaled_table``, read by ``deposit_kernel``."""

    targets: torch.Tensor
    weights: torch.Tensor
    visit_weight: torch.Tensor


def kernel_table(shape: tuple[int, int], kernel: torch.Tensor, edge_scale: torch.Tensor | None = None,
                 fraction: torch.Tensor | None = None) -> KernelTable:
    """The Gaussian kernel (2R + 1,) in x times itself in y, mirrored at the window's x edges and
    the grid's y edges: a flat histogram then raises every bin equally (the folded kernel is
    symmetric with unit row sums), where a cut kernel would under-fill the edge bins and bias ln g.
    With `edge_scale` or `fraction`: ``scaled_table`` of that."""
    n_x, n_y = shape
    radius = (kernel.numel() - 1) // 2
    bins = torch.arange(n_x * n_y, device=kernel.device)
    targets = _kernel_targets(bins // n_y, bins % n_y, shape, radius)
    weights = (kernel[:, None] * kernel[None, :]).reshape(1, -1).expand(len(bins), -1).contiguous()
    mirrored = KernelTable(targets, weights, torch.ones(n_x * n_y, dtype=torch.float64, device=kernel.device))
    return mirrored if edge_scale is None and fraction is None else scaled_table(mirrored, edge_scale, fraction)


def scaled_table(mirrored: KernelTable, edge_scale: torch.Tensor | None, fraction: torch.Tensor | None) -> KernelTable:
    """The mirrored kernel table (``kernel_table``) fitted to the region walkers reach.

    With `edge_scale` (``reachable_scale``: d > 0 on the reachable region R, 0 elsewhere) the
    mirror's property holds at the edges of R inside the grid too (on a 2-D grid the reachable y
    range at each x is a band, and no mirror fits its edges): the weight from bin a to bin b of R
    is d_a K_ab d_b, symmetric with unit row sums over R. Bins outside R still get K_ab d_a (d = 1
    for a walker outside R), so a bin first entered later starts level with its neighbours (at
    ln g = 0 it would trap walkers until it caught up).

    With `fraction` (``reach_fraction``, (n_x, n_y)) a visit of bin a counts 1 / f_a, in the
    deposit and in the stage histogram: walkers spread evenly over the reachable part of a bin
    visit a bin that is only part reachable less often, and this keeps ln g an estimate per unit
    of reachable area (``reach_fraction`` says why)."""
    weights, visit_weight = mirrored.weights, mirrored.visit_weight
    if edge_scale is not None:
        factor = torch.where(edge_scale > 0, edge_scale, 1.0).reshape(-1)
        weights = weights * factor[:, None] * factor[mirrored.targets]
    if fraction is not None:
        visit_weight = 1.0 / fraction.reshape(-1)
        weights = weights * visit_weight[:, None]
    return KernelTable(mirrored.targets, weights, visit_weight)


def deposit_kernel(est: Estimate, ix: torch.Tensor, iy: torch.Tensor, inside: torch.Tensor, table: KernelTable,
                   accuracy: torch.Tensor | None = None, offsets: tuple[torch.Tensor, torch.Tensor] | None = None,
                   in_walls: torch.Tensor | None = None) -> None:
    """Wang-Landau molecular dynamics update: ln g += (ln f / M) x the kernel `table`'s deposit
    (``kernel_table``) of each walker inside the window; the histograms count single bins, the
    stage histogram with the table's visit weight. `offsets`: the walkers' positions inside their
    bins along x and y (B,) each, in [0, 1), summed with their squares (``Estimate.offset_moments``).
    Walkers (B,) outside the window (in the soft walls) deposit nothing: they are weighted by 0
    rather than filtered out (no data-dependent shapes, so no device synchronisation per step).
    Except those flagged `in_walls` (B,) bool: they raise ln g at their bin (ix, iy, clamped to the
    window: the edge bin they left) as if inside, and count in no histogram.

    Why: the force past a window's edge is the estimate's slope at its edge bin. Where that bin's
    ln g lags, the slope drives walkers into the walls, where they deposit nothing, so it lags for
    good: on the MNIST CNN window 0's walkers spent 22 to 31 % of their steps in its lower wall, the
    edge bin 19 to 21 units below the next (``[sampler] wall_deposits``)."""
    own = ix * est.ln_g.shape[1] + iy
    counts = inside.to(torch.float64)                           # (B,) 1 inside, 0 in the walls
    raising = counts if in_walls is None else (inside | in_walls).to(torch.float64)
    share = raising[:, None] * table.weights[own].mul(est.visit_increment())   # (B, (2R + 1)^2)
    est.ln_g.view(-1).index_add_(0, table.targets[own].reshape(-1), share.reshape(-1))
    est.hist.view(-1).index_add_(0, own, counts * table.visit_weight[own])
    est.visits.view(-1).index_add_(0, own, counts)
    if accuracy is not None and est.accuracy_sum is not None:
        est.accuracy_sum.view(-1).index_add_(0, own, counts * accuracy.double())
    moments = est.offset_moments()
    if offsets is not None and moments is not None:
        u_x, u_y = (torch.where(inside, u.double(), 0.0) for u in offsets)    # where, not x 0: a wall walker's may be inf
        for total, value in zip(moments, (u_x, u_y, u_x * u_x, u_y * u_y)):
            total.view(-1).index_add_(0, own, value)


def reachable_scale(visits: torch.Tensor, mirrored: KernelTable, start: torch.Tensor | None = None,
                    tolerance: float = 1e-10, max_iterations: int = 100_000) -> torch.Tensor:
    """Symmetric Sinkhorn scaling of the `mirrored` kernel table (``kernel_table``) to the reachable
    region R, the bins visited so far (the region a task's CVs can reach is not known in advance):
    d (n_x, n_y) with d_a sum_{b in R} K_ab d_b = 1 for every bin a of R, and 0 outside R.

    d is 1 wherever the kernel does not reach past R, and grows towards R's edges; it varies
    smoothly there, so the deposits stay smooth (putting the missing share on the walker's own bin
    would also give unit row sums, but its sharp deposits feed an alternating mode of ln g along
    the edge that the central-difference forces cannot see, and nothing then removes it).
    The iteration d <- sqrt(d / K d) converges for any kernel with a positive diagonal; `start`
    (the previous scaling) makes a region grown by a few bins cost a few iterations."""
    n_x, n_y = visits.shape
    region = (visits > 0).view(-1)
    d = torch.zeros(n_x * n_y, dtype=torch.float64, device=visits.device)
    members = region.nonzero().squeeze(1)                       # (N_R,)
    if members.numel() == 0:
        return d.view(n_x, n_y)
    targets = mirrored.targets[members]                         # (N_R, (2R + 1)^2)
    weight = mirrored.weights[members] * region[targets]        # K restricted to R
    d_r = torch.ones(len(members), dtype=torch.float64, device=visits.device)
    if start is not None:
        previous = start.view(-1)[members]
        d_r = torch.where(previous > 0, previous, d_r)
    for _ in range(max_iterations):
        d[members] = d_r
        row = d_r * (weight * d[targets]).sum(dim=1)            # row sums of d K d over R
        if float((row - 1).abs().max()) < tolerance:
            break
        d_r = d_r / row.sqrt()
    else:
        raise RuntimeError(f"reachable_scale: no convergence in {max_iterations} iterations")
    return d.view(n_x, n_y)


# A bin's reachable fraction is estimated from at least this many visits (the mean offset of n
# uniform visits scatters by 1 / sqrt(12 n): 3 % of the fraction at 100), and never below the floor
# (the visits of a bin of fraction f count 1 / f).
FRACTION_MIN_VISITS = 100
FRACTION_FLOOR = 0.02


def reach_fraction(visits: torch.Tensor, moments: tuple[torch.Tensor, ...],
                   grid_ends_x: tuple[bool, bool] = (False, False)) -> torch.Tensor:
    """The part of each bin that walkers can reach, estimated from where they were inside it:
    (n_x, n_y), 1 except in bins at an edge of the visited region R inside the window. `moments`
    (``Estimate.offset_moments``): sum u_x, sum u_y, sum u_x^2, sum u_y^2 over each bin's visits,
    u the offset inside the bin in bin widths.

    The reachable region of the CVs rarely ends on a bin edge. In a bin cut by its limit, WLMD's
    walkers (spread evenly by a converged bias) fill only the reachable part, so a Wang-Landau
    ln g of the whole bin is the log of that part's area, lower than its neighbours' by ln f.
    The forces interpolate ln g between bin centres and would carry that step into the
    neighbouring bins (at f = 1/3 they bent S by 0.3 there). So WLMD keeps ln g per unit of
    reachable area (a visit of the bin counts 1 / f: ``scaled_table``) and the run file reports the
    bin's ln g + ln f (``bin_ln_g``).

    Along an axis, a bin of R may be cut on a side where its neighbour is in the window but not in
    R, or where it is the grid's last bin (the limit may lie inside it, and then no walker goes past
    the grid's edge): the grid's y ends, and its x ends where `grid_ends_x` (low, high) says the
    window's x edges are the grid's (a window's other x edges continue in the next window). With t
    the offset from the other side (t = u for a cut above, 1 - u below), the walkers' density is
    taken linear on the reachable part [0, f): its two moments E t = f (1/2 + s/12) and
    E t^2 = f^2 (1/3 + s/12) give f^2 - 6 f E t + 6 E t^2 = 0, f = 3 E t - sqrt(9 (E t)^2 - 6 E t^2).
    The slope s matters: where walkers enter a bin from one side only (the front of the region
    while it is being explored, with ln f still large) their density falls steeply across it, and
    the mean alone (f = 2 E t) would take that for a cut; it then raised the bin further and
    drove walkers out of the window. The linear model gives f = 1 for a whole bin under any linear
    tilt, at least 1 under exponential ones, and no root (whole) for steeper ones. f is clipped to
    [FRACTION_FLOOR, 1]. A bin open on both sides or neither along an axis counts whole along it;
    the fraction is the product over the two axes. Bins with fewer than FRACTION_MIN_VISITS visits
    count whole."""
    region = visits > 0
    count = visits.clamp(min=1)
    fraction = torch.ones_like(visits)
    for axis, (low_end, high_end) in enumerate((grid_ends_x, (True, True))):
        first, second = moments[axis] / count, moments[2 + axis] / count           # E u, E u^2
        r = region.T if axis == 0 else region                                      # the axis last
        open_above, open_below = torch.zeros_like(r), torch.zeros_like(r)
        open_above[:, :-1], open_above[:, -1] = ~r[:, 1:], high_end
        open_below[:, 1:], open_below[:, 0] = ~r[:, :-1], low_end
        if axis == 0:
            open_above, open_below = open_above.T, open_below.T
        cut_above, cut_below = open_above & ~open_below, open_below & ~open_above
        t1 = torch.where(cut_below, 1 - first, first)                              # E t
        t2 = torch.where(cut_below, 1 - 2 * first + second, second)                # E t^2
        discriminant = 9 * t1 * t1 - 6 * t2
        f = torch.where(discriminant >= 0, 3 * t1 - discriminant.clamp(min=0).sqrt(), 1.0)
        f = torch.where(cut_above | cut_below, f.clamp(FRACTION_FLOOR, 1.0), 1.0)
        fraction = fraction * f
    return torch.where(region & (visits >= FRACTION_MIN_VISITS), fraction, 1.0)


def bin_ln_g(ln_g: torch.Tensor, fraction: torch.Tensor | None) -> torch.Tensor:
    """ln g of whole bins from WLMD's ln g per unit of reachable area (``reach_fraction``)."""
    return ln_g if fraction is None else ln_g + torch.log(fraction)


def entropy_slopes(ln_g: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, x_width: float,
                   y_width: float, region: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """dS/dx and dS/dy of the estimate at fractional bin coordinates fx, fy (B,) (bin k spans
    [k, k + 1), its centre is k + 1/2): central differences of ln_g (n_x, n_y) at bin centres
    (one-sided at the edges), interpolated bilinearly between centres; positions beyond the
    outermost centres take the edge value. Returns two (B,) float64 tensors.

    With `region` (n_x, n_y) bool (``reachable_scale`` > 0), bins outside it count as beyond an
    edge: differences are one-sided where a neighbour is outside, and each slope is interpolated
    from the centres inside that have a neighbour inside along its axis (renormalised; none such
    gives slope 0, the soft walls still act).

    One y bin (y recorded): the same numbers from the x axis alone (``x_slopes``), dS/dy zero."""
    n_x, n_y = ln_g.shape
    if n_y == 1:
        return (x_slopes(ln_g[:, 0], fx, x_width, None if region is None else region[:, 0]),
                torch.zeros(fx.shape, dtype=torch.float64, device=fx.device))
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
    up_i, down_i = (i + 1).clamp(max=n_x - 1), (i - 1).clamp(min=0)
    up_j, down_j = (j + 1).clamp(max=n_y - 1), (j - 1).clamp(min=0)
    weight_x = weight_y = weight
    if region is not None:
        inside = region.reshape(-1)
        up_i = torch.where(inside[up_i * n_y + j], up_i, i)
        down_i = torch.where(inside[down_i * n_y + j], down_i, i)
        up_j = torch.where(inside[i * n_y + up_j], up_j, j)
        down_j = torch.where(inside[i * n_y + down_j], down_j, j)
        centre = inside[i * n_y + j]

        def renormalised(usable: torch.Tensor) -> torch.Tensor:
            w = weight * usable
            return w / w.sum(dim=1, keepdim=True).clamp(min=1e-300)
        weight_x, weight_y = renormalised(centre & (up_i > down_i)), renormalised(centre & (up_j > down_j))

    def central(up: torch.Tensor, down: torch.Tensor, at_up, at_down, width: float) -> torch.Tensor:
        return (flat[at_up] - flat[at_down]) / ((up - down).clamp(min=1) * width)

    d_dx = central(up_i, down_i, up_i * n_y + j, down_i * n_y + j, x_width)
    d_dy = central(up_j, down_j, i * n_y + up_j, i * n_y + down_j, y_width)
    return (weight_x * d_dx).sum(dim=1), (weight_y * d_dy).sum(dim=1)


def x_slopes(ln_g: torch.Tensor, fx: torch.Tensor, x_width: float, region: torch.Tensor | None = None) -> torch.Tensor:
    """``entropy_slopes`` of a one-column estimate ln_g (n_x,) (region (n_x,) bool or None) at
    fractional bins fx (B,): dS/dx (B,) float64. Half the work of the 2-D interpolation, which
    cost a fifth of a WLMD step of the demo's spiral net."""
    n_x = ln_g.shape[0]
    cx = (fx.double() - 0.5).clamp(0, n_x - 1)
    i0 = cx.floor().long().clamp(max=max(n_x - 2, 0))
    tx = cx - i0
    i = torch.stack([i0, i0 + 1], dim=1).clamp_(max=n_x - 1)                   # (B, 2) the two centres
    weight = torch.stack([1 - tx, tx], dim=1)
    up, down = (i + 1).clamp(max=n_x - 1), (i - 1).clamp(min=0)
    if region is not None:
        up = torch.where(region[up], up, i)
        down = torch.where(region[down], down, i)
        usable = weight * (region[i] & (up > down))
        weight = usable / usable.sum(dim=1, keepdim=True).clamp(min=1e-300)
    slope = (ln_g[up] - ln_g[down]) / ((up - down).clamp(min=1) * x_width)
    return (weight * slope).sum(dim=1)


def wall_slope(values: torch.Tensor, lo: float, hi: float, strength: float) -> torch.Tensor:
    """Derivative of the soft walls c (lo - v)^2 below lo and c (v - hi)^2 above hi: (B,)."""
    return 2.0 * strength * (torch.relu(values - hi) - torch.relu(lo - values))


def deep_bins(ln_g: torch.Tensor, visits: torch.Tensor, depth: float) -> torch.Tensor:
    """Visited bins whose ln g lies more than `depth` below the highest ln g of the visited bins of
    their own x row: (n_x, n_y) bool. At that x such a bin holds less than e^-depth of the weight
    of the row's largest bin."""
    visited = visits > 0
    row_top = torch.where(visited, ln_g, -math.inf).amax(dim=1, keepdim=True)
    return visited & (ln_g < row_top - depth)


def trapped_bins(hist: torch.Tensor, visits: torch.Tensor, ln_g: torch.Tensor, depth: float, flat: float) -> torch.Tensor:
    """Deep bins (``deep_bins``) the walkers keep entering: stage visits above mean H / `flat`, the
    mean over the bins the flat test counts. (n_x, n_y) bool.

    A bin that is deep because S is small there is rarely visited; one visited more than the rest
    is deep because its ln g is too *low*: a trap, which a walker enters and cannot leave. With ln f
    per walker visit a bin entered rarely while thousands of walkers raise the rest falls behind by
    hundreds of units (box n = 40, 4,096 walkers: the highest-E2 column of every window 248 too low,
    4.5 times the mean visits), and left out of the flat test as a fringe bin it would let ln f fall
    until the trap could never fill."""
    deep = deep_bins(ln_g, visits, depth)
    counted = (visits > 0) & ~deep
    if not bool(deep.any()) or not bool(counted.any()):
        return torch.zeros_like(deep)
    return deep & (hist > float(hist[counted].mean()) / flat)


def decided_bins(visits: torch.Tensor, ln_g: torch.Tensor | None = None, depth: float = math.inf) -> torch.Tensor | None:
    """The bins a flatness measure counts: visited, and not more than `depth` below the top of
    their x row (``deep_bins``; needs `ln_g`), (n_x, n_y) bool; None until every x row of the
    window was visited."""
    if not bool((visits.sum(dim=1) > 0).all()):
        return None
    counted = visits > 0
    if ln_g is not None and math.isfinite(depth):
        counted = counted & ~deep_bins(ln_g, visits, depth)
    return counted


def flatness(hist: torch.Tensor, visits: torch.Tensor, ln_g: torch.Tensor | None = None,
             depth: float = math.inf) -> float:
    """min H / mean H over the visited bins that are not more than `depth` below the top of their
    x row (``deep_bins``; needs `ln_g`); 0 until every x row of the window was visited.

    The x range of a window is known in advance, its y range is not: like the "all bins visited"
    rule of Belardinelli and Pereyra, ln f may not fall before walkers have reached both ends of
    the window, or the unexplored rows would never be filled."""
    counted = decided_bins(visits, ln_g, depth)
    if counted is None or not bool(counted.any()):
        return 0.0
    mean = float(hist[counted].mean())
    return float(hist[counted].min()) / mean if mean > 0 else 0.0


RARE = 0.1     # a visited bin is rare below this fraction of the median visits of the visited bins


def visit_diagnostics(hist: torch.Tensor, visits: torch.Tensor, reach: torch.Tensor | None = None) -> tuple[float, float]:
    """(flatness over every visited bin: min H / mean H of the stage histogram; the fraction of
    visited bins whose run visits are below RARE x their median). (0, nan) before any visit.
    With `reach` (``reach_fraction``) visits count per unit of reachable area: a bin the limit
    cuts to a tenth is not rare for being visited a tenth as often."""
    visited = visits > 0
    if not bool(visited.any()):
        return 0.0, float("nan")
    h = hist[visited]
    mean = float(h.mean())
    v = (visits if reach is None else visits / reach)[visited]
    rare = float((v < RARE * v.median()).double().mean())
    return (float(h.min()) / mean if mean > 0 else 0.0), rare


def recent_flatness(recent: torch.Tensor, visits: torch.Tensor, ln_g: torch.Tensor, reach: torch.Tensor | None = None,
                    depth: float = math.inf) -> float:
    """How flat the visits `recent` (n_x, n_y) of a stretch of the run are: min(min H / mean H,
    mean H / max H) over the visited bins (``visits`` > 0) that are not `depth` below the top of
    their x row (``deep_bins``); 0 until every x row was visited, nan without visits. With `reach`
    (``reach_fraction``) visits count per unit of reachable area.

    At a fixed ln g the walkers visit bin b in proportion to g(b) / g_est(b): a stretch whose
    visits are flat within a factor F has ln g right within ln F there, whatever ln f did, so long
    as its walkers crossed between the bins in it (``Estimate.recent_crossings``)."""
    counted = decided_bins(visits, ln_g, depth)
    if counted is None:
        return 0.0
    h = (recent if reach is None else recent / reach)[counted]
    mean = float(h.mean()) if h.numel() else 0.0
    if mean <= 0:
        return float("nan")
    return min(float(h.min()) / mean, mean / float(h.max()))


def ln_g_change(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> float:
    """max |(after - before) - c| over the bins of `mask`, c their mean change: how much the shape
    of ln g moved (a converged estimate only shifts by a constant)."""
    if not bool(mask.any()):
        return float("nan")
    d = (after - before)[mask]
    return float((d - d.mean()).abs().max())
