"""Joining windows: the constant between neighbouring windows' ln g, and whether they agree.

The analysis stitches a run's windows with it (``analysis.landscape.join_windows``), and the
engine asks it before it calls a run converged (``Engine.settle``): windows that each stopped
moving but contradict each other in their overlap are not a converged landscape. Numpy on the run
file's records (``records.RunRecord``); no MPI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import SamplerConfig
from .records import RunRecord
from .wl import deep_bins


def edge_rows(sampler: SamplerConfig) -> int:
    """How many x rows at a window's inner edge its own estimate may bias: 1 (walkers are turned
    back there), and for WLMD the kernel's width rounded up, ceil(`kernel_width`): the kernel is
    mirrored at the edge and the soft walls act there, and on the MNIST CNN (kernel 2 bins) the
    second row from window 0's top edge stood 4 units off the next window's estimate after 16,000
    steps where the rows inside agreed within about 1.5 (docs/results.md)."""
    return max(1, math.ceil(sampler.kernel_width)) if sampler.kind == "wlmd" else 1


class JoinFailed(ValueError):
    """Two neighbouring windows cannot be joined (the message names them and why)."""


@dataclass
class PairJoin:
    """How windows k and k+1 were stitched."""

    windows: tuple[int, int]
    common_bins: int          # bins both windows visited in their overlap
    offset: float             # constant added to window k+1 relative to window k
    residual_rms: float       # visit-weighted RMS of the mismatch after the offset
    equilibrium_mismatch: float  # max over interior overlap rows of |<y>_k - <y>_{k+1}|, each
                                 # window's own equilibrium y: what the science depends on (with one
                                 # y bin, of the hard accuracy recorded per bin, where there is one)
    y_distance: float = float("nan")  # y recorded: max over interior overlap rows of the total variation
                                      # distance between the windows' P(y | x) (``y_distances``)


# A row's P(y | x) is compared between two windows only where each holds at least this many
# recorded visits (the distance of two samples of one distribution over k bins is about
# sqrt(k / n) for n independent visits, and neighbouring visits of a walker are not independent).
Y_COMPARE_MIN_VISITS = 1000


def y_distances(hist_a: np.ndarray, hist_b: np.ndarray) -> np.ndarray:
    """Total variation distance 1/2 sum_y |P_a(y) - P_b(y)| between the recorded y distributions
    of two windows in each row of their overlap: hist_a, hist_b (n_rows, n_y) recorded visits;
    (n_rows,), nan where either row has fewer than Y_COMPARE_MIN_VISITS visits."""
    na, nb = hist_a.sum(axis=1), hist_b.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 0.5 * np.abs(hist_a / na[:, None] - hist_b / nb[:, None]).sum(axis=1)
    return np.where((na >= Y_COMPARE_MIN_VISITS) & (nb >= Y_COMPARE_MIN_VISITS), d, np.nan)


def recorded_view(rec: RunRecord, win) -> tuple[np.ndarray, np.ndarray]:
    """A window's estimate on the (x, y) grid: ln g (n_x, n_y) and its visits (n_x, n_y). Flattened:
    as stored. Recorded: ln g(x) + ln P(y | x) and the recorded visits, -inf where none."""
    if not rec.y_recorded:
        return win.ln_g, win.visits
    rows = win.y_hist.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ln_p = np.log(win.y_hist / rows)
    return np.where(win.y_hist > 0, win.ln_g[:, :1] + ln_p, -np.inf), win.y_hist


def join_pairs(rec: RunRecord, depth: float, band: int, min_common: int = 5, max_residual: float = 0.5,
               max_y_distance: float = 0.25) -> tuple[list[float], list[PairJoin]]:
    """The constant of every window relative to window 0 ((n_windows,) offsets, window 0's 0) and
    how each neighbouring pair joined; ``JoinFailed`` for a pair that cannot be joined.

    Window k+1 is shifted by the visit-weighted mean of ln g_k - ln g_{k+1} over the bins both
    visited in their overlap (the least-squares constant; weights v_k v_{k+1} / (v_k + v_{k+1})),
    leaving out `band` rows at each window's inner edge (walkers are turned back there, which
    biases windowed Wang-Landau at the edges) and the bins either window left out of its flatness
    test, more than `depth` below the top of their x row (``deep_bins``). A pair with fewer than
    `min_common` common bins, or whose weighted residual RMS after the shift exceeds `max_residual`,
    is refused. With y recorded, their P(y | x) must also agree in every interior overlap row
    within total variation distance `max_y_distance` (``y_distances``)."""
    y = 0.5 * (rec.y_edges[1:] + rec.y_edges[:-1])
    deep = [deep_bins(torch.as_tensor(w.ln_g), torch.as_tensor(w.visits), depth).numpy() for w in rec.windows]
    offsets = [0.0]
    pairs = []
    deep = [deep_bins(torch.as_tensor(w.ln_g), torch.as_tensor(w.visits), depth).numpy() for w in rec.windows]
    offsets = [0.0]
    pairs = []
    for k in range(rec.n_windows - 1):
        a, b = rec.windows[k], rec.windows[k + 1]
        lo, hi = b.x_bins[0], a.x_bins[1]
        if hi <= lo:
            raise JoinFailed(f"windows {k} and {k + 1} do not overlap in x")
        va, vb = a.visits[lo - a.x_bins[0]: hi - a.x_bins[0]], b.visits[: hi - lo]
        ga, gb = a.ln_g[lo - a.x_bins[0]: hi - a.x_bins[0]], b.ln_g[: hi - lo]
        common = (va > 0) & (vb > 0) & ~deep[k][lo - a.x_bins[0]: hi - a.x_bins[0]] & ~deep[k + 1][: hi - lo]
        if hi - lo > 2 * band:
            common[:band] = common[hi - lo - band:] = False
        n_common = int(common.sum())
        if n_common < min_common:
            raise JoinFailed(f"windows {k} and {k + 1} share {n_common} visited bins in their overlap "
                                f"(at least {min_common} needed to join them); run longer or widen the overlap")
        w = va[common] * vb[common] / (va[common] + vb[common])
        d = (ga - gb)[common]
        shift = float(np.sum(w * d) / np.sum(w))
        rms = float(np.sqrt(np.sum(w * (d - shift) ** 2) / np.sum(w)))
        if rms > max_residual:
            raise JoinFailed(f"windows {k} and {k + 1} disagree in their overlap: residual RMS {rms:.3f} "
                                f"> {max_residual} after the best constant; the estimates are inconsistent "
                                "(not converged?)")
        offsets.append(offsets[-1] + shift)
        rows = range(band, hi - lo - band) if hi - lo > 2 * band else range(hi - lo)
        in_a, in_b = slice(lo - a.x_bins[0], hi - a.x_bins[0]), slice(0, hi - lo)
        if rec.y_recorded:
            mismatch, distance = _compare_recorded(rec, k, a.y_hist[in_a], b.y_hist[in_b], list(rows), lo, y,
                                                   max_y_distance)
        else:
            ya, yb = (_row_values(win, rows_of, y) for win, rows_of in ((a, in_a), (b, in_b)))
            diffs = [abs(row_mean(ga[i], va[i], ya[i]) - row_mean(gb[i], vb[i], yb[i])) for i in rows]
            mismatch = float(np.nanmax(diffs)) if diffs and np.isfinite(diffs).any() else float("nan")
            distance = float("nan")
        pairs.append(PairJoin((k, k + 1), n_common, shift, rms, mismatch, distance))

    return offsets, pairs


def _compare_recorded(rec: RunRecord, k: int, hist_a: np.ndarray, hist_b: np.ndarray, rows: list[int], lo: int,
                      y: np.ndarray, max_distance: float) -> tuple[float, float]:
    """Windows k and k+1's recorded y in the interior rows of their overlap (hist_a, hist_b
    (n_rows, n_y), global row lo + i): the largest |<y>_k - <y>_{k+1}| and the largest total
    variation distance (``y_distances``); JoinFailed naming the rows beyond `max_distance`."""
    if not rows:
        return float("nan"), float("nan")
    hist_a, hist_b = hist_a[rows], hist_b[rows]
    distance = y_distances(hist_a, hist_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_a, mean_b = (h @ y / h.sum(axis=1) for h in (hist_a, hist_b))
    diffs = np.where(np.isfinite(distance), np.abs(mean_a - mean_b), np.nan)
    bad = [i for i, d in zip(rows, distance) if d > max_distance]
    if bad:
        centres = 0.5 * (rec.x_edges[1:] + rec.x_edges[:-1])
        where = ", ".join(f"{rec.x_label} {centres[lo + i]:.3g} ({d:.2f})" for i, d in zip(rows, distance) if i in bad)
        raise JoinFailed(f"windows {k} and {k + 1} record different distributions of {rec.y_label} in their overlap: "
                        f"total variation distance above {max_distance} at {where}; the walkers of one window have not "
                        "reached equilibrium there (run longer)")
    finite = np.isfinite(distance)
    return (float(np.nanmax(diffs)) if finite.any() else float("nan"),
            float(np.nanmax(distance)) if finite.any() else float("nan"))


def _row_values(win, rows: slice, y: np.ndarray) -> np.ndarray:
    """What a window's equilibrium averages in each bin of `rows`: (n_rows, n_y), the y bin
    centres, or with one y bin the hard accuracy the window recorded there (nan without one)."""
    n_rows = len(win.visits[rows])
    if len(y) > 1:
        return np.broadcast_to(y, (n_rows, len(y)))
    if win.accuracy_sum is None:
        return np.full((n_rows, 1), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return win.accuracy_sum[rows] / win.visits[rows]


def row_mean(ln_g_row: np.ndarray, visits_row: np.ndarray, y: np.ndarray) -> float:
    """sum y e^S / sum e^S over the visited bins of one x row (nan if none); y is (n_y,), one
    value per bin (the bin centres, or any per-bin quantity)."""
    seen = visits_row > 0
    if not seen.any():
        return float("nan")
    w = np.exp(ln_g_row[seen] - ln_g_row[seen].max())
    return float(np.sum(w * y[seen]) / np.sum(w))


