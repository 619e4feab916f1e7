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
    proc = run_rewl(["run", str(deck)], ranks=4, timeout=900)
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


@pytest.mark.mpi
@pytest.mark.parametrize("n,m", [(24, 12), (32, 16)])
def test_box_quadratic_at_network_like_range(make_deck, tmp_path, n, m):
    """S spans 26 to 40 units inside each window, as in a small network. Every visited bin, per
    window and in the joined global S (default join thresholds), within 0.15 of the exact S after
    one constant; 4 windows x 256 walkers, 200,000 steps (about 2 minutes on 2 cores)."""
    deck = make_deck("box", "run", run={"max_steps": 200_000}, task={"n": n, "m": m},
                     sampler={"walkers_per_rank": 256}, grid__x=_axis(m, 26), grid__y=_axis(n - m, 28),
                     output={"checkpoint_interval": 100_000})
    proc = run_rewl(["run", str(deck)], ranks=4, timeout=900)
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / "run").read_run()
    exact = box_entropy(rec.x_edges, rec.y_edges, n, m, 1.0)
    assert np.exp(rec.x_edges[-1]) > 2.0 and np.exp(rec.y_edges[-1]) > 2.0      # past the closed forms
    errors, spans = [], []
    for w in rec.windows:
        lo, hi = w.x_bins
        mask = w.visits > 0
        assert np.isfinite(exact[lo:hi][mask]).all()
        errors.append(max_error_after_constant(w.ln_g, exact[lo:hi], mask))
        spans.append(float(np.ptp(exact[lo:hi][mask])))
    land = join_windows(rec)                 # default thresholds: min 5 common bins, residual RMS <= 0.5
    joined = max_error_after_constant(land.entropy, exact, land.visited)
    print(f"n={n} m={m}: S spans {np.round(spans, 1)} per window; max |S_est - S_exact| per window "
          f"{np.round(errors, 3)}, joined {joined:.3f}; ln f {[f'{w.ln_f:.1e}' for w in rec.windows]}")
    assert min(spans) > 25
    assert max(errors) <= 0.15 and joined <= 0.15, (errors, joined)
