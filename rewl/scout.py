"""`rewl scout`: where a task's training loss lives before a deck is written. ln L_train of
walkers drawn uniform in the weight box (where Wang-Landau walkers start, the top of the range)
and of a few runs of the deck's optimiser (where training ends, the bottom), and a `[grid.x]`
that spans both with bins fine enough for the entropy's slope (docs/convergence.md, "Bins as fine
as the entropy is steep")."""
from __future__ import annotations

import math
import sys

import numpy as np
import torch

from .config import Config
from .tasks import TaskFactory, make_task

# ln g may change by about this much between neighbouring x bins: walkers reach the far side of a
# bin in proportion to exp(-(the change of S across it)), so crossings fall exponentially with it
STEP_PER_BIN = 1.5
NICE_WIDTHS = (0.1, 0.05, 0.025, 0.02, 0.01, 0.005, 0.0025, 0.002, 0.001)


def bin_width_for(slope: float) -> float:
    """The widest of NICE_WIDTHS over which S changes by at most STEP_PER_BIN at `slope` (per unit of x)."""
    for width in NICE_WIDTHS:
        if width * slope <= STEP_PER_BIN:
            return width
    return NICE_WIDTHS[-1]


def box_slope(x: np.ndarray) -> float:
    """The slope of S = ln g along x measured from walkers uniform in the box (their density is
    g(x)): ln of the ratio of the 25 % and 5 % quantiles' cumulative fractions over their distance."""
    q05, q25 = np.quantile(x, [0.05, 0.25])
    return math.log(0.25 / 0.05) / max(q25 - q05, 1e-12)


def scout(cfg: Config, walkers: int, runs: int, threads: int, custom_task: TaskFactory | None = None) -> int:
    """Print the ranges and the suggested [grid.x]; 0, or 2 for bad counts."""
    from .baseline import train_baselines
    if walkers < 20 or runs < 0:
        print(f"rewl: error: scout needs --walkers >= 20 and --runs >= 0 (got {walkers}, {runs})", file=sys.stderr)
        return 2
    torch.set_num_threads(threads)
    task = make_task(cfg, torch.device("cpu"), custom_task)
    gen = torch.Generator().manual_seed(cfg.run.seed)
    with torch.no_grad():
        x_box = torch.cat([task.cvs(task.sample_uniform(min(256, walkers - k), gen))[0]
                           for k in range(0, walkers, 256)]).double().numpy()
    x_box = x_box[np.isfinite(x_box)]
    q = np.quantile(x_box, [0.0, 0.05, 0.5, 0.95, 1.0])
    print(f"scout {cfg.path}: {task.describe()}")
    print(f"  {len(x_box)} walkers uniform in the box: {task.x_label} min {q[0]:.3f}, 5 % {q[1]:.3f}, median {q[2]:.3f}, "
          f"95 % {q[3]:.3f}, max {q[4]:.3f}")
    low, low_what = q[1], "the box's 5 % point"
    if runs:
        try:
            rec = train_baselines(cfg, runs, custom_task=custom_task)
        except TypeError as exc:                  # a hand-written task without a network
            print(f"  optimiser runs: none ({exc})")
        else:
            ends = rec.x[:, -1]
            b = cfg.baseline
            print(f"  {rec.runs} runs of {b.optimizer} (lr {b.learning_rate:g}, batch {b.batch_size}, {b.steps} steps, "
                  f"[baseline]): final {task.x_label} min {ends.min():.3f}, median {np.median(ends):.3f}, max {ends.max():.3f}")
            if ends.min() < low:
                low, low_what = float(ends.min()), "the lowest optimiser end"
    slope = max(box_slope(x_box), task.n_params / 2)
    width = bin_width_for(slope)
    lo = math.floor((low - 0.5) / 0.1) * 0.1
    hi = math.ceil(q[3] / 0.1) * 0.1
    print(f"  entropy slope: {box_slope(x_box):.3g} per unit of x among the box's walkers, n_params / 2 = "
          f"{task.n_params / 2:g} near a minimum (a loss quadratic in the weights); bins of {width:g} keep the change "
          f"of S per bin within about {STEP_PER_BIN}")
    print("  suggested deck:")
    print(f"    [grid.x]        # from 0.5 below {low_what} to the box's 95 % point")
    print(f"    min = {lo:.1f}")
    print(f"    max = {hi:.1f}")
    print(f"    width = {width:g}")
    return 0
