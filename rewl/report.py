"""``rewl info RUN``: a summary of a run file, read through RunStore."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp

from . import joining
from .config import Config, DeckError, SamplerConfig, ScheduleConfig, parse
from .schedule import MIN_CROSSINGS
from .storage import RunRecord, RunStore, StorageError
from .wl import deep_bins, reach_fraction, time_per_bin


def bins_text(count: int) -> str:
    """'1 bin', '36 bins'."""
    return f"{count} bin{'s' if count != 1 else ''}"


def open_run(path: str | Path) -> RunStore:
    """A RunStore for a run directory or for the path of its run.h5."""
    path = Path(path)
    return RunStore(path.parent if path.suffix == ".h5" else path)


def info(path: str) -> int:
    store = open_run(path)
    try:
        rec = store.read_run()
    except StorageError as exc:
        print(f"rewl: error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: {rec.status}, {rec.steps}/{rec.max_steps} steps, {rec.elapsed_seconds:.1f} s")
    failure = store.logged_failure()
    if failure:
        print(f"  FAILED after this checkpoint ({store.log_path}): " + " / ".join(failure))
    print(f"  task {rec.task} ({rec.n_params} parameters), sampler {rec.sampler}, {rec.n_windows} windows x "
          f"{rec.ranks_per_window} ranks x {rec.walkers_per_rank} walkers; deck {rec.deck_path}"
          + "".join(f" --set {o}" for o in rec.overrides))
    print(f"  grid x = {rec.x_label}: {bins_text(len(rec.x_edges) - 1)} in [{rec.x_edges[0]:g}, {rec.x_edges[-1]:g}]; "
          f"y = {rec.y_label}: {bins_text(len(rec.y_edges) - 1)} in [{rec.y_edges[0]:g}, {rec.y_edges[-1]:g}]")
    print("  " + units_line(rec))
    move_rate = rec.move_accepted.sum(axis=1) / np.maximum(1, rec.move_attempted.sum(axis=1))
    # wlmd has no acceptance: its column is the fraction of walker-steps inside the window
    rate_name = "  inside  " if rec.sampler == "wlmd" else "acceptance"
    print(f"  window  x range              ln f       stage        t  flat (all)   rare  d ln g  rflat  cross  visited  deep  "
          f"{rate_name}  init iters (s)")
    depth = decide_depth(rec)
    for k, w in enumerate(rec.windows):
        deep = int(deep_bins(torch.as_tensor(w.ln_g), torch.as_tensor(w.visits), depth).sum())
        lo, hi = w.x_bins
        mark = " converged" if w.converged else " settled" if w.settled else (" 1/t" if w.one_over_t else "")
        print(f"  {k:<6d}  [{rec.x_edges[lo]:7.3f}, {rec.x_edges[hi]:7.3f})  {w.ln_f:9.3e}  {w.stage:5d}  "
              f"{time_per_bin(w.visits, w.clock_start, w.per_visit, rec.steps):7.3g}  "
              f"{w.flatness:4.2f} ({_num(w.flatness_all, 2)})  {_num(w.rare_fraction, 3)}  {_num(w.ln_g_change, 3):>6}  "
              f"{_num(w.recent_flatness, 2):>5}  {_num(w.recent_crossings, 0):>5}  "
              f"{int((w.visits > 0).sum()):7d}  {deep:4d}  {move_rate[k]:10.3f}  {w.init_iterations} ({w.init_seconds:.1f}){mark}")
    print("  t: 1/t's time (1/t sets ln f = 1/t once halving would go below it); flat: the schedule's criterion "
          "(0 while a deep bin is a trap; all: over every visited bin);\n  rare: visited bins with visits below "
          "10 % of the median; since the previous checkpoint: d ln g, the largest change of ln g after its constant, "
          "rflat, the flatness of the visits (min H / mean H or mean H / max H), cross, the crossings of the least "
          "crossed x edge;\n  settled: ln f at ln_f_final, d ln g <= tolerance, rflat >= flatness and cross >= "
          f"{MIN_CROSSINGS} (the run converged when every window settled at one checkpoint and the windows join);\n  "
          f"deep: visited bins more than decide_depth = {depth:g} below the top of their x row (not in the flat test "
          "unless visited more than the rest: a trap)")
    _partial_bins(rec)
    _steep_bins(rec)
    _walls(rec)
    _trajectories(rec)
    for k in range(rec.n_windows - 1):
        rate = rec.swap_accepted[k] / max(1.0, rec.swap_attempted[k])
        print(f"  swaps {k}<->{k + 1}: {int(rec.swap_accepted[k])}/{int(rec.swap_attempted[k])} accepted ({rate:.3f})")
    if rec.n_windows > 1:
        print(f"  round trips of walkers between windows 0 and {rec.n_windows - 1}: {_num(rec.round_trips, 0)} "
              f"({_num(rec.round_trips / (rec.walkers_per_rank * rec.ranks_per_window * rec.n_windows), 2)} per walker)")
    if rec.status != "converged":
        settled = sum(w.settled for w in rec.windows)
        print(f"  NOT CONVERGED ({rec.status}; {settled} of {rec.n_windows} windows settled): the landscape is an "
              "estimate in progress; see the diagnostics above")
    if rec.task == "box_quadratic":
        _exact_check(rec)
    return 0


def units_line(rec: RunRecord) -> str:
    """What ln f and 1/t's t mean in this run: per walker visit (runs of schema 4 on), or per step of
    all M walkers of a window (runs begun before; they keep that rule when they resume)."""
    if all(w.per_visit for w in rec.windows):
        return ("ln f: added to ln g per walker visit; t: walker visits per visited bin since the start of the last "
                "halving stage")
    walkers = rec.walkers_per_rank * rec.ranks_per_window
    return (f"ln f: per step of all {walkers} walkers of a window (ln f / {walkers} per visit); t: steps per "
            "visited bin (a run begun before rewl counted ln f per visit; it resumes with its own rule)")


def _partial_bins(rec: RunRecord) -> None:
    """WLMD: the bins cut by the edge of the reachable region (``wl.reach_fraction`` < 1), whose
    ln g in the run file is that of their reachable part."""
    if rec.sampler != "wlmd":
        return
    if any(w.offset_moments() is None for w in rec.windows):
        print("  bins partly reachable (wlmd): not tracked; this run began before rewl kept the walkers' offsets "
              "inside their bins, and its bins count whole")
        return
    parts = []
    for k, w in enumerate(rec.windows):
        ends = (w.x_bins[0] == 0, w.x_bins[1] == len(rec.x_edges) - 1)
        f = reach_fraction(torch.as_tensor(w.visits), tuple(torch.as_tensor(m) for m in w.offset_moments()), ends).numpy()
        cut = f[f < 0.95]           # whole bins at the grid's edges scatter to 0.99 (box tests, 40,000 steps)
        parts.append(f"{k}: {cut.size}" + (f" ({cut.min():.2f}-{cut.max():.2f})" if cut.size else ""))
    print(f"  bins partly reachable (wlmd; reachable fraction under 0.95, its range): {', '.join(parts)}")


def _exact_check(rec: RunRecord) -> None:
    """box_quadratic has a closed-form entropy: print each window's max error over visited bins."""
    from .testsystems import box_entropy, max_error_after_constant
    t = _deck(rec).task
    exact = box_entropy(rec.x_edges, rec.y_edges, t.n, t.m, t.half_width, partial=True)   # bins cut by E <= k a^2 too
    errors = []
    for w in rec.windows:
        lo, hi = w.x_bins
        ln_g, visits = joining.recorded_view(rec, w)
        mask = visits >= RECORDED_MIN_VISITS if rec.y_recorded else visits > 0
        if not np.isfinite(exact[lo:hi][mask]).all():
            print("  exact check: walkers visited bins next to E = k a^2, where the numerical exact S is not reliable")
            return
        errors.append(max_error_after_constant(ln_g, exact[lo:hi], mask) if mask.any() else float("nan"))
    where = f"bins of {RECORDED_MIN_VISITS} recorded visits or more" if rec.y_recorded else "visited bins"
    print(f"  exact check: max |S - S_exact| over {where}, after each window's constant: "
          f"{' '.join(f'{e:.3f}' for e in errors)}")


RECORDED_MIN_VISITS = 1000    # y recorded: the exact check counts bins whose P(y | x) rests on this many samples


def decide_depth(rec: RunRecord) -> float:
    """The run's `[schedule] decide_depth` (the default for a run whose deck this version no longer reads)."""
    try:
        return _deck(rec).schedule.decide_depth
    except DeckError:
        return ScheduleConfig().decide_depth


def edge_rows(rec: RunRecord) -> int:
    """``joining.edge_rows`` of the run's sampler (the default kernel for a run whose deck this
    version no longer reads)."""
    if rec.sampler != "wlmd":
        return 1
    try:
        return joining.edge_rows(_deck(rec).sampler)
    except DeckError:
        return joining.edge_rows(SamplerConfig(kind="wlmd"))


def _deck(rec: RunRecord) -> Config:
    """The run's deck as it ran (its text and --set overrides, both stored in the run file)."""
    return parse(rec.deck_text, rec.deck_path, rec.overrides)


def _walls(rec: RunRecord) -> None:
    """The soft walls' c per window (wlmd runs that recorded it), and whether the run tuned them."""
    if rec.sampler != "wlmd" or not any(np.isfinite(w.wall_strength) for w in rec.windows):
        return
    auto = _deck(rec).sampler.wall_strength == "auto"
    print("  soft walls c per window: " + ", ".join(f"{w.wall_strength:.4g}" for w in rec.windows)
          + (' (tuned during the run: wall_strength = "auto")' if auto else " (the deck's)"))


# above this change of ln g between neighbouring x bins, walkers cross a bin markedly less often
# than they would on a finer grid (docs/convergence.md, "Bins as fine as the entropy is steep")
STEEP = 2.0


def steepest_steps(rec: RunRecord) -> list[tuple[float, float]]:
    """Per window: the largest change of ln g(x) (summed over y) between neighbouring visited x
    bins, and the x of the edge between them ((nan, nan) with fewer than two visited bins)."""
    out = []
    for w in rec.windows:
        s_x = logsumexp(np.where(w.visits > 0, w.ln_g, -np.inf), axis=1)                  # (n_x,)
        with np.errstate(invalid="ignore"):
            step = np.abs(np.diff(s_x))                                # nan or inf next to unvisited rows
        if not np.isfinite(step).any():
            out.append((float("nan"), float("nan")))
            continue
        k = int(np.argmax(np.where(np.isfinite(step), step, -1.0)))
        out.append((float(step[k]), float(rec.x_edges[w.x_bins[0] + k + 1])))
    return out


def _steep_bins(rec: RunRecord) -> None:
    """The steepest change of ln g between neighbouring x bins per window, and advice where it
    exceeds STEEP: walkers reach the far side of a bin about exp(-change) as often as its near side."""
    steps = steepest_steps(rec)
    print("  steepest change of ln g between neighbouring x bins: "
          + ", ".join(f"w{k} {_num(d, 2)}" + (f" at {x:.3g}" if np.isfinite(x) else "") for k, (d, x) in enumerate(steps)))
    worst = max((d for d, _ in steps if np.isfinite(d)), default=0.0)
    if worst > STEEP:
        width = rec.x_edges[1] - rec.x_edges[0]
        print(f"  warning: ln g changes by up to {worst:.3g} across one x bin of {width:g}: walkers cross such a bin "
              f"in proportion to exp(-{worst:.2g}) and the window flattens slowly; bins of about "
              f"{width * STEEP / worst:.2g} (the slope {worst / width:.3g} per unit of x) keep the change within {STEEP:g} "
              "(docs/convergence.md, \"Bins as fine as the entropy is steep\")")


def _trajectories(rec: RunRecord) -> None:
    """hmc: each window's leapfrog step and steps per trajectory at the end (its first rank's)."""
    if not any(np.isfinite(w.step_size) for w in rec.windows):
        return
    print("  hmc step x leapfrog steps per window: "
          + ", ".join(f"{w.step_size:.3g} x {w.leapfrog_steps}" for w in rec.windows)
          + " (step in units of each weight's spread over the walkers, tuned toward the target acceptance)")


def _num(value: float, digits: int) -> str:
    """`value` with `digits` decimals, or n/a where it was not recorded."""
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"
