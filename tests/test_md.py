"""Wang-Landau molecular dynamics end to end: exact entropy of box_quadratic through mpiexec with
two windows, bit-exact resume with velocities, and the spiral tasks under wlmd."""
from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import assert_same_run, rewl_here, run_analysis, run_rewl
from rewl.storage import RunStore
from rewl.testsystems import box_entropy


@pytest.mark.mpi
@pytest.mark.slow
def test_wlmd_respects_the_edge_of_the_reachable_region_inside_the_grid(make_deck, tmp_path):
    # WLMD's exactness test. n = 2, m = 1: y = ln w2^2 <= ln a^2 = 0, and the grid reaches past that
    # limit, so the edge of the region walkers reach is not an edge of the grid (as on every
    # network's grid); the window edges and the grid's other edges are artificial ones (soft walls,
    # mirrored kernel). The limit lies 1/3 of the way up a bin. Dropped for the suite's time, each
    # after passing beside this case for weeks: a limit on a bin edge (y in [-3.0, 0.6), 152 s) and
    # n = 4, m = 2 on [-3, 0]^2 inside the reachable region (64 walkers, 71 s; docs/convergence.md).
    y_grid, unreachable = (-3.05, 0.55), 3
    # Without the scaled kernel the top reachable column ended 7 to 8 too low and ln f stayed at 1;
    # with whole bins (no reachable fraction) the limit inside a bin bent S by 0.34 next to it.
    deck = make_deck("box_md", "run", run={"max_steps": 40_000}, task={"n": 2, "m": 1},
                     sampler={"walkers_per_rank": 1024}, schedule={"ln_f_initial": 1e-3},   # 2 per step of 2,048 walkers
                     **{"grid.y": {"min": y_grid[0], "max": y_grid[1]}})
    proc = run_rewl(["run", str(deck)], ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    rec = RunStore(tmp_path / "run").read_run()
    assert rec.sampler == "wlmd" and rec.swap_accepted.sum() > 0
    exact = box_entropy(rec.x_edges, rec.y_edges, 2, 1, 1.0, partial=True)    # nan past the limit
    y_centres = 0.5 * (rec.y_edges[1:] + rec.y_edges[:-1])
    reachable = np.isfinite(exact[0])
    assert reachable.sum() == len(y_centres) - unreachable

    def mean_y(ln_g: np.ndarray) -> np.ndarray:                              # <y>(x), (n_x,)
        p = np.exp(ln_g - ln_g.max(axis=1, keepdims=True))
        return (p * y_centres[reachable]).sum(axis=1) / p.sum(axis=1)
    for k, w in enumerate(rec.windows):
        lo, hi = w.x_bins
        visited = w.visits > 0
        assert np.array_equal(visited, np.broadcast_to(reachable, visited.shape))
        diff = (w.ln_g - exact[lo:hi])[:, reachable]
        diff -= diff.mean()
        error, edge = np.abs(diff).max(), np.abs(diff[:, -3:]).max()     # every visited bin; the three boundary columns
        bias = np.abs(mean_y(w.ln_g[:, reachable]) - mean_y(exact[lo:hi][:, reachable])).max()
        print(f"window {k}: max |dS| {error:.3f} (boundary columns {edge:.3f}), max |<y>(x) bias| {bias:.4f}, "
              f"ln f {w.ln_f:.2e}")
        assert error <= 0.15 and bias <= 0.01 and w.one_over_t
    # `info` names the bins the limit cuts, and the exact check includes them
    info = rewl_here(["info", str(tmp_path / "run")])
    assert info.returncode == 0, info.stderr
    cut = re.search(r"bins partly reachable .*: 0: (\d+)(?: \(([\d.]+)-([\d.]+)\))?, 1: (\d+)", info.stdout)
    # the limit 1/3 of the way into the bin [-0.05, 0.1)
    assert [int(cut.group(1)), int(cut.group(4))] == [w.ln_g.shape[0] for w in rec.windows], info.stdout
    assert 0.3 <= float(cut.group(2)) <= float(cut.group(3)) <= 0.37, info.stdout
    assert "exact check: max |S - S_exact| over visited bins" in info.stdout


@pytest.mark.mpi
def test_wlmd_resume_is_bit_identical_with_velocities(make_deck, tmp_path):
    """2 ranks, 2 windows: stop at 1500 steps, resume to 3000; equal to a straight 3000-step run
    (velocities, the estimate and the recorded test accuracy, edge crossings, exchanges, RNG states)."""
    auto = {"wall_strength": "auto"}       # the tuned walls' state travels too (the stop falls mid-interval)
    straight = make_deck("spiral_md", "straight", run={"max_steps": 3000}, sampler=auto)
    proc = run_rewl(["run", str(straight)], ranks=2)
    assert proc.returncode == 0, proc.stderr
    first = make_deck("spiral_md", "stopped", run={"max_steps": 1250}, sampler=auto)
    assert run_rewl(["run", str(first)], ranks=2).returncode == 0
    longer = make_deck("spiral_md", "longer", run={"max_steps": 3000}, output={"dir": str(tmp_path / "stopped")},
                       sampler=auto)
    proc = run_rewl(["run", str(longer), "--resume"], ranks=2)
    assert proc.returncode == 0, proc.stderr
    a, b = RunStore(tmp_path / "straight"), RunStore(tmp_path / "stopped")
    assert_same_run(a, b, 2, 3000)
    rec = a.read_run()
    assert rec.sampler == "wlmd" and rec.y_label == "A_test" and rec.y_recorded and rec.swap_accepted.sum() > 0
    ck = a.read_checkpoint(3000, 0)
    assert ck.walkers.velocities.shape == ck.walkers.params.shape == (32, 116)
    for w in rec.windows:
        assert w.y_hist.sum() > 0 and w.edge_crossings.sum() > 0
    # walkers inside the window most of the time; the progress line reports the kinetic temperature
    assert (rec.move_accepted / rec.move_attempted).min() > 0.5
    assert re.search(r"T=\d\.\d\d c=\S+", proc.stdout)
    # the walls' c is in the run file and in `info`
    assert all(np.isfinite(w.wall_strength) and w.wall_strength > 0 for w in rec.windows)
    info = rewl_here(["info", str(tmp_path / "straight")])
    assert "soft walls c per window: " in info.stdout and '(tuned during the run: wall_strength = "auto")' in info.stdout


@pytest.mark.mpi
def test_wlmd_ramp_schedule_runs_and_follows_the_factor(make_deck, tmp_path):
    deck = make_deck("spiral_md", "ramp", schedule={"kind": "ramp", "ln_f_initial": 0.5, "ramp_steps": 200,
                                                    "plateau_end": 600, "decay_time": 100})
    proc = run_rewl(["run", str(deck)], ranks=2)
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / "ramp").read_run()
    # at step 1000: 0.5 * 100 / (1000 - 600 + 100), set before the last step (999)
    expected = 0.5 * 100 / (999 - 600 + 100)
    for w in rec.windows:
        assert w.ln_f == pytest.approx(expected)
    np.testing.assert_allclose(rec.history.ln_f[0], 0.5)      # step 500: on the plateau


@pytest.mark.mpi
def test_spiral_regression_runs_trains_baselines_and_is_analysed(make_deck, tmp_path):
    # one window: 1,000 WLMD steps do not make two windows that join (residual 1.1; joins are
    # tested on the WLMC spiral at the default threshold, tests/test_analysis.py)
    deck = make_deck("regression", "run", windows={"count": 1})
    proc = run_rewl(["run", str(deck)])
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / "run").read_run()
    assert (rec.task, rec.n_params, rec.y_label) == ("spiral_regression", 2 * 8 + 8 + 8 * 8 + 8 + 8 + 1, "ln L_test")
    assert all(w.accuracy_sum is None for w in rec.windows)        # no classes: nothing recorded beside y
    assert all((w.visits > 0).sum() > 10 for w in rec.windows)
    proc = run_rewl(["sgd", str(deck)])
    assert proc.returncode == 0, proc.stderr
    base = RunStore.read_baseline(tmp_path / "run" / "baseline.h5")
    assert base.y_label == "ln L_test" and base.x[:, -1].mean() < base.x[:, 0].mean()   # Adam lowers the loss
    assert np.isnan(base.accuracy).all()
    proc = run_analysis(["report", str(tmp_path / "run")])
    assert proc.returncode == 0, proc.stderr
    assert "y = ln L_test" in proc.stdout and "<A> eq" not in proc.stdout



def test_walls_note_and_the_soft_wall_warning(capsys):
    """`check` estimates how far past a window's edge the soft walls let walkers settle against an
    entropy slope of n_params / 2, with advice beyond one bin; the progress line warns once, under
    wlmd only, when a window's walkers spend most steps in the walls."""
    from rewl.cli import walls_note
    from rewl.config import ScheduleConfig
    from rewl.progress import ProgressLine
    from rewl.samplers.wlmc import WLMC
    from rewl.samplers.wlmd import WLMD
    from rewl.schedule import make_schedule
    from rewl.status import RankStatus

    held = walls_note(116, 300.0, 0.1)                  # the spiral_md deck: 58 / 600 = 0.0967
    assert "0.0967 past" in held and "or more" not in held
    loose = walls_note(38_501, 3000.0, 0.1)              # the 38,501-parameter head at c = 3000
    assert "19,250 per unit" in loose and "3.21 past" in loose and "wall_strength 96,252 or more" in loose

    def status(window: int, attempted: float, accepted: float) -> RankStatus:
        return RankStatus(window, 1.0, 0.0, False, False, 0, False, 0.0, attempted, accepted, 1.0, 0.0, 0.0,
                          0, 0.0, 0.0, 0.0, float("nan"), 0.0, 1.0, float("nan"), 0, False, float("nan"), float("nan"))

    schedule = make_schedule(ScheduleConfig())
    md_line = ProgressLine(2, 1, WLMD.rate_label, schedule, 100, 0.0, WLMD.fixed_walls_hint)
    md_line.show(0, [status(0, 0.0, 0.0), status(1, 0.0, 0.0)], 0.0, 1.0)      # before any step: quiet
    assert "warning" not in capsys.readouterr().err
    md_line.show(10, [status(0, 100.0, 90.0), status(1, 100.0, 3.0)], 1.0, 1.0)
    err = capsys.readouterr().err
    assert "in under 0.5 in window(s) 1:" in err and "raise [sampler] wall_strength" in err
    md_line.show(20, [status(0, 200.0, 180.0), status(1, 200.0, 6.0)], 2.0, 1.0)  # once only
    assert "warning" not in capsys.readouterr().err
    mc_line = ProgressLine(2, 1, WLMC.rate_label, schedule, 100, 0.0, WLMC.low_rate_hint)
    mc_line.show(10, [status(0, 100.0, 20.0), status(1, 100.0, 3.0)], 1.0, 1.0)  # a low acceptance is no fault
    assert "warning" not in capsys.readouterr().err


def test_auto_walls_raise_until_walkers_stay_inside_and_back_off_when_hot():
    """wall_strength = "auto": c starts at min(settling, stability) values, doubles every INTERVAL
    steps while under 90 % of walker-steps were inside and kT held within 0.1 of 1; a hot interval
    (or one hot sync) halves it, never below the start, and ends the raising for good. The state
    round-trips through a checkpoint to the same decisions; fixed walls never move."""
    from rewl.samplers import walls
    from rewl.samplers.walls import INTERVAL, WallControl

    c = WallControl("auto")
    c.begin(n_params=1000, x_width=0.1, dt=1e-3, max_grad_sq=1.0)
    assert c.strength == c.start_strength == min(walls.settling_strength(1000, 0.1), walls.stable_strength(1.0, 1e-3))
    assert walls.settling_strength(1000, 0.1) == 5000.0         # 2 c d = n / 2 at d = half a bin
    assert walls.stable_strength(1.0, 1e-3) == pytest.approx(500_000.0)   # omega dt = 1: 2 c |g|^2 dt^2 = 1
    c.begin(n_params=1000, x_width=0.1, dt=1e-3, max_grad_sq=1000.0)        # a steep walker: stability decides
    start = c.strength
    assert start == pytest.approx(500.0)

    def interval(end: int, inside_fraction: float, t: float = 1.0, syncs: int = 5) -> bool:
        """`syncs` synchronisations up to step `end` of 1000 walkers, `inside_fraction` of their
        steps since the last decision inside, kT = t; True when c changed."""
        steps_before, inside_before = c.marks
        changed = False
        for k in range(1, syncs + 1):
            step = end - INTERVAL + k * INTERVAL // syncs
            walker_steps = 1000.0 * step
            c.observe(t)
            changed |= c.decide(step, walker_steps, inside_before + inside_fraction * (walker_steps - steps_before))
        return changed

    assert interval(INTERVAL, 0.5) and c.strength == 2 * start               # walkers out: raise
    assert interval(2 * INTERVAL, 0.6) and c.strength == 4 * start
    assert not interval(3 * INTERVAL, 0.95) and c.strength == 4 * start      # inside: keep
    saved = c.state()
    twin = WallControl("auto")
    twin.load_state(saved)
    assert interval(4 * INTERVAL, 0.5, t=1.15) and c.strength == 2 * start   # hot interval: back off, stop
    assert not c.raising
    assert not interval(5 * INTERVAL, 0.1) and c.strength == 2 * start       # no more raising
    c, mine = twin, c
    interval(4 * INTERVAL, 0.5, t=1.15)
    assert c.strength == mine.strength and not c.raising                     # the same decisions after a resume
    c.observe(40.0)                                                          # one blown-up sync: at once
    assert c.decide(4 * INTERVAL + 100, 0.0, 0.0) and c.strength == start
    c.observe(float("nan"))
    assert not c.decide(4 * INTERVAL + 200, 0.0, 0.0) and c.strength == start   # never below the start

    fixed = WallControl(300.0)
    fixed.begin(n_params=1000, x_width=0.1, dt=1e-3, max_grad_sq=100.0)
    fixed.observe(5.0)
    assert not fixed.decide(INTERVAL, 1000.0, 0.0) and fixed.strength == 300.0
    legacy = WallControl("auto")                 # a checkpoint from before the walls were kept
    legacy.load_state({"steps": np.zeros(1)})
    assert legacy.strength == walls.LEGACY_STRENGTH and not legacy.auto
