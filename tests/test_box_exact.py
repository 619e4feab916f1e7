"""box_quadratic through the full MPI path (mpiexec -n 4, 4 windows) against its exact entropy."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.landscape import join_windows
from conftest import run_rewl
from rewl.storage import RunStore
from rewl.testsystems import box_entropy, max_error_after_constant


@pytest.mark.mpi
@pytest.mark.parametrize("n,m", [(4, 2), (6, 3)])
def test_box_quadratic_recovers_exact_entropy(make_deck, tmp_path, n, m):
    # x and y up to ln 2 = ln(2 a^2): the whole grid lies in the closed-form region
    hi, width = math.log(2.0), 0.15
    axis = {"min": hi - 24 * width, "max": hi, "width": width}
    deck = make_deck("box", "run", task={"n": n, "m": m}, grid__x=axis, grid__y=axis)
    proc = run_rewl(["run", str(deck)], ranks=4)
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / "run").read_run()
    exact = box_entropy(rec.x_edges, rec.y_edges, n, m, 1.0)
    assert np.isfinite(exact).all()
    errors = []
    for w in rec.windows:
        lo_bin, hi_bin = w.x_bins
        mask = w.visits > 0
        assert mask.mean() > 0.95              # the sampler reached (nearly) every bin of its window
        errors.append(max_error_after_constant(w.ln_g, exact[lo_bin:hi_bin], mask))
    print(f"n={n} m={m}: max |S_est - S_exact| per window after its constant: {np.round(errors, 3)}")
    assert max(errors) <= 0.15, errors


def _axis(k: int, bins: int) -> dict:
    """`bins` bins of 0.15 in ln E up to 0.9 above the typical ln(k a^2 / 3) (a = 1): past E = 2 a^2,
    into the falling tail of the density where only the full box formula is exact."""
    top = round((math.log(k / 3.0) + 0.9) / 0.15) * 0.15
    return {"min": round(top - bins * 0.15, 10), "max": round(top, 10), "width": 0.15}


def _converged_run(make_deck, tmp_path, n: int, m: int, walkers: int) -> tuple[int, list[float], float]:
    """box_quadratic n, m over 26 x 28 bins past E = 2 a^2, 4 windows of `walkers`, run under
    `mpiexec -n 4` until every window is at ln_f_final = 1e-5 per walker visit. Returns the steps it
    took, max |S_est - S_exact| over every visited bin per window after its constant, and the same
    for the joined S (default join thresholds)."""
    name = f"n{n}_M{walkers}"
    deck = make_deck("box", name, run={"max_steps": 2_000_000}, task={"n": n, "m": m},
                     sampler={"walkers_per_rank": walkers}, grid__x=_axis(m, 26), grid__y=_axis(n - m, 28),
                     schedule={"ln_f_final": 1e-5, "check_interval": 100}, output={"checkpoint_interval": 100_000})
    proc = run_rewl(["run", str(deck)], ranks=4)
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / name).read_run()
    assert rec.status == "converged" and all(w.converged and w.ln_f <= 1e-5 for w in rec.windows)
    exact = box_entropy(rec.x_edges, rec.y_edges, n, m, 1.0)
    assert np.exp(rec.x_edges[-1]) > 2.0 and np.exp(rec.y_edges[-1]) > 2.0      # past the closed forms
    errors, spans = [], []
    for w in rec.windows:
        lo, hi = w.x_bins
        mask = w.visits > 0
        assert np.isfinite(exact[lo:hi][mask]).all() and mask.mean() > 0.95
        errors.append(max_error_after_constant(w.ln_g, exact[lo:hi], mask))
        spans.append(float(np.ptp(exact[lo:hi][mask])))
    assert min(spans) > 25                   # S spans 26 to 40 units inside each window, as in a small network
    land = join_windows(rec)                 # default thresholds: min 5 common bins, residual RMS <= 0.5
    joined = max_error_after_constant(land.entropy, exact, land.visited)
    print(f"n={n} m={m}, {walkers} walkers per window: converged at {rec.steps} steps; max |S_est - S_exact| per "
          f"window {np.round(errors, 3)}, joined {joined:.3f}")
    return rec.steps, errors, joined


@pytest.mark.mpi
def test_more_walkers_converge_in_fewer_steps_to_the_exact_entropy(make_deck, tmp_path):
    """ln f and 1/t's time count walker visits, so 4 times the walkers reach the same ln_f_final
    (1e-5 per visit) in at least 2.5 times fewer steps, every visited bin within 0.15 of the exact
    S per window and joined (docs/convergence.md, "Walkers and convergence": 3.8x measured; about 3 minutes)."""
    steps = {}
    for walkers in (256, 1024):
        steps[walkers], errors, joined = _converged_run(make_deck, tmp_path, 24, 12, walkers)
        assert max(errors) <= 0.15 and joined <= 0.15, (walkers, errors, joined)
    assert steps[256] >= 2.5 * steps[1024], steps


@pytest.mark.mpi
def test_box_quadratic_at_network_like_range_n32(make_deck, tmp_path):
    """n = 32 (S spans up to 40 units per window), 1,024 walkers per window, converged."""
    _, errors, joined = _converged_run(make_deck, tmp_path, 32, 16, 1024)
    assert max(errors) <= 0.15 and joined <= 0.15, (errors, joined)
