"""box_quadratic through the full MPI path (mpiexec -n 4, 4 windows) against its exact entropy."""
from __future__ import annotations

import math

import numpy as np
import pytest

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
