"""Wang-Landau Hamiltonian Monte Carlo (sampler kind "hmc"): the Metropolis test makes the sampled
distribution exact for any step size, the exact entropy through mpiexec, resume bit for bit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import assert_same_run, deck_text, rewl_here, run_rewl
from rewl.config import parse
from rewl.grid import Window
from rewl.samplers.hmc import Trajectories, hmc_step
from rewl.storage import RunStore
from rewl.tasks import make_task
from rewl.testsystems import box_entropy
from rewl.walkers import Walkers
from rewl.wl import Estimate

HMC = {"kind": "hmc", "walkers_per_rank": 64}
STEPS = 1200


def hmc_deck(base: str, **tables) -> str:
    """A deck of `base` with the hmc sampler (the base's WLMC-only keys dropped)."""
    return deck_text(base, **tables).replace("sigma_initial = 0.3\n", "")


@pytest.mark.parametrize("mode,eps,width", [("recorded", 0.4, 0.25), ("flattened", 0.15, 0.5)])
def test_hmc_with_the_exact_entropy_gives_a_flat_histogram(mode, eps, width):
    """ln g fixed to the exact S of box_quadratic (n 4, m 2): the walkers' visits must be flat in x
    (y recorded: ln g(x) the marginal over all y) or in (x, y) (flattened), at a step where the
    smoothed slopes steer the trajectories visibly off the binned target (acceptance well below 1)."""
    axis = {"min": -3.0, "max": 0.0, "width": width}
    cfg = parse(hmc_deck("box", task={"n": 4, "m": 2}, grid__x=axis, grid__y={**axis, "mode": mode},
                         windows={"count": 1}, sampler=HMC))
    task, grid = make_task(cfg, torch.device("cpu")), cfg.grid
    window = Window.split(grid, 1, 0.75)[0]
    gen = torch.Generator().manual_seed(4)
    params = task.sample_uniform(4000, gen)
    x, y = task.cvs(params)
    inside = (x > -3) & (x < 0) & ((y > -3) & (y < 0) if mode == "flattened" else True)
    walkers, _ = Walkers.at(task, params[inside][:128].clone(), window)
    est = Estimate.zeros(window.shape, 1.0, torch.device("cpu"))
    y_edges = grid.y.edges if mode == "flattened" else np.array([-60.0, math.log(2.0)])   # recorded: every y
    est.ln_g[:] = torch.as_tensor(box_entropy(grid.x.edges, y_edges, 4, 2, 1.0, partial=True))
    traj = Trajectories.initial(task, eps)
    traj.adapt_scales(task, walkers.params)
    hist = torch.zeros_like(est.ln_g)
    accepted = 0.0
    for step in range(STEPS):
        accepted += float(hmc_step(task, window, walkers, est, traj, 5, gen, update=False).double().mean())
        if step >= STEPS // 4:
            hist.view(-1).index_add_(0, walkers.ix * est.ln_g.shape[1] + walkers.iy,
                                     torch.ones(len(walkers.ix), dtype=torch.float64))
    ln_h = torch.log(hist / hist.mean()).numpy()
    cx, cy = np.meshgrid(grid.x.centers, grid.y.centers if mode == "flattened" else [0.0], indexing="ij")
    design = np.stack([cx.ravel(), cy.ravel(), np.ones(cx.size)], axis=1)
    slope_x, slope_y, _ = np.linalg.lstsq(design, ln_h.ravel(), rcond=None)[0]
    print(f"{mode}: acceptance {accepted / STEPS:.2f}, ln H slopes {slope_x:.3f} {slope_y:.3f}, "
          f"range {ln_h.min():.3f} .. {ln_h.max():.3f}")
    assert 0.1 < accepted / STEPS < 0.8
    assert abs(slope_x) < 0.04 and abs(slope_y) < 0.04
    assert np.abs(ln_h).max() < (0.1 if mode == "recorded" else 0.3)   # seeds 4-7: up to 0.054 / 0.225


@pytest.mark.mpi
def test_hmc_resume_is_bit_identical(make_deck, tmp_path):
    """2 ranks, 2 windows on the spiral net: stop at 150 steps (between two adaptations of eps and
    the scales), resume to 300; equal to a straight 300-step run, the integrator's state included."""
    tables = {"sampler": {"kind": "hmc", "adapt_interval": 100, "leapfrog_steps": 4},
              "windows": {"count": 2}, "schedule": {"ln_f_initial": 1 / 32}}
    straight = make_deck("spiral", "straight", run={"max_steps": 300}, **tables)
    proc = run_rewl(["run", str(straight)], ranks=2)
    assert proc.returncode == 0, proc.stderr
    first = make_deck("spiral", "stopped", run={"max_steps": 150}, **tables)
    assert run_rewl(["run", str(first)], ranks=2).returncode == 0
    longer = make_deck("spiral", "longer", run={"max_steps": 300}, output={"dir": str(tmp_path / "stopped")}, **tables)
    proc = run_rewl(["run", str(longer), "--resume"], ranks=2)
    assert proc.returncode == 0, proc.stderr
    a, b = RunStore(tmp_path / "straight"), RunStore(tmp_path / "stopped")
    assert_same_run(a, b, 2, 300)
    rec = a.read_run()
    assert rec.sampler == "hmc" and rec.swap_accepted.sum() > 0
    assert all(0 < w.step_size < 2 and w.leapfrog_steps == 4 for w in rec.windows)
    assert (rec.move_accepted / rec.move_attempted).min() > 0.2
    assert "eps=" in proc.stdout
    info = rewl_here(["info", str(tmp_path / "straight")])
    assert info.returncode == 0 and "hmc step x leapfrog steps per window: " in info.stdout, info.stdout
