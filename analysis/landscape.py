"""From window estimates to the science: the joined entropy S(x, y), equilibrium curves, SGD curves.

All inputs come through ``rewl.storage.RunStore``. Shapes: the global grid has n_x x bins and n_y y
bins; S and the visited mask are (n_x, n_y); per-x curves are (n_x,) with nan where undefined.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rewl.joining import JoinFailed, PairJoin, join_pairs, row_mean
from rewl.report import decide_depth, edge_rows
from rewl.storage import BaselineRecord, RunRecord, RunStore, StorageError


class AnalysisError(ValueError):
    """Inputs that cannot be analysed: bad files, mixed grids, windows that do not join."""


class JoinError(AnalysisError):
    """Two neighbouring windows of a run cannot be joined; `run` names the run (set by the caller
    that knows it), so that its windows can still be shown one by one."""

    run: str = ""


@dataclass
class Landscape:
    """The joined entropy of one run: S - max S over visited bins (-inf elsewhere)."""

    x_edges: np.ndarray       # (n_x + 1,)
    y_edges: np.ndarray       # (n_y + 1,)
    entropy: np.ndarray       # (n_x, n_y)
    visited: np.ndarray       # (n_x, n_y) bool
    pairs: list[PairJoin] = field(default_factory=list)
    x_label: str = "ln L_train"
    y_label: str = "y"
    accuracy: np.ndarray | None = None   # (n_x, n_y) mean hard test accuracy per bin, nan where unvisited
                                         # (runs whose y is a smoothed accuracy record it beside y)

    @property
    def x_centers(self) -> np.ndarray:
        return 0.5 * (self.x_edges[1:] + self.x_edges[:-1])

    @property
    def y_centers(self) -> np.ndarray:
        return 0.5 * (self.y_edges[1:] + self.y_edges[:-1])

    @property
    def one_y_bin(self) -> bool:
        """The grid does not resolve y: S(x) alone, and the equilibrium is the hard accuracy
        recorded per bin (``equilibrium_accuracy``), where there is one."""
        return len(self.y_edges) == 2


def read_run(path: str | Path) -> RunRecord:
    """A run record from a run directory or its run.h5, with errors that name the path."""
    path = Path(path)
    if not path.exists():
        raise AnalysisError(f"{path}: no such file or directory")
    store = RunStore(path.parent if path.is_file() else path)
    try:
        return store.read_run()
    except StorageError as exc:
        raise AnalysisError(str(exc)) from None


def read_baseline(path: str | Path) -> BaselineRecord:
    try:
        return RunStore.read_baseline(path)
    except StorageError as exc:
        raise AnalysisError(str(exc)) from None


def join_windows(rec: RunRecord, min_common: int = 5, max_residual: float = 0.5, max_y_distance: float = 0.25) -> Landscape:
    """Stitch the windows' ln g into one S on the global grid.

    The windows' constants come from ``rewl.joining.join_pairs``, which refuses (``JoinError``
    here) a pair that shares too few bins, disagrees beyond `max_residual` after the best constant
    or, with y recorded, records P(y | x) farther apart than `max_y_distance`: joining on a poor
    overlap silently bends S. Left out of the constants are the rows at each window's inner edge
    (``report.edge_rows``: the last row of window k and the first of window k+1, and for WLMD the
    kernel's width of rows), where walkers are turned back, which biases windowed Wang-Landau, and
    the bins either window's schedule left out of its flatness test, those more than the run's
    `decide_depth` below the top of their x row (``wl.deep_bins``): they hold less than e^-depth of
    their row, no integral along y sees them, and the run promises nothing about them (in the
    spiral study at 300,000 steps such bins, 380 to 570 below their row's top, made up 65 to 80 %
    of the residual of the joins they failed).
    Overlapping bins are then averaged, weighted by visits, each window's edge rows left to its
    neighbour (where the overlap is wide enough for both windows' edge rows).

    y recorded (``RunRecord.y_recorded``): the windows join on ln g(x), and
    S(x, y) = S(x) + ln P(y | x), P from the recorded visits of the windows that hold the row.
    """
    n_x, n_y = len(rec.x_edges) - 1, len(rec.y_edges) - 1
    depth, band = decide_depth(rec), edge_rows(rec)
    try:
        offsets, pairs = join_pairs(rec, depth, band, min_common, max_residual, max_y_distance)
    except JoinFailed as exc:
        raise JoinError(str(exc)) from None

    n_wl_y = rec.windows[0].ln_g.shape[1]          # 1 when y is recorded
    total = np.zeros((n_x, n_wl_y))
    weight = np.zeros((n_x, n_wl_y))
    y_total = np.zeros((n_x, n_y))
    with_accuracy = all(win.accuracy_sum is not None for win in rec.windows)
    acc_total = np.zeros((n_x, n_y))
    trusted = []                     # per window: its visits, 0 in its edge rows where the neighbour has the bin
    for k, win in enumerate(rec.windows):
        lo, hi = win.x_bins
        v = win.visits.copy()
        for neighbour, rows in ((k - 1, slice(0, band)), (k + 1, slice(hi - lo - band, hi - lo))):
            if 0 <= neighbour < rec.n_windows:
                n_lo, n_hi = rec.windows[neighbour].x_bins
                if min(hi, n_hi) - max(lo, n_lo) > 2 * band:       # the overlap holds both windows' edge rows
                    theirs = rec.windows[neighbour].visits[lo + rows.start - n_lo: lo + rows.stop - n_lo]
                    v[rows] = np.where(theirs > 0, 0.0, v[rows])
        trusted.append(v)
    for win, off, v in zip(rec.windows, offsets, trusted):
        lo, hi = win.x_bins
        total[lo:hi] += np.where(v > 0, (win.ln_g + off) * v, 0.0)
        weight[lo:hi] += v
        if rec.y_recorded:
            y_total[lo:hi] += np.where(v > 0, win.y_hist, 0.0)
        if with_accuracy:
            acc_total[lo:hi] += np.where(v > 0, win.accuracy_sum, 0.0)
    visited = weight > 0
    entropy = np.full((n_x, n_wl_y), -np.inf)
    entropy[visited] = total[visited] / weight[visited]
    if rec.y_recorded:                   # S(x, y) = S(x) + ln P(y | x)
        rows = y_total.sum(axis=1, keepdims=True)
        visited = visited & (y_total > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            entropy = np.where(visited, entropy + np.log(y_total / rows), -np.inf)
    if visited.any():
        entropy[visited] -= entropy[visited].max()
    accuracy = None
    if with_accuracy:
        accuracy = np.full((n_x, n_y), np.nan)
        accuracy[visited] = acc_total[visited] / weight[visited]
    return Landscape(rec.x_edges, rec.y_edges, entropy, visited, pairs, rec.x_label, rec.y_label, accuracy)


def equilibrium(land: Landscape) -> tuple[np.ndarray, np.ndarray]:
    """Per x bin: <y> = sum_y y e^S / sum_y e^S over visited y, and the max-entropy y. (n_x,) each;
    nan everywhere when the grid has one y bin (y is not resolved: S is S(x) alone)."""
    y = land.y_centers
    mean = np.full(land.entropy.shape[0], np.nan)
    top = np.full(land.entropy.shape[0], np.nan)
    if land.one_y_bin:
        return mean, top
    for i, (s, seen) in enumerate(zip(land.entropy, land.visited)):
        if not seen.any():
            continue
        mean[i] = row_mean(s, seen, y)               # log-sum-exp inside: no overflow at any S
        top[i] = float(y[seen][np.argmax(s[seen])])
    return mean, top


def equilibrium_accuracy(land: Landscape) -> np.ndarray | None:
    """Per x bin, the equilibrium hard test accuracy sum_y a(x, y) e^S / sum_y e^S, a the mean hard
    accuracy recorded in each bin: (n_x,), or None when the run recorded none."""
    if land.accuracy is None:
        return None
    return np.array([row_mean(s, seen, a) for s, seen, a in zip(land.entropy, land.visited, land.accuracy)])


@dataclass
class Curve:
    """A per-x-bin curve over independent samples: mean, standard error, sample count. (n_x,) each."""

    mean: np.ndarray
    stderr: np.ndarray
    count: np.ndarray


def sample_curve(samples: np.ndarray) -> Curve:
    """samples (n_samples, n_x) with nan where a sample has no value."""
    count = np.sum(np.isfinite(samples), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.nansum(samples, axis=0) / np.maximum(count, 1), np.nan)
        dev = np.where(np.isfinite(samples), samples - mean, 0.0)
        var = np.sum(dev ** 2, axis=0) / np.maximum(count - 1, 1)
        stderr = np.where(count > 1, np.sqrt(var / np.maximum(count, 1)), np.nan)
    return Curve(mean, stderr, count)


def check_same_grid(recs: list[RunRecord], names: list[str]) -> None:
    ref = recs[0]
    for rec, name in zip(recs[1:], names[1:]):
        if not (np.array_equal(rec.x_edges, ref.x_edges) and np.array_equal(rec.y_edges, ref.y_edges)):
            raise AnalysisError(f"{name}: its grid differs from {names[0]}'s; runs to combine must share a grid")


def equilibrium_over_runs(lands: list[Landscape]) -> tuple[Curve, Curve]:
    """Mean and standard error over independent runs of <y>(x) and of the max-entropy y(x)."""
    eq = [equilibrium(land) for land in lands]
    return sample_curve(np.array([e[0] for e in eq])), sample_curve(np.array([e[1] for e in eq]))


def sgd_curve(base: BaselineRecord, x_edges: np.ndarray, values: np.ndarray | None = None) -> Curve:
    """Mean y (or `values`, (runs, T) like base.y: the hard accuracy, say) per ln L_train bin over
    runs: each run's records in a bin are averaged first, so every run counts once per bin; the
    standard error is over runs."""
    values = base.y if values is None else values
    n_x = len(x_edges) - 1
    per_run = np.full((base.runs, n_x), np.nan)
    for r in range(base.runs):
        idx = np.searchsorted(x_edges, base.x[r], side="right") - 1
        ok = (idx >= 0) & (idx < n_x) & np.isfinite(values[r])
        sums = np.bincount(idx[ok], weights=values[r][ok], minlength=n_x)
        counts = np.bincount(idx[ok], minlength=n_x)
        per_run[r] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return sample_curve(per_run)


@dataclass
class Endpoint:
    """Where the SGD runs end, and the equilibrium at each run's own final train loss: one point
    of the equilibrium-vs-SGD plot.

    The advantage is the mean over runs of <y>(x_r) - y_r, with <y> interpolated at each run's
    final x_r: <y>(x) is steep and curved where SGD ends, so <y> at the mean x would not be the
    mean of <y>. Runs that end outside the x range where <y> was sampled are counted in
    `runs_outside` and left out of the means."""

    x: float                  # mean final ln L_train of all runs
    x_stderr: float
    runs: int                 # runs with a final x inside the sampled range (the means below)
    runs_outside: int         # runs that ended outside it
    sgd_y: float              # mean final y
    sgd_stderr: float
    eq_y: float               # mean of <y>(x_r)
    eq_stderr: float          # over runs, and the equilibrium's own standard error over seeds
    advantage: float          # mean of <y>(x_r) - y_r
    advantage_stderr: float
    sgd_accuracy: float = float("nan")   # the same for the hard test accuracy (runs whose y is a
    eq_accuracy: float = float("nan")    # smoothed accuracy)
    accuracy_advantage: float = float("nan")
    accuracy_advantage_stderr: float = float("nan")
    # the largest |<y>_k - <y>_{k+1}| in any overlap of any run (``PairJoin.equilibrium_mismatch``):
    # how much <y> depends on the window that computed it, a systematic error the seeds do not show
    window_disagreement: float = float("nan")

    @property
    def advantage_uncertainty(self) -> float:
        """The advantage's standard error and the windows' disagreement, in quadrature."""
        return float(np.hypot(self.advantage_stderr, np.nan_to_num(self.window_disagreement)))


def _at_runs(curve: Curve, x_centers: np.ndarray, x_runs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The curve and its standard error interpolated at each run's x (R,), and which runs lie
    inside the range of x where the curve is defined."""
    ok = np.isfinite(curve.mean)
    if not ok.any():
        return np.full(len(x_runs), np.nan), np.full(len(x_runs), np.nan), np.zeros(len(x_runs), dtype=bool)
    xs = x_centers[ok]
    inside = (x_runs >= xs[0]) & (x_runs <= xs[-1])
    value = np.interp(x_runs, xs, curve.mean[ok])
    se = np.interp(x_runs, xs, np.nan_to_num(curve.stderr[ok]))
    return value, se, inside


def _paired(eq: np.ndarray, eq_se: np.ndarray, sgd: np.ndarray) -> tuple[float, float, float, float, float]:
    """Means and standard errors of the equilibrium, of SGD and of their paired difference over
    runs; the difference's error adds the equilibrium's own (a mean, not independent per run)."""
    n = len(sgd)
    d = eq - sgd
    own = float(np.mean(eq_se)) if n else float("nan")
    return (float(np.mean(eq)) if n else float("nan"), float(np.hypot(_stderr(eq), own)),
            float(np.mean(sgd)) if n else float("nan"), float(np.mean(d)) if n else float("nan"),
            float(np.hypot(_stderr(d), own)))


def _stderr(values: np.ndarray) -> float:
    """Standard error of the mean of `values` (R,); nan for fewer than two."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def sgd_endpoint(base: BaselineRecord, x_edges: np.ndarray, eq: Curve, eq_accuracy: Curve | None = None) -> Endpoint:
    """The endpoint point of `base` against the equilibrium curves (x bins `x_edges`)."""
    final_x, final_y = base.x[:, -1], base.y[:, -1]
    centers = 0.5 * (x_edges[1:] + x_edges[:-1])
    eq_r, eq_se, inside = _at_runs(eq, centers, final_x)
    if eq_accuracy is not None and not np.isfinite(eq.mean).any():    # one y bin: the accuracy's range decides
        inside = _at_runs(eq_accuracy, centers, final_x)[2]
    n_all, n = base.runs, int(inside.sum())
    eq_y, eq_stderr, sgd_y, adv, adv_se = _paired(eq_r[inside], eq_se[inside], final_y[inside])
    end = Endpoint(float(np.mean(final_x)), _stderr(final_x), n, n_all - n, sgd_y, _stderr(final_y[inside]), eq_y,
                   eq_stderr, adv, adv_se)
    if eq_accuracy is not None:
        acc_r, acc_se, _ = _at_runs(eq_accuracy, centers, final_x)
        end.eq_accuracy, _, end.sgd_accuracy, end.accuracy_advantage, end.accuracy_advantage_stderr = _paired(
            acc_r[inside], acc_se[inside], base.accuracy[inside, -1])
    return end
