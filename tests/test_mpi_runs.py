"""The engine end to end under real mpiexec: spiral runs, run files, the world-size check
(failures: tests/test_failures.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import HANG, MPIEXEC, ROOT, env, rewl_here, run_rewl
from rewl.config import parse
from rewl.storage import RunStore

pytestmark = pytest.mark.mpi


def _check_complete(out, windows: int, steps: int) -> None:
    rec = RunStore(out).read_run()
    assert rec.status in ("budget-exhausted", "converged")
    assert rec.steps == steps and rec.n_windows == windows and rec.n_params == 116
    assert rec.move_attempted.sum() > 0
    assert rec.y_recorded          # the spiral's default: Wang-Landau over x, the test accuracy recorded
    for w in rec.windows:
        lo, hi = w.x_bins
        assert w.ln_g.shape == (hi - lo, 1) and w.y_hist.shape == (hi - lo, len(rec.y_edges) - 1)
        assert (w.visits > 0).sum() > 5
        assert np.all(np.isfinite(w.ln_g))
        # every walker records its test accuracy (always on the grid) at every synchronisation
        sync = parse(rec.deck_text).sampler.sync_interval
        assert w.y_hist.sum() == rec.walkers_per_rank * rec.ranks_per_window * steps / sync
        assert w.edge_crossings.shape == (hi - lo - 1,) and w.edge_crossings.min() > 0 and not w.settled
        # the diagnostics: flatness over every visited bin, rare bins, change since the last checkpoint
        assert 0 <= w.flatness_all <= 1
        assert 0 <= w.rare_fraction < 1 and np.isfinite(w.ln_g_change) and w.ln_g_change >= 0
    if windows > 1:
        assert np.all(rec.swap_attempted > 0) and np.all(rec.swap_accepted > 0)
        # the run's count against the walkers' own counters, which travel with them between ranks
        store = RunStore(out)
        counters = [store.read_checkpoint(steps, rank).walkers.round_trips for rank in range(rec.ranks_per_window * windows)]
        assert rec.round_trips == sum(int(c.sum()) for c in counters) and rec.history.round_trips[-1] == rec.round_trips
    else:
        assert np.isnan(rec.round_trips)
    assert len(rec.history.step) > 0 and rec.history.ln_f.shape == (len(rec.history.step), windows)
    assert rec.history.rare_fraction.shape == rec.history.flatness_all.shape == rec.history.ln_f.shape


def test_spiral_one_rank(spiral_deck, tmp_path):
    deck = spiral_deck(max_steps=2000)
    proc = run_rewl(["run", str(deck)])
    assert proc.returncode == 0, proc.stderr
    assert "results in" in proc.stdout
    _check_complete(tmp_path / "run", 1, 2000)
    info = rewl_here(["info", str(tmp_path / "run")])
    assert info.returncode == 0 and "budget-exhausted" in info.stdout and "NOT CONVERGED" in info.stdout
    assert "rare" in info.stdout and "d ln g" in info.stdout
    assert "ln f: added to ln g per walker visit" in info.stdout and RunStore(tmp_path / "run").read_run().windows[0].per_visit


def test_spiral_four_ranks(spiral_deck, tmp_path):
    deck = spiral_deck(max_steps=2000, windows=4)
    proc = run_rewl(["run", str(deck)], ranks=4)
    assert proc.returncode == 0, proc.stderr
    assert "trips" in proc.stdout and "rare=" in proc.stdout           # in the progress line
    info = rewl_here(["info", str(tmp_path / "run")])
    assert "round trips of walkers between windows 0 and 3" in info.stdout
    _check_complete(tmp_path / "run", 4, 2000)


def test_two_ranks_per_window_share_one_estimate(spiral_deck, tmp_path):
    deck = spiral_deck(max_steps=1000, windows=2, ranks_per_window=2)
    proc = run_rewl(["run", str(deck)], ranks=4)
    assert proc.returncode == 0, proc.stderr
    _check_complete(tmp_path / "run", 2, 1000)
    store = RunStore(tmp_path / "run")
    step = store.latest_step()
    for window in (0, 1):
        a, b = (store.read_checkpoint(step, 2 * window + k) for k in (0, 1))
        np.testing.assert_array_equal(a.estimate.ln_g, b.estimate.ln_g)   # merged increments: one ln g per window
        np.testing.assert_array_equal(a.estimate.visits, b.estimate.visits)
        assert not np.array_equal(a.walkers.params, b.walkers.params)     # but their own walkers
    rec = store.read_run()
    # every walker-step of both ranks is in the window's visit count
    assert rec.windows[0].visits.sum() == 1000 * 32 * 2


def test_existing_output_is_not_overwritten(spiral_deck, tmp_path):
    deck = spiral_deck(max_steps=500)
    assert run_rewl(["run", str(deck)]).returncode == 0
    before = (tmp_path / "run" / "run.h5").read_bytes()
    proc = run_rewl(["run", str(deck)])
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert (tmp_path / "run" / "run.h5").read_bytes() == before
    assert run_rewl(["run", str(deck), "--force"]).returncode == 0


def test_world_size_mismatch_is_one_clear_error(spiral_deck):
    deck = spiral_deck(windows=4)
    proc = run_rewl(["run", str(deck)], ranks=2)
    assert proc.returncode == 2
    assert proc.stderr.count("mpiexec -n 4") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("swapped", [False, True], ids=["as-drawn", "windows-swapped"])
def test_exchange_acceptance_follows_its_formula(swapped):
    """Accepted swaps between two windows of prescribed ln g, walkers held at fixed overlap bins,
    against the exact expectation computed from the global ln g (tests/helpers/exchange_acceptance.py),
    and again with the two windows' ln g exchanged."""
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(ROOT / "tests" / "helpers" / "exchange_acceptance.py"),
                           str(int(swapped))], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["attempted"] == 2400
    assert abs(got["accepted"] - got["expected"]) < 4 * got["sigma"], got
