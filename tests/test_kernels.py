"""Unit tests of the pure array layers: grid and windows, Wang-Landau kernels, schedules, samplers,
models, observables."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_chunked_equals_whole, deck_text
from rewl.config import ScheduleConfig, load, parse
from rewl.grid import Axis, Grid, Window, window_bins
from rewl.models import FNN, MLPForward, n_params, param_layout
from rewl.observables import correct_points, cross_entropy_points, smooth_accuracy_points
from rewl.samplers import make_sampler
from rewl.samplers.wlmc import MoveSizes, wlmc_step
from rewl.samplers.wlmd import Langevin, MDCounters, reflect_at_box, thermal_velocities, wlmd_step
from rewl.schedule import make_schedule
from rewl.tasks import make_task, spiral_data
from rewl.testsystems import box_entropy
from rewl.walkers import Walkers, _stand_ins, drive_into_window, spread_targets
from rewl.wl import (
    Estimate,
    deep_bins,
    deposit,
    deposit_kernel,
    entropy_slopes,
    flatness,
    gaussian_kernel,
    kernel_table,
    level_unvisited,
    ln_g_change,
    reach_fraction,
    reachable_scale,
    reflect,
    trapped_bins,
    visit_diagnostics,
    wall_slope,
    wl_accept,
)

SPIRAL_TABLES = {"task": {"test_per_class": 50}, "grid__x": {"min": -2.0, "max": 2.0}}
SPIRAL = deck_text("spiral", **SPIRAL_TABLES)


def box_deck(n: int = 3, m: int = 1, x: tuple[float, float, float] = (-4.0, 0.0, 0.25),
             y: tuple[float, float, float] = (-4.0, 0.6, 0.2), base: str = "box", **tables) -> str:
    """box_quadratic in one window, with grid axes (min, max, width)."""
    axis = lambda a: dict(zip(("min", "max", "width"), a))  # noqa: E731
    return deck_text(base, task={"n": n, "m": m}, grid__x=axis(x), grid__y=axis(y), windows={"count": 1}, **tables)


def whole_grid(cfg) -> Window:
    """The single window of a one-window deck."""
    return Window.split(cfg.grid, 1, 0.75)[0]


def test_axis_index_edges_and_outside():
    ax = Axis(-1.0, 1.0, 0.5)
    assert ax.bins == 4
    v = torch.tensor([-1.0, -0.51, -0.5, 0.99, 1.0, -1.01, float("nan"), float("-inf")])
    assert ax.index(v).tolist() == [0, 0, 1, 3, 4, 0 - 1, -1, -1]
    np.testing.assert_allclose(ax.edges, [-1, -0.5, 0, 0.5, 1])


def test_window_bins_cover_grid_with_overlap():
    bins = window_bins(40, 4, 0.75)
    assert bins[0][0] == 0 and bins[-1][1] == 40
    widths = [hi - lo for lo, hi in bins]
    assert max(widths) - min(widths) <= 1
    # width formula of Vogel et al.: 40 / (1 + 3 * 0.25) = 22.86 bins
    assert abs(widths[0] - 40 / 1.75) <= 1
    for (lo0, hi0), (lo1, hi1) in zip(bins, bins[1:]):
        assert lo0 < lo1 < hi0 < hi1
    with pytest.raises(ValueError, match="share"):
        window_bins(12, 3, 0.05)


def test_deposit_counts_repeated_bins_and_flatness():
    est = Estimate.zeros((3, 2), 0.5, torch.device("cpu"), walkers=3)
    deposit(est, torch.tensor([0, 0, 2]), torch.tensor([1, 1, 0]))
    assert est.hist.tolist() == [[0, 2], [0, 0], [1, 0]]
    assert est.ln_g.tolist() == [[0, 1.0], [0, 0], [0.5, 0]]   # ln f per walker visit, whatever M
    legacy = Estimate.zeros((3, 2), 0.5, torch.device("cpu"), walkers=2)
    legacy.per_visit = False                                     # a run begun before schema 4
    deposit(legacy, torch.tensor([0, 0]), torch.tensor([1, 1]))
    assert legacy.ln_g.tolist() == [[0, 0.5], [0, 0], [0, 0]]   # ln f per step of its 2 walkers
    assert flatness(est.hist, est.visits) == 0.0          # x row 1 never visited: not flat
    deposit(est, torch.tensor([1]), torch.tensor([0]))
    assert flatness(est.hist, est.visits) == pytest.approx(1 / (4 / 3))


def test_unvisited_bins_are_leveled_with_their_lowest_visited_neighbours():
    """A bin nobody visited takes the lowest ln g of its nearest visited 4-neighbours, ring by ring
    outward; visited bins keep theirs, and a window nobody visited stays as it is."""
    ln_g = torch.tensor([[900.0, 0, 0, 0], [800.0, 700, 0, 0], [0, 0, 0, 0]], dtype=torch.float64)
    visits = torch.tensor([[5.0, 0, 0, 0], [5, 5, 0, 0], [0, 0, 0, 0]], dtype=torch.float64)
    level_unvisited(ln_g, visits)
    assert ln_g.tolist() == [[900, 700, 700, 700], [800, 700, 700, 700], [800, 700, 700, 700]]
    assert visits.tolist()[0] == [5, 0, 0, 0]           # the visits are not touched
    empty = torch.zeros(2, 3, dtype=torch.float64)
    level_unvisited(empty, torch.zeros(2, 3, dtype=torch.float64))
    assert empty.abs().sum() == 0


def test_only_bins_far_below_their_row_top_are_left_out_of_the_flat_test():
    """decide_depth: a starved bin 150 below the top of its x row does not hold the stage back; one
    50 below does, and so does a starved bin whose ln g is too high (above its row)."""
    hist = torch.tensor([[10.0, 10.0, 0.0], [10.0, 10.0, 10.0]], dtype=torch.float64)
    visits = torch.tensor([[1000.0, 1000, 3], [1000, 1000, 1000]], dtype=torch.float64)
    ln_g = torch.tensor([[400.0, 380.0, 250.0], [300.0, 310.0, 320.0]], dtype=torch.float64)
    assert deep_bins(ln_g, visits, 100.0).tolist() == [[False, False, True], [False, False, False]]
    assert flatness(hist, visits, ln_g, 100.0) == 1.0
    assert flatness(hist, visits, ln_g, 200.0) == 0.0
    assert flatness(hist, visits) == 0.0                   # no ln g given: every visited bin decides
    ln_g[0, 2] = 350.0                                           # 50 below its row's top: it decides
    assert flatness(hist, visits, ln_g, 100.0) == 0.0
    ln_g[0, 2] = 450.0                                           # too high (rarely visited because of it)
    assert flatness(hist, visits, ln_g, 100.0) == 0.0
    visits[0, 2] = 0.0                                           # never visited: not in any row's top
    ln_g[0, 2] = 1e4
    assert not deep_bins(ln_g, visits, 100.0).any() and flatness(hist, visits, ln_g, 100.0) == 1.0


def test_a_deep_bin_the_walkers_keep_entering_is_a_trap_that_holds_ln_f():
    """A bin 150 below its row's top visited less than the counted bins is a fringe bin, left out of
    the flat test; visited more than their mean / flatness it is a trap (its ln g too low): the
    stage is not flat and ln f holds (1/t too) until it fills."""
    hist = torch.tensor([[10.0, 10.0, 2.0], [10.0, 10.0, 10.0]], dtype=torch.float64)
    visits = torch.full((2, 3), 1000.0, dtype=torch.float64)
    ln_g = torch.tensor([[400.0, 380.0, 250.0], [300.0, 310.0, 320.0]], dtype=torch.float64)
    assert not trapped_bins(hist, visits, ln_g, 100.0, 0.8).any()
    hist[0, 2] = 12.0                                     # under 10 / 0.8: still not a trap
    assert not trapped_bins(hist, visits, ln_g, 100.0, 0.8).any()
    hist[0, 2] = 40.0
    assert trapped_bins(hist, visits, ln_g, 100.0, 0.8).tolist() == [[False, False, True], [False] * 3]
    schedule = make_schedule(ScheduleConfig(kind="1/t", ln_f_initial=1e-2, ln_f_final=1e-3, flatness=0.8,
                                            check_interval=1, decide_depth=100.0))
    est = Estimate.zeros((2, 3), 1e-2, torch.device("cpu"), walkers=8)
    est.ln_g, est.hist, est.visits = ln_g, hist, visits
    est.one_over_t = True                                 # 1/t = 1 / 1000 visits per bin: ln f would fall to it now
    schedule.check(est, 100)
    assert est.flatness == 0.0 and est.ln_f == 1e-2 and not schedule.at_end(est, 100)
    est.hist[0, 2] = 10.0                                 # filled: visited like the rest
    schedule.check(est, 100)
    assert est.flatness == 1.0 and est.ln_f == pytest.approx(1e-3) and schedule.at_end(est, 100)


def test_every_visited_bin_holds_the_schedule_back_and_diagnostics():
    hist = torch.tensor([[10.0, 10.0, 10.0], [10.0, 0.0, 10.0]])
    visits = torch.tensor([[1000.0, 1000, 1000], [1000, 5, 1000]])
    assert flatness(hist, visits) == 0.0                    # a rarely visited bin not seen again: wait
    all_visited, rare = visit_diagnostics(hist, torch.tensor([[100.0, 100, 100], [100, 5, 100]]))
    assert all_visited == 0.0 and rare == pytest.approx(1 / 6)
    # a bin the reachable limit cuts to 1/20 is not rare for having 1/20 of the visits (wlmd)
    reach = torch.tensor([[1.0, 1, 1], [1, 0.05, 1]])
    assert visit_diagnostics(hist, torch.tensor([[100.0, 100, 100], [100, 5, 100]]), reach)[1] == 0.0
    before = torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64)
    assert ln_g_change(before, before + 7.0, torch.ones(2, 2, dtype=torch.bool)) == 0.0   # a constant shift
    after = before + torch.tensor([[0.0, 0.0], [0.0, 0.4]], dtype=torch.float64)
    assert ln_g_change(before, after, torch.ones(2, 2, dtype=torch.bool)) == pytest.approx(0.3)


def test_wl_accept_follows_density_ratio():
    ln_g = torch.tensor([[0.0, math.log(4.0)]], dtype=torch.float64)
    n = 200_000
    zeros, ones = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)
    u = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    inside = torch.ones(n, dtype=torch.bool)
    up = wl_accept(ln_g, zeros, zeros, zeros, ones, inside, u).double().mean()
    down = wl_accept(ln_g, zeros, ones, zeros, zeros, inside, u).double().mean()
    assert float(up) == pytest.approx(0.25, abs=0.005)     # to the bin of 4x larger g
    assert float(down) == 1.0
    assert not wl_accept(ln_g, zeros, ones, zeros, zeros, ~inside, u).any()


def test_window_bins_cvs_and_flags_out_of_window():
    grid = Grid(Axis(0.0, 1.0, 0.1), Axis(0.0, 1.0, 0.5))
    window = Window(0, grid, 3, 7)
    assert window.shape == (4, 2) and window.x_range == pytest.approx((0.3, 0.7))
    ix, iy, inside = window.bin(torch.tensor([0.35, 0.25, 0.75, 0.35]), torch.tensor([0.2, 0.2, 0.9, 1.2]))
    assert ix.tolist() == [0, 0, 3, 0] and iy.tolist() == [0, 0, 1, 1]
    assert inside.tolist() == [True, False, False, False]
    fx, fy = window.fractional(torch.tensor([0.35]), torch.tensor([0.75]))
    assert float(fx) == pytest.approx(0.5) and float(fy) == pytest.approx(1.5)
    windows = Window.split(grid, 2, 0.75)
    assert windows[0].overlap_with(windows[1]) == (windows[1].lo, windows[0].hi)


def _schedule(kind: str):
    return make_schedule(ScheduleConfig(kind=kind, ln_f_initial=1.0, ln_f_final=1e-3, flatness=0.8,
                                        check_interval=1))


def _stage_with(est: Estimate, flat: bool) -> None:
    """Every bin visited, in this stage too except bin (1, 1) unless `flat`: flatness 1 or 0 (ln g
    is the same everywhere, so the lagging bin is no sink)."""
    est.hist.fill_(1.0)
    est.hist[1, 1] = float(flat)
    est.visits.fill_(1.0)


def test_halving_schedule():
    schedule = _schedule("halving")
    est = Estimate.zeros((2, 2), 1.0, torch.device("cpu"))
    _stage_with(est, flat=False)
    schedule.check(est, 10)
    assert est.ln_f == 1.0 and est.flatness == 0.0 and est.hist.sum() == 3
    _stage_with(est, flat=True)
    schedule.check(est, 10)
    assert est.ln_f == 0.5 and est.stage == 1 and est.hist.sum() == 0 and est.flatness == 1.0
    for _ in range(8):
        _stage_with(est, flat=True)
        schedule.check(est, 10)
    assert est.ln_f == 2.0 ** -9 and not schedule.at_end(est, 10)
    _stage_with(est, flat=True)
    schedule.check(est, 10)
    assert est.ln_f == 2.0 ** -10 and schedule.at_end(est, 10)      # 2^-10 < 1e-3
    _stage_with(est, flat=True)
    schedule.check(est, 10)
    assert est.ln_f == 2.0 ** -11          # it goes on while the estimate settles
    est.converged = True
    _stage_with(est, flat=True)
    schedule.check(est, 10)
    assert est.ln_f == 2.0 ** -11          # frozen once the run converged
    assert schedule.progress(est.ln_f, True, 10) == 1.0 and schedule.progress(1.0, False, 10) == 0.0


def _visited(est: Estimate, visits_per_bin: float, flat: bool) -> None:
    """Every bin visited `visits_per_bin` times over the run; the stage flat or not (``_stage_with``)."""
    _stage_with(est, flat)
    est.visits.fill_(visits_per_bin)


def test_one_over_t_schedule_switches_and_follows_visits_since_the_last_stage():
    """t = walker visits per visited bin since the start of the last halving stage (4 bins here)."""
    schedule = _schedule("1/t")
    est = Estimate.zeros((2, 2), 1.0, torch.device("cpu"), walkers=64)
    _visited(est, 10, flat=False)
    schedule.check(est, 7)                # a visited bin not seen again in this stage: wait
    assert est.ln_f == 1.0 and est.stage == 0 and est.clock_start == 0
    _visited(est, 10, flat=True)
    schedule.check(est, 7)                # flat: halve; 0.5 >= 1/t = 1/10; the clock restarts at 40 visits
    assert est.ln_f == 0.5 and est.stage == 1 and not est.one_over_t and est.clock_start == 40
    _visited(est, 13, flat=True)          # t = (52 - 40) / 4 = 3 (from the run's start it would be 13)
    schedule.check(est, 7)                # 0.25 < 1/t = 1/3: switch to ln f = 1/t
    assert est.one_over_t and est.ln_f == pytest.approx(1 / 3) and est.clock_start == 40
    _visited(est, 11, flat=True)
    schedule.check(est, 7)                # 1/t = 1 would raise ln f: it never grows
    assert est.ln_f == pytest.approx(1 / 3)
    _visited(est, 60, flat=False)
    schedule.check(est, 7)                # flatness no longer matters; the step count never did
    assert est.ln_f == pytest.approx(1 / 50) and not schedule.at_end(est, 7)
    _visited(est, 2010, flat=False)
    schedule.check(est, 7)
    assert est.ln_f == pytest.approx(1 / 2000) and schedule.at_end(est, 7)


@pytest.mark.parametrize("kind", ["halving", "1/t"])
def test_a_stage_ends_at_a_checkpoint_whose_stretch_was_flat_with_crossings(kind):
    """The stage histogram keeps the fill's uneven visits; the stretch since the previous
    checkpoint decides as well, once its walkers crossed every edge MIN_CROSSINGS times."""
    from rewl.schedule import MIN_CROSSINGS
    schedule = _schedule(kind)
    est = Estimate.zeros((2, 2), 1.0, torch.device("cpu"), walkers=64)
    _visited(est, 1000, flat=False)
    schedule.check(est, 7)
    assert est.flatness == 0.0 and est.ln_f == 1.0
    est.recent_flatness, est.recent_crossings = 0.9, MIN_CROSSINGS - 1
    assert not schedule.end_stretch(est, 7) and est.ln_f == 1.0 and est.flatness == 0.0     # too few crossings
    est.recent_flatness, est.recent_crossings = 0.7, MIN_CROSSINGS
    assert not schedule.end_stretch(est, 7) and est.ln_f == 1.0                             # not flat
    est.recent_flatness = 0.85
    assert schedule.end_stretch(est, 7)
    assert est.ln_f == 0.5 and est.stage == 1 and est.hist.sum() == 0 and est.flatness == 0.85
    assert est.clock_start == 4000          # 1/t's clock restarts with the new stage
    est.one_over_t = True
    assert not schedule.end_stretch(est, 7) and est.ln_f == 0.5          # 1/t: no more stages


def test_the_ramp_has_no_stages_to_end():
    schedule = make_schedule(ScheduleConfig(kind="ramp", ln_f_initial=1.0, ln_f_final=1e-3, ramp_steps=10,
                                            plateau_end=20, decay_time=10))
    est = Estimate.zeros((2, 2), 1.0, torch.device("cpu"), walkers=64)
    est.recent_flatness, est.recent_crossings, est.flatness = 1.0, 1000.0, 0.3
    assert not schedule.end_stretch(est, 30) and est.flatness == 0.3 and est.stage == 0


def test_one_over_t_of_a_run_begun_before_schema_4_counts_steps_from_the_start():
    """The per-step rule of older runs, kept when they resume: t = steps per visited bin."""
    schedule = _schedule("1/t")
    est = Estimate.zeros((2, 2), 1.0, torch.device("cpu"), walkers=64)
    est.per_visit = False
    _stage_with(est, flat=False)          # four visited bins; t = step / 4
    schedule.check(est, 40)
    assert est.ln_f == 1.0 and est.stage == 0
    _stage_with(est, flat=True)
    schedule.check(est, 40)               # flat: halve; 0.5 >= 1/t = 0.1
    assert est.ln_f == 0.5 and est.stage == 1 and not est.one_over_t
    _stage_with(est, flat=True)
    schedule.check(est, 12)               # 0.25 < 1/t = 1/3: switch to ln f = 1/t
    assert est.one_over_t and est.ln_f == pytest.approx(1 / 3)
    schedule.check(est, 200)
    assert est.ln_f == pytest.approx(1 / 50) and not schedule.at_end(est, 200)
    schedule.check(est, 8000)
    assert est.ln_f == pytest.approx(1 / 2000) and schedule.at_end(est, 8000)


def test_fnn_parameter_count_and_layout():
    net = FNN(2, (6, 6, 6), 2)
    assert n_params(net) == 116
    layout = param_layout(net)
    assert [s.group for s in layout] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert layout[-1].offset + layout[-1].size == 116


@pytest.mark.parametrize("broadcast", [False, True])
def test_batched_forward_matches_module(broadcast):
    torch.manual_seed(0)
    net = FNN(2, (5, 4), 3, "tanh").double()
    inputs = torch.randn(17, 2, dtype=torch.float64)
    walkers = torch.randn(6, n_params(net), dtype=torch.float64)
    fast = MLPForward(net, broadcast=broadcast)(walkers, inputs.t().contiguous())
    for b in range(6):
        torch.nn.utils.vector_to_parameters(walkers[b], net.parameters())
        torch.testing.assert_close(fast[b], net(inputs).t(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("classes", [2, 4])
def test_observables_match_torch(classes):
    torch.manual_seed(1)
    logits = torch.randn(5, classes, 30, dtype=torch.float64)
    labels = torch.randint(0, classes, (30,))
    ce = cross_entropy_points(logits, labels).mean(dim=1)
    acc = correct_points(logits, labels).mean(dim=1)
    for b in range(5):
        per_point = logits[b].t()
        assert float(ce[b]) == pytest.approx(float(torch.nn.functional.cross_entropy(per_point, labels)), rel=1e-12)
        assert float(acc[b]) == pytest.approx(float((per_point.argmax(1) == labels).double().mean()))


def test_spiral_data_shapes_and_radius():
    x, y = spiral_data(20, 0.0, np.random.default_rng(0))
    assert x.shape == (40, 2) and y.tolist() == [0] * 20 + [1] * 20
    r = np.hypot(x[:, 0], x[:, 1])
    assert r.min() >= 1 and r.max() <= 5


def test_spiral_task_cvs_match_plain_module():
    cfg = parse(SPIRAL)
    task = make_task(cfg, torch.device("cpu"))
    assert task.n_params == 116
    walkers = task.sample_uniform(4, torch.Generator().manual_seed(0))
    assert bool(((walkers >= task.lo) & (walkers <= task.hi)).all())
    x, y = task.cvs(walkers)
    module, n = task.module, task.n_train
    inputs = task.inputs_t.t()
    for b in range(4):
        torch.nn.utils.vector_to_parameters(walkers[b], module.parameters())
        with torch.no_grad():
            out = module(inputs)
            px = math.log(float(torch.nn.functional.cross_entropy(out[:n], task.labels_train)))
            py = float((out[n:].argmax(dim=1) == task.labels_test).float().mean())
            assert [float(v) for v in task.plain_cvs(module)] == pytest.approx([px, py], abs=1e-5)
        assert float(x[b]) == pytest.approx(px, abs=1e-5) and float(y[b]) == pytest.approx(py)


@pytest.mark.parametrize("width", [30, 100, 300, 1000])
def test_spiral_regression_decks_and_mse(width):
    cfg = load(ROOT / "inputs" / f"spiral_regression_w{width}.toml")
    task = make_task(cfg, torch.device("cpu"))
    # 2 -> W -> W -> 1: 3W + (W^2 + W) + (W + 1) parameters; W = 1000 gives 1,005,001 (about 1.0M)
    assert task.n_params == width * width + 5 * width + 1
    assert cfg.sampler.kind == "wlmd" and (task.x_label, task.y_label) == ("ln L_train", "ln L_test")
    assert task.n_train == 250 and task.targets.shape == (500,)
    walkers = task.sample_uniform(2, torch.Generator().manual_seed(0))
    x, y = task.cvs(walkers)
    inputs = task.inputs_t.t()
    for b in range(2):
        torch.nn.utils.vector_to_parameters(walkers[b], task.module.parameters())
        with torch.no_grad():
            out = task.module(inputs)[:, 0]
        mse = torch.nn.functional.mse_loss
        assert float(x[b]) == pytest.approx(math.log(float(mse(out[:250], task.targets[:250]))), abs=1e-4)
        assert float(y[b]) == pytest.approx(math.log(float(mse(out[250:], task.targets[250:]))), abs=1e-4)
    if width == 30:
        assert_chunked_equals_whole(task, 70)      # 500 points: the fourth chunk straddles train/test


def test_move_sizes_adapt_toward_target():
    task = make_task(parse(box_deck()), torch.device("cpu"))
    moves = MoveSizes.initial(task, 0.1)
    group = torch.zeros(100, dtype=torch.long)
    moves.count(group, torch.arange(100) < 90)
    moves.adapt(task, 0.5)
    assert float(moves.sigma[0]) == pytest.approx(0.1 * 1.8)
    assert float(moves.totals()[0][0]) == 100 and float(moves.attempted_since_adapt[0]) == 0
    moves.count(group, torch.zeros(100, dtype=torch.bool))
    assert [float(t[0]) for t in moves.totals()] == [200, 90]
    moves.adapt(task, 0.5)                   # nothing accepted: halve
    assert float(moves.sigma[0]) == pytest.approx(0.09)


def test_walkers_start_spread_over_the_window_and_stay_in_their_bins_while_equilibrating():
    """The drive aims each walker at its own x bin (every bin alike); a walker that cannot get
    there is replaced by an arrived one from its own bin; the sampler's equilibration keeps every
    walker in its bin (WLMC rejects moves out of it, WLMD holds it with walls), so the window's
    low-entropy rows are occupied when sampling starts."""
    cfg = parse(box_deck(x=(-4.0, 0.0, 0.5)))
    task = make_task(cfg, torch.device("cpu"))
    window = whole_grid(cfg)
    lo, hi = spread_targets(window, 20, total=40, first=20)          # the second rank's half of 40 walkers
    assert torch.equal(lo, torch.as_tensor(cfg.grid.x.edges[(torch.arange(20) + 20) % 8]))    # every bin in turn
    assert torch.equal(hi - lo, torch.full((20,), 0.5, dtype=torch.float64))
    lo, _ = spread_targets(window, 4, total=4)                         # fewer walkers than bins: every other bin
    assert lo.tolist() == [-4.0, -3.0, -2.0, -1.0]
    # stand-ins: walkers 0 and 1 (aiming at [-4, -3.5)) did not arrive; two arrived ones are in that bin
    x = torch.tensor([0.0, -0.2, -3.9, -3.6, -1.0, -3.7])
    ranges = (torch.tensor([-4.0, -4.0, -4.0, -4.0, -1.5, -4.0]), torch.tensor([-3.5, -3.5, -3.5, -3.5, -1.0, -3.5]))
    arrived, stuck = torch.tensor([2, 3, 4, 5]), torch.tensor([0, 1])
    assert arrived[_stand_ins(x, ranges, arrived, stuck)].tolist() == [5, 2]    # nearest the centre first, in turn
    assert arrived[_stand_ins(x, (-0.9, -0.6), arrived, stuck)].tolist() == [4, 4]   # none inside: the nearest
    gen = torch.Generator().manual_seed(2)
    params, _ = drive_into_window(task, task.sample_uniform(64, gen), spread_targets(window, 64, 64), window.y_range,
                                  4000, 0.05)
    walkers, inside = Walkers.at(task, params, window)
    assert bool(inside.all())
    assert torch.bincount(walkers.ix, minlength=8).min() >= 6        # 8 per bin aimed at; few stand-ins
    for kind in ("wlmc", "wlmd"):
        kcfg = parse(box_deck(x=(-4.0, 0.0, 0.5), base="box" if kind == "wlmc" else "box_md"))
        sampler = make_sampler(kcfg.sampler, task, window, torch.device("cpu"))
        start, _ = Walkers.at(task, params.clone(), window)
        home = start.ix.clone()
        est = Estimate.zeros(window.shape, 1.0, torch.device("cpu"), with_offsets=sampler.keeps_offsets)
        sampler.start(start, est, gen, 300)
        start.refresh(task, window)
        moved = (start.ix - home).abs()
        assert int(moved.max()) == 0 if kind == "wlmc" else int(moved.max()) <= 1 and float(moved.double().mean()) < 0.5
        assert est.visits.sum() == 0 and est.ln_g.abs().sum() == 0        # no deposits while equilibrating


def test_wlmc_step_respects_box_and_window_and_flattens_1d():
    """One window, one walker batch, on box_quadratic (n=3, m=1): all moves stay in the box and
    the window, and ln g converges to S_1(x) = x / 2 (+ const) along x."""
    cfg = parse(box_deck())
    task = make_task(cfg, torch.device("cpu"))
    grid, window = cfg.grid, whole_grid(cfg)
    gen = torch.Generator().manual_seed(5)
    params, _ = drive_into_window(task, task.sample_uniform(64, gen), (-4.0, 0.0), (-4.0, 0.6), 2000, 0.05)
    walkers, inside = Walkers.at(task, params, window)
    assert bool(inside.all())
    est = Estimate.zeros(window.shape, 0.05, torch.device("cpu"))
    moves = MoveSizes.initial(task, 0.3)
    with torch.no_grad():
        for step in range(4000):
            wlmc_step(task, window, walkers, est, moves, gen)
            if step % 500 == 499:
                moves.adapt(task, 0.5)
                est.ln_f /= 2
    assert bool((walkers.params.abs() <= 1.0).all())
    assert bool((walkers.x >= -4.0).all() and (walkers.x < 0.0).all())
    # marginal over y: ln sum_y g(x, y) is S_1(x) + const = x / 2 + const (x = ln w1^2 <= 0)
    visited = est.visits > 0
    g_x = torch.logsumexp(torch.where(visited, est.ln_g, torch.tensor(-torch.inf, dtype=torch.float64)), dim=1).numpy()
    centres = grid.x.centers
    slope = np.polyfit(centres, g_x, 1)[0]
    assert slope == pytest.approx(0.5, abs=0.05)


@pytest.mark.slow
def test_compiled_cvs_match_eager():
    eager = make_task(parse(SPIRAL), torch.device("cpu"))
    compiled = make_task(parse(deck_text("spiral", model={"compile": True}, **SPIRAL_TABLES)), torch.device("cpu"))
    walkers = eager.sample_uniform(64, torch.Generator().manual_seed(3))
    with torch.no_grad():
        (x0, y0), (x1, y1) = eager.cvs(walkers), compiled.cvs(walkers)
    torch.testing.assert_close(x1, x0, rtol=1e-5, atol=1e-5)
    assert float((y1 - y0).abs().max()) <= 0.01 + 1e-6     # at most a tie-breaking point flips


# -- Wang-Landau molecular dynamics ----------------------------------------------------------------

def test_gaussian_kernel_is_normalised_and_cut_at_four_sigma():
    k = gaussian_kernel(2.0)
    assert k.numel() == 2 * 8 + 1 and float(k.sum()) == pytest.approx(1.0)
    assert float(k[8]) == pytest.approx(float(k.max())) and torch.equal(k, k.flip(0))
    assert float(k[0] / k[8]) == pytest.approx(math.exp(-8.0))       # 4 sigma


def test_reflect_folds_indices_into_the_range():
    assert reflect(torch.arange(-4, 9), 4).tolist() == [3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0]


@pytest.mark.parametrize("per_visit", [True, False])
def test_kernel_deposit_of_a_flat_histogram_raises_every_bin_equally(per_visit):
    # one walker in every bin: the mirrored kernel adds ln f (per visit; ln f / M under the per-step
    # rule of runs begun before schema 4) to every bin, edges included
    est = Estimate.zeros((5, 7), 0.7, torch.device("cpu"), walkers=35)
    est.per_visit = per_visit
    ix, iy = torch.meshgrid(torch.arange(5), torch.arange(7), indexing="ij")
    inside = torch.ones(35, dtype=torch.bool)
    deposit_kernel(est, ix.reshape(-1), iy.reshape(-1), inside, kernel_table((5, 7), gaussian_kernel(1.5)))
    np.testing.assert_allclose(est.ln_g.numpy(), 0.7 if per_visit else 0.7 / 35, rtol=1e-12)
    assert est.hist.sum() == 35 and est.hist.max() == 1


def test_kernel_deposit_skips_outside_walkers_and_records_accuracy():
    est = Estimate.zeros((4, 4), 1.0, torch.device("cpu"), walkers=2, with_accuracy=True)
    deposit_kernel(est, torch.tensor([1, 3]), torch.tensor([2, 0]), torch.tensor([True, False]),
                   kernel_table((4, 4), gaussian_kernel(0.5)), accuracy=torch.tensor([0.75, 0.25]))
    assert float(est.ln_g.sum()) == pytest.approx(1.0)        # one walker inside: ln f
    assert est.hist.tolist()[1][2] == 1 and est.hist.sum() == 1
    assert est.accuracy_sum[1, 2] == 0.75 and est.accuracy_sum.sum() == 0.75


def test_walkers_in_the_walls_raise_the_edge_bin_they_left_only_when_asked():
    # two walkers past the window's x edges (their bins clamped to the edge rows), one past the
    # grid's y range: by default none deposits; with in_walls the first two raise ln g around
    # their edge bins as a walker inside would, and no histogram counts them
    table = kernel_table((6, 3), gaussian_kernel(1.0))
    ix, iy = torch.tensor([0, 5, 2]), torch.tensor([1, 2, 0])
    inside = torch.tensor([False, False, False])
    for in_walls in (None, torch.tensor([True, True, False])):
        est = Estimate.zeros((6, 3), 0.5, torch.device("cpu"), walkers=3, with_offsets=True)
        deposit_kernel(est, ix, iy, inside, table, offsets=(torch.zeros(3), torch.zeros(3)), in_walls=in_walls)
        assert est.hist.sum() == 0 and est.visits.sum() == 0 and est.offset_x_sum.sum() == 0
        if in_walls is None:
            assert est.ln_g.abs().sum() == 0
            continue
        inside_est = Estimate.zeros((6, 3), 0.5, torch.device("cpu"), walkers=3)
        deposit_kernel(inside_est, ix[:2], iy[:2], torch.ones(2, dtype=torch.bool), table)
        np.testing.assert_allclose(est.ln_g.numpy(), inside_est.ln_g.numpy(), rtol=1e-12)
        assert float(est.ln_g.sum()) == pytest.approx(1.0)


def test_entropy_slopes_of_a_linear_estimate_are_exact_everywhere():
    ix, iy = torch.meshgrid(torch.arange(6.0), torch.arange(9.0), indexing="ij")
    ln_g = (2.0 * ix * 0.1 - 3.0 * iy * 0.25).double()       # S = 2 x - 3 y with widths 0.1, 0.25
    fx = torch.tensor([0.0, 0.7, 3.2, 5.99, 6.5])
    fy = torch.tensor([8.9, 0.2, 4.5, 1.0, -0.3])
    sx, sy = entropy_slopes(ln_g, fx, fy, 0.1, 0.25)
    np.testing.assert_allclose(sx.numpy(), 2.0, rtol=1e-6)
    np.testing.assert_allclose(sy.numpy(), -3.0, rtol=1e-6)


def _band(n_x: int = 12, n_y: int = 30) -> torch.Tensor:
    """A reachable region like a network's: at each x a band of y bins, its edges of two slopes."""
    x, y = torch.meshgrid(torch.arange(n_x), torch.arange(n_y), indexing="ij")
    return (y >= 3 + x // 2) & (y < 18 + x)


@pytest.mark.parametrize("width", [1.0, 2.0])
def test_scaled_kernel_raises_a_band_region_evenly_and_is_symmetric(width):
    band = _band()
    shape, kernel = tuple(band.shape), gaussian_kernel(width)
    scale = reachable_scale(band.double(), kernel_table(shape, kernel))
    assert torch.equal(scale > 0, band)
    ix, iy = band.nonzero(as_tuple=True)              # one walker in every bin of the band
    raised = {}
    for name, table in (("scaled", kernel_table(shape, kernel, scale)), ("mirrored", kernel_table(shape, kernel))):
        est = Estimate.zeros(shape, 1.0, torch.device("cpu"))
        deposit_kernel(est, ix, iy, torch.ones(len(ix), dtype=torch.bool), table)
        raised[name] = est.ln_g[band]
    # a flat histogram over the band raises each of its bins by ln f; the window-edge mirror alone
    # leaves the band's edge bins behind (their kernel reaches bins no walker enters)
    np.testing.assert_allclose(raised["scaled"].numpy(), 1.0, atol=1e-8)
    assert float(raised["mirrored"].min()) < 0.8
    # the deposit of a walker in bin a onto bin b equals that of one in b onto a, over the band
    table, n = kernel_table(shape, kernel, scale), band.numel()
    dense = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)[:, None].expand_as(table.targets)
    dense.index_put_((rows.reshape(-1), table.targets.reshape(-1)), table.weights.reshape(-1), accumulate=True)
    inner = dense[band.reshape(-1)][:, band.reshape(-1)]
    np.testing.assert_allclose(inner.numpy(), inner.T.numpy(), atol=1e-12)
    # where every bin is reachable the mirror is already right: the scaling is 1
    np.testing.assert_allclose(reachable_scale(torch.ones(shape, dtype=torch.float64), kernel_table(shape, kernel)).numpy(), 1.0, atol=1e-9)


def test_reach_fraction_of_bins_cut_by_the_region_edge_and_the_per_area_deposit():
    # walkers spread evenly over what they can reach: the band's top bin of each row only up to
    # 1/3 of its height, its bottom bin only from 3/4 up; the last x row only to 0.4 of its width
    band = _band()
    gen = torch.Generator().manual_seed(3)
    n_x, n_y = band.shape
    top = band & (band.cumsum(dim=1) == band.sum(dim=1, keepdim=True))
    bottom = band & (band.cumsum(dim=1) == 1)
    per_bin = 2000
    ix, iy = (t.repeat_interleave(per_bin) for t in band.nonzero(as_tuple=True))
    u_y = torch.rand(len(ix), generator=gen, dtype=torch.float64)
    u_x = torch.rand(len(ix), generator=gen, dtype=torch.float64)
    u_y = torch.where(top[ix, iy], u_y / 3, torch.where(bottom[ix, iy], 0.75 + u_y / 4, u_y))
    u_x = torch.where(ix == n_x - 1, 0.4 * u_x, u_x)
    visits = torch.zeros(band.shape, dtype=torch.float64).index_put_((ix, iy), torch.ones(len(ix), dtype=torch.float64),
                                                                      accumulate=True)
    moments = tuple(torch.zeros_like(visits).index_put_((ix, iy), u, accumulate=True)
                    for u in (u_x, u_y, u_x * u_x, u_y * u_y))
    fraction = reach_fraction(visits, moments)
    expected = torch.ones_like(visits)
    expected[top], expected[bottom] = 1 / 3, 1 / 4
    # the last x row is the window's edge, not the region's: its bins count whole along x
    np.testing.assert_allclose(fraction.numpy(), expected.numpy(), atol=0.04)
    assert float(fraction[~band].sub(1).abs().max()) == 0.0
    # where the window's x edges are the grid's, the limit may lie inside the last row: cut at 0.4
    # (and the first row, whole, stays whole)
    at_grid_ends = reach_fraction(visits, moments, grid_ends_x=(True, True))
    cut_row = expected.clone()
    cut_row[-1, band[-1] & band[-2]] *= 0.4      # (a bin open on both sides along x counts whole along x)
    np.testing.assert_allclose(at_grid_ends.numpy(), cut_row.numpy(), atol=0.05)
    # too few visits to tell: whole
    assert float(reach_fraction(visits.clamp(max=50) * band, moments)[top].min()) == 1.0
    # a histogram flat per unit of reachable area (a bin visited in proportion to its fraction)
    # raises ln g (per unit area) evenly over the band, and fills the stage histogram evenly
    kernel = gaussian_kernel(1.5)
    table = kernel_table(tuple(band.shape), kernel, reachable_scale(band.double(), kernel_table(tuple(band.shape), kernel)),
                         expected)
    est = Estimate.zeros(tuple(band.shape), 1.0, torch.device("cpu"), walkers=1, with_offsets=True)
    for bins, weight in ((band & ~top & ~bottom, 1.0), (top, 1 / 3), (bottom, 1 / 4)):
        bx, by = bins.nonzero(as_tuple=True)
        est.ln_f = weight           # f of a visit in each bin of fraction f: its ln f scaled by f
        deposit_kernel(est, bx, by, torch.ones(len(bx), dtype=torch.bool), table)
        est.hist[bins] *= weight    # and its count
    np.testing.assert_allclose(est.ln_g[band].numpy(), 1.0, atol=1e-8)
    np.testing.assert_allclose(est.hist[band].numpy(), 1.0, atol=1e-12)
    assert table.visit_weight.reshape(band.shape)[top].sub(3).abs().max() < 1e-12


@pytest.mark.parametrize("density, fraction", [("uniform", 0.5), ("thinning to the limit", 0.5),
                                                ("steep entry, whole", 1.0), ("linear tilt, whole", 1.0)])
def test_reach_fraction_tells_a_cut_bin_from_a_tilted_whole_one(density, fraction):
    # one row of 6 bins, walkers in bins 0..3; bin 3 is the region's edge (bin 4 never visited).
    # Offsets in bin 3 by inverse-transform sampling of the density on its reachable part [0, f)
    gen = torch.Generator().manual_seed(5)
    n = 20_000
    r = torch.rand(n, generator=gen, dtype=torch.float64)
    u = {"uniform": 0.5 * r,
         "thinning to the limit": 0.5 * 2 * (1 - (1 - 0.75 * r).sqrt()),  # density 1 - t / 2f
         "steep entry, whole": -torch.log1p(-r * (1 - math.exp(-4.0))) / 4.0,   # e^-4t: walkers enter from below
         "linear tilt, whole": (-1 + (1 + 3 * r).sqrt()),                 # density 1 + u (s = 2/3 around 1/2)
         }[density]
    visits = torch.tensor([[n, n, n, n, 0.0, 0.0]], dtype=torch.float64)
    u_y = torch.cat([torch.rand(3 * n, generator=gen, dtype=torch.float64), u])    # bins 0..2 whole and flat
    u_x = torch.rand(4 * n, generator=gen, dtype=torch.float64)
    moments = tuple(torch.zeros(1, 6, dtype=torch.float64) for _ in range(4))
    for k in range(4):
        part = slice(k * n, (k + 1) * n)
        for total, value in zip(moments, (u_x[part], u_y[part], u_x[part] ** 2, u_y[part] ** 2)):
            total[0, k] = value.sum()
    got = reach_fraction(visits, moments)
    assert abs(float(got[0, 3]) - fraction) < 0.02, (density, got)
    assert float(got[0, 1:3].sub(1).abs().max()) == 0.0 and float(got[0, 0]) > 0.99   # bin 0: the grid's edge, open
    # the mean alone would call the steep whole bin cut
    if density == "steep entry, whole":
        assert 2 * float(u.mean()) < 0.6


def test_entropy_slopes_take_no_difference_across_the_region_edge():
    band = _band()
    ix, iy = torch.meshgrid(torch.arange(12.0, dtype=torch.float64), torch.arange(30.0, dtype=torch.float64), indexing="ij")
    exact = 2.0 * ix * 0.1 - 3.0 * iy * 0.25
    ln_g = torch.where(band, exact, 40.0)             # what deposits leave beyond the edge: no slope there
    bins = band.nonzero()
    gen = torch.Generator().manual_seed(0)
    fx = bins[:, 0] + torch.rand(len(bins), generator=gen, dtype=torch.float64)
    fy = bins[:, 1] + torch.rand(len(bins), generator=gen, dtype=torch.float64)
    sx, sy = entropy_slopes(ln_g, fx, fy, 0.1, 0.25, band)
    # the band's corner bin (11, 28) has no neighbour in the band along x, nor has any centre near
    # the walker there: no x slope is known, 0 (the walker diffuses along x until it leaves)
    blind = (bins[:, 0] == 11) & (bins[:, 1] == 28)
    assert float(sx[blind]) == 0.0
    np.testing.assert_allclose(sx[~blind].numpy(), 2.0, rtol=1e-6)
    np.testing.assert_allclose(sy.numpy(), -3.0, rtol=1e-6)
    sx, sy = entropy_slopes(ln_g, fx, fy, 0.1, 0.25)                 # across the edge: wrong
    assert float((sy + 3.0).abs().max()) > 10


def test_one_column_slopes_equal_the_two_dimensional_interpolation_bit_for_bit():
    """y recorded: the x-only path (``x_slopes``) gives what the bilinear one gives on an estimate
    with a second column, evaluated at the first column's centre, inside a region and at its edges."""
    gen = torch.Generator().manual_seed(3)
    for n_x in (1, 2, 3, 30):
        ln_g = 5.0 * torch.randn(n_x, 1, generator=gen, dtype=torch.float64)
        fx = (n_x + 2) * torch.rand(200, generator=gen, dtype=torch.float64) - 1     # past both edges too
        padded = torch.cat([ln_g, 100.0 * torch.randn(n_x, 1, generator=gen, dtype=torch.float64)], dim=1)
        for region in (None, torch.rand(n_x, 1, generator=gen) > 0.3):
            sx, sy = entropy_slopes(ln_g, fx, torch.full_like(fx, 0.5), 0.1, 0.25, region)
            wide = None if region is None else torch.cat([region, torch.rand(n_x, 1, generator=gen) > 0.5], dim=1)
            sx_2d, _ = entropy_slopes(padded, fx, torch.full_like(fx, 0.5), 0.1, 0.25, wide)
            assert torch.equal(sx, sx_2d) and not bool(sy.any())


def test_wall_slope_and_ramp_schedule():
    v = torch.tensor([-2.0, 0.0, 1.5, 3.0])
    assert wall_slope(v, -1.0, 2.0, 10.0).tolist() == [-20.0, 0.0, 0.0, 20.0]
    ramp = make_schedule(ScheduleConfig(kind="ramp", ln_f_initial=3.0, ramp_steps=200, plateau_end=1000,
                                        decay_time=400))
    assert [ramp.ln_f(t) for t in (0, 100, 200, 1000)] == [0.0, 1.5, 3.0, 3.0]
    assert ramp.ln_f(1400) == pytest.approx(3.0 * 400 / 800)
    est = Estimate.zeros((1, 1), 1.0, torch.device("cpu"))
    ramp.before_step(est, 1400)
    assert est.ln_f == pytest.approx(1.5) and ramp.progress(est.ln_f, False, 500) == 0.0
    short = make_schedule(ScheduleConfig(kind="ramp", ln_f_final=1e-6, plateau_end=10))
    est.ln_f = 1e-9
    assert not short.at_end(est, 5)                           # during the ramp ln f starts at 0
    assert short.at_end(est, 11)


def test_smooth_accuracy_tends_to_the_hard_accuracy():
    def accuracy(logits, labels):
        return correct_points(logits, labels).mean(dim=1)

    def smooth_accuracy(logits, labels, k):
        return smooth_accuracy_points(logits, labels, k).mean(dim=1)
    logits = torch.randn(3, 4, 50, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(1))
    hard = accuracy(logits, labels)
    torch.testing.assert_close(smooth_accuracy(logits, labels, 1e4), hard, atol=1e-3, rtol=0)
    two = logits[:, :2]
    lab2 = labels % 2
    torch.testing.assert_close(smooth_accuracy(two, lab2, 1e4), accuracy(two, lab2), atol=1e-3, rtol=0)
    assert ((smooth_accuracy(logits, labels, 1.0) > 0) & (smooth_accuracy(logits, labels, 1.0) < 1)).all()


def test_batched_md_gradients_are_per_walker_gradients():
    """With y flattened, WLMD's y is the smoothed accuracy (differentiable) and the hard accuracy
    comes beside it; with y recorded (the default) y is the hard accuracy itself."""
    recorded = make_task(parse(deck_text("spiral_md")), torch.device("cpu"))
    assert recorded.y_label == "A_test" and not recorded.has_accuracy
    cfg = parse(deck_text("spiral_md"), overrides=('grid.y.mode="flattened"',))
    task = make_task(cfg, torch.device("cpu"))
    w = task.sample_uniform(5, torch.Generator().manual_seed(2)).requires_grad_(True)
    x, y, hard = task.md_cvs(w)
    grad, = torch.autograd.grad((0.3 * x).sum() + (-1.7 * y).sum(), w)
    for b in range(5):
        one = w[b:b + 1].detach().requires_grad_(True)
        xb, yb, _ = task.md_cvs(one)
        g1, = torch.autograd.grad(0.3 * xb.sum() - 1.7 * yb.sum(), one)
        torch.testing.assert_close(grad[b], g1[0], rtol=1e-5, atol=1e-6)
    assert hard.shape == (5,) and task.y_label == "A_smooth"


def test_a_recorded_wlmd_step_reads_the_training_points_alone_and_moves_as_the_full_one():
    """y recorded: the force needs x alone, so the step evaluates ``Task.x_of`` (the training points;
    y comes at synchronisations). It moves the walkers as a step on all points does where ln g is
    flat in y: a flattened deck whose one y bin holds every y."""
    one_window = ("windows.count=1",)
    recorded_cfg = parse(deck_text("spiral_md"), overrides=one_window)
    full_cfg = parse(deck_text("spiral_md"), overrides=one_window + (
        'grid.y.mode="flattened"', "grid.y.min=-0.5", "grid.y.max=1.5", "grid.y.width=2.0"))
    moved = {}
    for name, cfg in (("recorded", recorded_cfg), ("full", full_cfg)):
        task, window = make_task(cfg, torch.device("cpu")), whole_grid(cfg)
        if name == "recorded":
            task.md_cvs = None                                     # any use of the test points fails
        gen = torch.Generator().manual_seed(5)
        params = 0.3 * task.sample_uniform(16, gen)
        walkers, _ = Walkers.at(task, params, window)
        walkers.velocities = thermal_velocities(params, gen)
        est = Estimate.zeros(window.shape, 0.01, torch.device("cpu"))
        est.ln_g[:] = 3.0 * torch.linspace(0, 1, window.n_x, dtype=torch.float64)[:, None]   # a force along x
        md = Langevin.from_config(cfg.sampler, window, 300.0, torch.device("cpu"))
        counters = MDCounters.zeros(torch.device("cpu"))
        for _ in range(5):
            wlmd_step(task, window, walkers, est, md, counters, gen, kernel_table(window.shape, md.kernel))
        moved[name] = (walkers.params, est.ln_g, est.visits, walkers.x)
    (params_r, ln_g_r, visits_r, x_r), (params_f, ln_g_f, visits_f, x_f) = moved["recorded"], moved["full"]
    torch.testing.assert_close(params_r, params_f, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ln_g_r, ln_g_f)
    assert torch.equal(visits_r, visits_f) and visits_r.sum() == 5 * 16
    torch.testing.assert_close(x_r, x_f)


@pytest.mark.slow
@pytest.mark.parametrize("integrator,expected", [("baoab", 0.0), ("reference", 1 - 1 / 1.5)])
def test_md_with_the_exact_entropy_gives_a_flat_histogram(integrator, expected):
    """ln g fixed to the exact S of box_quadratic: visits must be flat in (x, y). The reference
    scheme at gamma = 0.5 samples at T = 1 + gamma / (2 (1 - gamma)) = 1.5, so ln H rises with slope
    1 - 1/T along x and y (S has slope 1 in both); BAOAB has none."""
    axis = (-3.0, 0.0, 0.25)
    cfg = parse(box_deck(4, 2, axis, axis, "box_md", sampler={"gamma": 0.5, "kernel_width": 1.0,
                                                              "integrator": integrator}))
    task, grid, window = make_task(cfg, torch.device("cpu")), cfg.grid, whole_grid(cfg)
    gen = torch.Generator().manual_seed(4)
    params = task.sample_uniform(2000, gen)
    x, y = task.cvs(params)
    params = params[(x > -3) & (x < 0) & (y > -3) & (y < 0)][:256].clone()
    walkers, _ = Walkers.at(task, params, window)
    walkers.velocities = thermal_velocities(params, gen)
    est = Estimate.zeros(window.shape, 1.0, torch.device("cpu"))
    est.ln_g[:] = torch.as_tensor(box_entropy(grid.x.edges, grid.y.edges, 4, 2, 1.0))
    md = Langevin.from_config(cfg.sampler, window, cfg.sampler.wall_strength, torch.device("cpu"))
    counters = MDCounters.zeros(torch.device("cpu"))
    hist = torch.zeros_like(est.ln_g)
    deposits = kernel_table(window.shape, md.kernel)              # unused: ln g stays fixed (update=False)
    for step in range(8000):
        wlmd_step(task, window, walkers, est, md, counters, gen, deposits, update=False)
        if step >= 2000:
            hist.view(-1).index_add_(0, walkers.ix * grid.y.bins + walkers.iy,
                                     window.bin(walkers.x, walkers.y)[2].double())
    ln_h = torch.log(hist / hist.mean()).numpy()
    cx, cy = np.meshgrid(grid.x.centers, grid.y.centers, indexing="ij")
    design = np.stack([cx.ravel(), cy.ravel(), np.ones(cx.size)], axis=1)
    slope_x, slope_y, _ = np.linalg.lstsq(design, ln_h.ravel(), rcond=None)[0]
    print(f"{integrator}: ln H slopes {slope_x:.3f} {slope_y:.3f}, expected {expected:.3f}")
    assert abs(slope_x - expected) < 0.05 and abs(slope_y - expected) < 0.05


def test_round_trips_count_lowest_highest_lowest():
    task = make_task(parse(box_deck()), torch.device("cpu"))
    walkers, _ = Walkers.at(task, task.sample_uniform(3, torch.Generator().manual_seed(0)), whole_grid(parse(box_deck())))
    walkers.track_round_trips(lowest=False, highest=True)     # at the top first: no trip begins there
    assert walkers.trip_state.tolist() == [0, 0, 0]
    for lowest, highest in ((True, False), (False, False), (False, True), (True, False), (False, True)):
        walkers.track_round_trips(lowest, highest)
    assert walkers.round_trips.tolist() == [1, 1, 1] and walkers.trip_state.tolist() == [2, 2, 2]
    walkers.track_round_trips(lowest=True, highest=True)      # one window: no trips at all
    assert walkers.round_trips.tolist() == [1, 1, 1]


def test_reflect_at_box_mirrors_positions_and_reverses_velocities():
    lo, hi = torch.tensor([-1.0, -1.0, 0.0]), torch.tensor([1.0, 1.0, 0.5])
    params = torch.tensor([[1.25, -0.5, 0.7], [-1.5, 0.2, -0.1], [5.0, 0.0, 0.25]])
    v = torch.ones(3, 3)
    reflect_at_box(params, v, lo, hi)
    torch.testing.assert_close(params, torch.tensor([[0.75, -0.5, 0.3], [-0.5, 0.2, 0.1], [-1.0, 0.0, 0.25]]))
    assert v.tolist() == [[-1, 1, -1], [-1, 1, -1], [-1, 1, 1]]
    untouched = params.clone()
    reflect_at_box(params, v, lo, hi)
    assert torch.equal(params, untouched) and v.tolist() == [[-1, 1, -1], [-1, 1, -1], [-1, 1, 1]]


def test_ln_g_change_is_measured_against_the_last_scheduled_checkpoint():
    """And with it the flatness of the interval's visits and the crossings of its least crossed edge."""
    from rewl.wl import Estimate
    est = Estimate.zeros((2, 2), 1.0, torch.device("cpu"), walkers=4)
    est.visits += 1
    est.mark_checkpoint()                       # step 0: the reference
    est.ln_g[0, 0] += 0.5
    est.visits += torch.tensor([[10.0, 10.0], [10.0, 5.0]])
    est.edge_crossings += 6.0
    est.mark_checkpoint(scheduled=False)        # a stop: measured, the reference stays
    assert est.ln_g_change == pytest.approx(0.5 - 0.5 / 4)          # after the mean change
    assert est.recent_flatness == pytest.approx(5 / 8.75) and est.recent_crossings == 6.0
    est.ln_g[0, 0] += 0.25
    est.visits += torch.tensor([[5.0, 5.0], [5.0, 10.0]])            # 15 each since step 0: flat
    est.edge_crossings += 2.0
    est.mark_checkpoint()                       # scheduled: against step 0, then the new reference
    assert est.ln_g_change == pytest.approx(0.75 - 0.75 / 4)
    assert est.recent_flatness == pytest.approx(1.0) and est.recent_crossings == 8.0
    est.visits += torch.tensor([[10.0, 10.0], [10.0, 40.0]])         # one bin 40 / 17.5 of the mean
    est.mark_checkpoint(scheduled=False)
    assert est.ln_g_change == 0.0 and est.recent_flatness == pytest.approx(17.5 / 40) and est.recent_crossings == 0.0
    est.mark_checkpoint(keep_stretch=True)    # ln f at its end: the stretch keeps growing from here
    est.visits += torch.tensor([[30.0, 30.0], [30.0, 0.0]])          # 40 each since the reference: flat
    est.edge_crossings += 3.0
    est.mark_checkpoint(keep_stretch=True)
    assert est.recent_flatness == pytest.approx(1.0) and est.recent_crossings == 3.0


def test_crossings_count_every_x_edge_a_move_passes():
    """Walkers moving 0 -> 1, 3 -> 1 (two edges), 2 -> 2 (none) and 4 -> 0 (four) in a window of
    five x bins: edge i (between bins i and i + 1) crossed 2, 2, 2, 1 times."""
    from rewl.wl import Estimate, fold_crossings, mark_crossings
    est = Estimate.zeros((5, 1), 1.0, torch.device("cpu"))
    marks = torch.zeros(5, dtype=torch.float64)
    mark_crossings(marks, torch.tensor([0, 3, 2, 4]), torch.tensor([1, 1, 2, 0]))
    fold_crossings(est, marks)
    assert est.edge_crossings.tolist() == [2.0, 2.0, 2.0, 1.0] and not marks.any()
    mark_crossings(marks, torch.tensor([1, 1, 2, 0]), torch.tensor([2, 1, 2, 0]))
    fold_crossings(est, marks)
    assert est.edge_crossings.tolist() == [2.0, 3.0, 2.0, 1.0]
