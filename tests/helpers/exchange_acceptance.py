"""Replica exchange against its formula, under ``mpiexec -n 2``: two windows with prescribed
random ln g, every walker placed in the overlap at a fixed (x, y) bin, many exchange rounds
(walkers put back after each), and the accepted count against the exact expectation: the mean,
over all pairs of a lower and an upper walker (the round pairs them uniformly at random), of
min(1, g_0(X) g_1(Y) / (g_0(Y) g_1(X))), computed here from the global ln g without the
exchange code. Prints one JSON line on rank 0: accepted, attempted, expected, sigma.

    python exchange_acceptance.py SWAPPED      (SWAPPED 1: the two windows' ln g exchanged)
"""
import json
import sys

import numpy as np
import torch

from rewl.comm import Comm, env_rank, run_or_abort
from rewl.config import parse
from rewl.exchange import SwapStats, exchange_round
from rewl.grid import Window
from rewl.tasks import make_task
from rewl.walkers import Walkers
from rewl.wl import Estimate

DECK = """
[task]
kind = "box_quadratic"
n = 4
m = 2
[grid.x]
min = -3.0
max = 0.0
width = 0.25
[grid.y]
min = -3.0
max = 0.0
width = 0.5
[windows]
count = 2
overlap = 0.5
"""
ROUNDS, WALKERS = 400, 6

def main() -> int:
    swapped = sys.argv[1] == "1"
    cfg = parse(DECK, "exchange.toml")
    comm = Comm(2, 1)
    windows = Window.split(cfg.grid, 2, cfg.windows.overlap)
    lo, hi = windows[0].overlap_with(windows[1])
    # the global ln g of each window (x bins of the whole grid, y bins), drawn alike on both ranks
    table = np.random.default_rng(3).normal(scale=1.5, size=(2, cfg.grid.x.bins, cfg.grid.y.bins))
    if swapped:
        table = table[::-1]
    window = windows[comm.window]
    task = make_task(cfg, torch.device("cpu"))
    walkers, _ = Walkers.at(task, task.sample_uniform(WALKERS, torch.Generator().manual_seed(comm.rank)), window)
    est = Estimate.zeros(window.shape, 1.0, torch.device("cpu"))
    est.ln_g = torch.as_tensor(table[comm.window, window.lo:window.hi].copy())
    # fixed overlap positions: walker k of window w at x bin lo + (k + w) mod (hi - lo), y bin (k + 2w) mod n_y
    place = np.random.default_rng(10 + comm.window)
    gx = lo + place.integers(0, hi - lo, WALKERS)
    gy = place.integers(0, cfg.grid.y.bins, WALKERS)
    x0 = torch.as_tensor(cfg.grid.x.edges[gx] + 0.5 * cfg.grid.x.width)
    y0 = torch.as_tensor(cfg.grid.y.edges[gy] + 0.5 * cfg.grid.y.width)
    params0 = walkers.params.clone()
    rng = np.random.default_rng(100 + comm.rank)
    stats = SwapStats.zeros(2)
    for r in range(ROUNDS):
        walkers.params[:] = params0
        walkers.x, walkers.y = x0.clone(), y0.clone()
        walkers.ix, walkers.iy, inside = window.bin(walkers.x, walkers.y)
        assert bool(inside.all())
        exchange_round(comm, 2 * r, windows, walkers, est, rng, stats)   # even rounds pair windows 0 and 1

    positions = comm.world.gather(np.stack([gx, gy]), root=0)
    if comm.is_root:
        (ax, ay), (bx, by) = positions                      # lower window's walkers X, upper's Y
        ln_ratio = (table[0][ax, ay][:, None] + table[1][bx, by][None, :]
                    - table[0][bx, by][None, :] - table[1][ax, ay][:, None])
        p = np.minimum(1.0, np.exp(ln_ratio)).mean()
        attempted = ROUNDS * WALKERS
        print(json.dumps({"accepted": float(stats.accepted[0]), "attempted": float(stats.attempted[0]),
                          "expected": p * attempted, "sigma": float(np.sqrt(attempted * p * (1 - p)))}))
    return 0


sys.exit(run_or_abort(main, env_rank()))
