"""``python -m rewl bench DECK``: walker-steps per second of the batched WLMC step against a plain
one-walker loop (an nn.Module, one forward per step) on the same model and data."""
from __future__ import annotations

import time

import torch

from .config import Config
from .devices import keep_freed_memory
from .grid import Grid, window_bins
from .moves import MoveSizes, Walkers, drive_into_window, wlmc_step
from .tasks import make_task
from .wl import Estimate


def _timed(step, seconds: float) -> tuple[int, float]:
    """Run step() repeatedly for about `seconds` (after a short warm-up); returns (calls, time)."""
    t_end = time.perf_counter() + 0.2
    while time.perf_counter() < t_end:
        step()
    calls, t0 = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return calls, dt


def bench(cfg: Config, seconds: float, walkers: int | None, threads: int) -> int:
    torch.set_num_threads(threads)
    keep_freed_memory()
    device = torch.device("cpu")
    task = make_task(cfg, device)
    grid = Grid.from_config(cfg.grid)
    lo, hi = window_bins(grid.x.bins, cfg.windows.count, cfg.windows.overlap)[cfg.windows.count // 2]
    batch = walkers or cfg.sampler.walkers_per_rank
    gen = torch.Generator().manual_seed(cfg.run.seed)
    params = task.sample_uniform(batch, gen)
    params, _ = drive_into_window(task, params, (float(grid.x.edges[lo]), float(grid.x.edges[hi])),
                                  (grid.y.min, grid.y.max), cfg.init.max_iterations, cfg.init.learning_rate)
    state, _ = Walkers.at(task, params.detach(), grid, lo, hi - lo)
    est = Estimate.zeros(hi - lo, grid.y.bins, 1e-3, device)
    moves = MoveSizes.initial(task, cfg.sampler.sigma_initial)
    print(f"bench {cfg.path}: {task.describe()}; {threads} torch thread(s); window x bins {lo}-{hi - 1}")

    def batched() -> None:
        with torch.no_grad():
            wlmc_step(task, grid, state, est, moves, lo, gen)
    calls, dt = _timed(batched, seconds)
    fast = calls * batch / dt
    print(f"  batched wlmc   {batch:6d} walkers: {fast:12,.0f} walker-steps/s ({calls} steps in {dt:.2f} s)")

    plain = getattr(task, "plain_step_fn", None)
    if plain is None:
        print("  plain loop     (this task has no nn.Module)")
        return 0
    module, cvs = plain()
    with torch.no_grad():
        vector = torch.nn.utils.parameters_to_vector(module.parameters())
        vector.copy_(params[0])
        torch.nn.utils.vector_to_parameters(vector, module.parameters())
    flat_params = list(module.parameters())
    sizes = [p.numel() for p in flat_params]
    ln_g = est.ln_g
    current = list(cvs(module))

    def one() -> None:
        # the loop a plain implementation would write: perturb one weight, forward, accept or undo
        with torch.no_grad():
            i = int(torch.randint(0, task.n_params, (1,), generator=gen))
            k = 0
            while i >= sizes[k]:
                i -= sizes[k]
                k += 1
            p = flat_params[k].view(-1)
            old = float(p[i])
            p[i] = old + 0.01 * (2 * float(torch.rand(1, generator=gen)) - 1)
            x, y = cvs(module)
            ix, iy = int(grid.x.index(torch.tensor(x))) - lo, int(grid.y.index(torch.tensor(y)))
            ok = 0 <= ix < hi - lo and 0 <= iy < grid.y.bins
            ox, oy = int(grid.x.index(torch.tensor(current[0]))) - lo, int(grid.y.index(torch.tensor(current[1])))
            if ok and float(torch.rand(1, generator=gen)) < float(torch.exp(ln_g[ox, oy] - ln_g[ix, iy])):
                current[:] = [x, y]
            else:
                p[i] = old
    calls, dt = _timed(one, seconds)
    slow = calls / dt
    print(f"  plain loop          1 walker : {slow:12,.0f} walker-steps/s ({calls} steps in {dt:.2f} s)")
    print(f"  ratio batched / plain: {fast / slow:.0f}x")
    return 0
