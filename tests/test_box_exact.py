"""box_quadratic through the full MPI path (mpiexec -n 4, 4 windows) against its exact entropy."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.landscape import join_windows
from conftest import run_rewl
from rewl.joining import recorded_view
from rewl.storage import RunStore
from rewl.testsystems import box_entropy, max_error_after_constant


def _axis(k: int, bins: int, width: float = 0.15) -> dict:
    """`bins` bins of `width` in ln E up to a bin edge at most 0.9 above the typical ln(k a^2 / 3)
    (a = 1): past E = 2 a^2, into the falling tail of the density where only the full box formula is
    exact. (Closer to the box's corner, E = k a^2, 1-D Wang-Landau traps walkers: with x bins of 0.3
    up to ln E1 = 2.4, E1 <= 11 of 12, the top window of 1,024 walkers entered 1/t before its top bin
    was filled and held a trap there at ln f 1e-7.)"""
    top = math.floor((math.log(k / 3.0) + 0.9) / width + 1e-9) * width
    return {"min": round(top - bins * width, 10), "max": round(top, 10), "width": width}


def _converged_run(make_deck, tmp_path, n: int, m: int, walkers: int, recorded: bool, x_width: float = 0.15,
                   ln_f_final: float = 1e-5) -> tuple[int, list[float], float]:
    """box_quadratic n, m over 26 x 28 bins past E = 2 a^2, 4 windows of `walkers`, run under
    `mpiexec -n 4` until the run converged (every window settled at `ln_f_final` per walker visit
    and the windows join). Returns the steps it took, max |S_est - S_exact| per window after
    its constant and the same for the joined S (default join thresholds): over every visited bin
    with y flattened; with y recorded, S = ln g(x) + ln P(y | x) over the bins of 1,000 recorded
    visits or more (sampled every 20 steps, close to a sweep of the 24 parameters apart)."""
    name = f"n{n}_M{walkers}_{'recorded' if recorded else 'flattened'}"
    y_axis = {**_axis(n - m, 28), "mode": "recorded" if recorded else "flattened"}
    deck = make_deck("box", name, run={"max_steps": 2_000_000}, task={"n": n, "m": m},
                     sampler={"walkers_per_rank": walkers, "sync_interval": 20}, grid__x=_axis(m, 26, x_width),
                     grid__y=y_axis,
                     schedule={"ln_f_final": ln_f_final, "check_interval": 100}, output={"checkpoint_interval": 5000})
    proc = run_rewl(["run", str(deck)], ranks=4)
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / name).read_run()
    assert rec.status == "converged" and all(w.converged and w.settled and w.ln_f <= ln_f_final for w in rec.windows)
    assert rec.y_recorded == recorded
    exact = box_entropy(rec.x_edges, rec.y_edges, n, m, 1.0)
    assert np.exp(rec.x_edges[-1]) > 2.0 and np.exp(rec.y_edges[-1]) > 2.0      # past the closed forms
    errors, spans = [], []
    counted_all = np.zeros((len(rec.x_edges) - 1, len(rec.y_edges) - 1), dtype=bool)
    for w in rec.windows:
        lo, hi = w.x_bins
        ln_g, visits = recorded_view(rec, w)
        counted = visits >= 1000 if recorded else visits > 0
        assert np.isfinite(exact[lo:hi][counted]).all()
        if recorded:
            assert counted.sum(axis=1).min() >= 4      # every x row: its y distribution, not one bin
        else:
            assert counted.mean() > 0.95
        counted_all[lo:hi] |= counted
        errors.append(max_error_after_constant(ln_g, exact[lo:hi], counted))
        spans.append(float(np.ptp(exact[lo:hi][counted] if not recorded else w.ln_g)))   # what Wang-Landau built
    assert min(spans) > 15, spans            # 18 to 40 units inside each window, as in a small network
    land = join_windows(rec)                 # default thresholds: min 5 common bins, residual RMS <= 0.5
    joined = max_error_after_constant(land.entropy, exact, land.visited & counted_all)
    distances = [p.y_distance for p in land.pairs]
    print(f"n={n} m={m}, {walkers} walkers per window, y {y_axis['mode']}: converged at {rec.steps} steps; max "
          f"|S_est - S_exact| per window {np.round(errors, 3)}, joined {joined:.3f}"
          + (f"; P(y | x) distances in the overlaps {np.round(distances, 3)}" if recorded else ""))
    return rec.steps, errors, joined


@pytest.mark.mpi
def test_more_walkers_converge_in_fewer_steps_to_the_exact_entropy(make_deck, tmp_path):
    """y recorded (the networks' default: Wang-Landau over x alone, y histogrammed per x bin), x bins
    of 0.3 so that ln g(x) spans 18 to 25 units per window, as on a small network. ln f and 1/t's
    time count walker visits, so 4 times the walkers converge in at least 2.5 times fewer steps,
    S(x, y) = ln g(x) + ln P(y | x) within 0.15 of the exact S per window and joined wherever a bin
    holds 1,000 recorded visits (docs/convergence.md, "Walkers and convergence")."""
    steps = {}
    for walkers in (256, 1024):
        steps[walkers], errors, joined = _converged_run(make_deck, tmp_path, 24, 12, walkers, recorded=True, x_width=0.3,
                                                        ln_f_final=1e-6)
        assert max(errors) <= 0.15 and joined <= 0.15, (walkers, errors, joined)
    assert steps[256] >= 2.5 * steps[1024], steps


@pytest.mark.mpi
def test_box_quadratic_at_network_like_range_n32(make_deck, tmp_path):
    """y flattened (Wang-Landau over the 2-D grid): n = 32 (S spans up to 40 units per window),
    1,024 walkers per window, converged."""
    _, errors, joined = _converged_run(make_deck, tmp_path, 32, 16, 1024, recorded=False)
    assert max(errors) <= 0.15 and joined <= 0.15, (errors, joined)
