"""``rewl bench DECK``: walker-steps per second of the deck's batched sampler step (WLMC
or WLMD) against a plain one-walker loop on the same model and data: an nn.Module with one forward
per step (WLMC), or one forward and one backward per step (WLMD). ``--sweep N,N,...``: the
batched step's rate and memory at each walker count, to choose ``walkers_per_rank``."""
from __future__ import annotations

import contextlib
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from .config import GRADIENT_SAMPLERS, Config
from .devices import keep_freed_memory
from .grid import Grid, Window
from .models import param_layout
from .samplers import make_sampler
from .samplers.wlmd import Langevin
from .tasks import TaskFactory, make_task
from .walkers import Walkers, drive_into_window
from .wl import Estimate, wall_slope


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


def byte_size(n_bytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes:.0f} B"


def step_memory(step, device: torch.device) -> tuple[int, str]:
    """Bytes one call of step() needs above what was allocated before it, and how they were
    measured: on a GPU the peak allocated during the call (torch's allocator statistics); on the
    CPU, which keeps no such statistics, the peak of the running sum of torch's allocations and
    frees recorded by the profiler, operator by operator (a transient inside one operator is not
    seen)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        return torch.cuda.max_memory_allocated(device) - before, "peak allocated during one step"
    with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    allocated = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        allocated += event.self_cpu_memory_usage
        peak = max(peak, allocated)
    return peak, "peak allocated during one step, between operators (torch profiler)"


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 to /dev/null for the block: the profiler's allocator prints, from C++, a
    warning for every block freed during profiling that was allocated before it (the walkers' old
    CVs), which says nothing to a user. Python exceptions still propagate (printed after)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def walker_bytes(state: Walkers) -> int:
    """Bytes of the walkers' own arrays: parameters (B, n) and velocities (B, n) where they have them."""
    return sum(t.numel() * t.element_size() for t in (state.params, state.velocities) if t is not None)


def _batched_step(cfg: Config, task, window: Window, state: Walkers, gen: torch.Generator):
    """The deck's sampler started on `state` (velocities, where it has them) with a flat estimate,
    and one batched step of all walkers, finished on the device when called; returns
    (sampler, estimate, step)."""
    device = task.lo.device
    sampler = make_sampler(cfg.sampler, task, window, device)
    est = Estimate.zeros(window.shape, 1e-3, device, with_accuracy=task.has_accuracy, with_offsets=sampler.keeps_offsets)
    sampler.start(state, est, gen, 0)

    def step() -> None:
        sampler.step(state, est, gen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return sampler, est, step


def rank_memory(cfg: Config, task, window: Window, probe: int = 4) -> tuple[float, float, str]:
    """Bytes per walker of one step (``step_memory`` over `probe` walkers drawn in the box, on the
    task's device) and of the walkers' own arrays, and how the first was measured."""
    gen = torch.Generator(device=task.lo.device).manual_seed(cfg.run.seed)
    state, _ = Walkers.at(task, task.sample_uniform(probe, gen), window)
    _, _, step = _batched_step(cfg, task, window, state, gen)
    used, what = step_memory(step, task.lo.device)
    return used / probe, walker_bytes(state) / probe, what


def sweep(cfg: Config, seconds: float, counts: list[int], threads: int, device_name: str = "cpu",
          custom_task: TaskFactory | None = None) -> int:
    """The batched step's walker-steps/s and memory at each walker count in `counts`. The walkers
    are copies of 16 driven into the middle window (the rate does not depend on where they are
    inside it); the memory is ``step_memory``'s, with the walkers' own arrays besides."""
    torch.set_num_threads(threads)
    keep_freed_memory()
    device = torch.device(device_name)
    task = make_task(cfg, device, custom_task)
    window = Window.split(cfg.grid, cfg.windows.count, cfg.windows.overlap)[cfg.windows.count // 2]
    gen = torch.Generator(device=device).manual_seed(cfg.run.seed)
    seeds, _ = drive_into_window(task, task.sample_uniform(min(16, max(counts)), gen), window.x_range, window.y_range,
                                 cfg.init.max_iterations, cfg.init.learning_rate)
    seeds = seeds.detach()
    print(f"bench --sweep {cfg.path}: {task.describe()}; {cfg.sampler.kind}; {threads} torch thread(s) on {device}")
    print(f"  {'walkers':>8}  {'walker-steps/s':>14}  {'step memory':>12}  {'per walker':>10}  {'walker arrays':>13}")
    what = ""
    for count in counts:
        state, _ = Walkers.at(task, seeds[torch.arange(count, device=device) % len(seeds)].clone(), window)
        sampler, est, batched = _batched_step(cfg, task, window, state, gen)
        try:
            calls, dt = _timed(batched, seconds)
            used, what = step_memory(batched, device)
        except torch.OutOfMemoryError:
            print(f"  {count:8d}  out of memory on {device}")
            break
        held = walker_bytes(state)
        print(f"  {count:8d}  {calls * count / dt:14,.1f}  {byte_size(used):>12}  {byte_size(used / count):>10}  "
              f"{byte_size(held):>13}")
        del state, sampler, est
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if what:
        print(f"  step memory: {what}; walker arrays: the walkers' parameters (and velocities)")
    return 0


def bench(cfg: Config, seconds: float, walkers: int | None, threads: int, device_name: str = "cpu",
          custom_task: TaskFactory | None = None) -> int:
    torch.set_num_threads(threads)
    keep_freed_memory()
    device = torch.device(device_name)
    task = make_task(cfg, device, custom_task)
    grid = cfg.grid
    window = Window.split(grid, cfg.windows.count, cfg.windows.overlap)[cfg.windows.count // 2]
    lo = window.lo
    batch = walkers or cfg.sampler.walkers_per_rank
    gen = torch.Generator(device=device).manual_seed(cfg.run.seed)
    params = task.sample_uniform(batch, gen)
    params, _ = drive_into_window(task, params, window.x_range, window.y_range, cfg.init.max_iterations,
                                  cfg.init.learning_rate)
    state, _ = Walkers.at(task, params.detach(), window)
    sampler, est, batched = _batched_step(cfg, task, window, state, gen)
    md = cfg.sampler.kind == "wlmd"
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)  # noqa: E731
    print(f"bench {cfg.path}: {task.describe()}; {threads} torch thread(s) on {device}; "
          f"window x bins {lo}-{window.hi - 1}")
    calls, dt = _timed(batched, seconds)
    fast = calls * batch / dt
    print(f"  batched {cfg.sampler.kind}  {batch:6d} walkers: {fast:12,.1f} walker-steps/s ({calls} steps in {dt:.2f} s)")
    if cfg.sampler.kind == "hmc":
        passes = cfg.sampler.leapfrog_steps
        print(f"  {passes} forward and backward passes per walker-step: {fast * passes:,.1f} walker-passes/s")

    if not hasattr(task, "plain_cvs"):
        print("  plain loop     (this task has no nn.Module)")
        return 0
    module = task.module
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(params[0].detach().clone(), module.parameters())
    if cfg.sampler.kind != "hmc":     # hmc: no plain loop; its cost is the passes, compared below
        one = _plain_md(task, module, grid, est, sampler.langevin, lo, gen, sync) if md else _plain_mc(task, module, grid, est, lo, gen)
        calls, dt = _timed(one, seconds)
        slow = calls / dt
        print(f"  plain loop          1 walker : {slow:12,.1f} walker-steps/s ({calls} steps in {dt:.2f} s)")
        print(f"  ratio batched / plain: {fast / slow:.0f}x")
    if cfg.sampler.kind in GRADIENT_SAMPLERS:
        # the network work alone (forward + backward of one nn.Module), without the MD bookkeeping
        # the plain loop above also does: a lower bound on any one-walker implementation's cost
        calls, dt = _timed(_forward_backward(task, module, sync), seconds)
        bare = calls / dt
        passes = cfg.sampler.leapfrog_steps if cfg.sampler.kind == "hmc" else 1
        print(f"  forward+backward    1 walker : {bare:12,.1f} steps/s ({calls} in {dt:.2f} s); "
              f"ratio batched / forward+backward: {fast * passes / bare:.0f}x")
    return 0


def _forward_backward(task, module, sync):
    params = list(module.parameters())

    def one() -> None:
        for p in params:
            p.grad = None
        x, y = task.plain_cvs(module)
        (0.3 * x + 0.2 * y).backward()
        sync()
    return one


def _bin(grid: Grid, x: float, y: float, lo: int) -> tuple[int, int]:
    return int(grid.x.index(torch.tensor(x))) - lo, int(grid.wl_y_index(torch.tensor(y)))


def _plain_mc(task, module, grid: Grid, est: Estimate, lo: int, gen: torch.Generator):
    """The loop a plain implementation would write: perturb one weight, forward, accept or undo."""
    flat_params = list(module.parameters())
    sizes = [p.numel() for p in flat_params]
    ln_g, n_xw = est.ln_g, est.ln_g.shape[0]
    with torch.no_grad():
        current = [float(v) for v in task.plain_cvs(module)]

    def one() -> None:
        with torch.no_grad():
            i = int(torch.randint(0, task.n_params, (1,), generator=gen, device=gen.device))   # draws on the generator's device
            k = 0
            while i >= sizes[k]:
                i -= sizes[k]
                k += 1
            p = flat_params[k].view(-1)
            old = float(p[i])
            p[i] = old + 0.01 * (2 * float(torch.rand(1, generator=gen, device=gen.device)) - 1)
            x, y = (float(v) for v in task.plain_cvs(module))
            ix, iy = _bin(grid, x, y, lo)
            ok = 0 <= ix < n_xw and 0 <= iy < grid.wl_y_bins
            ox, oy = _bin(grid, *current, lo)
            if ok and float(torch.rand(1, generator=gen, device=gen.device)) < float(torch.exp(ln_g[ox, oy] - ln_g[ix, iy])):
                current[:] = [x, y]
            else:
                p[i] = old
    return one


def _plain_md(task, module, grid: Grid, est: Estimate, md: Langevin, lo: int, gen: torch.Generator, sync):
    """The loop a plain implementation would write: forward, ln g update at the walker's bin,
    slopes by central differences, backward, Langevin update of each parameter tensor."""
    params = list(module.parameters())
    velocities = [torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) for p in params]
    bounds = [(task.lo[s.offset:s.offset + s.size].view(s.shape), task.hi[s.offset:s.offset + s.size].view(s.shape))
              for s in param_layout(module)]
    ln_g, (n_xw, n_y) = est.ln_g, est.ln_g.shape
    c1, c2 = 1.0 - md.gamma, (md.gamma * (2.0 - md.gamma)) ** 0.5

    def slope(i: int, j: int, axis: int) -> float:
        n = n_xw if axis == 0 else n_y
        k = i if axis == 0 else j
        up, down = min(k + 1, n - 1), max(k - 1, 0)
        a = ln_g[up, j] if axis == 0 else ln_g[i, up]
        b = ln_g[down, j] if axis == 0 else ln_g[i, down]
        return float(a - b) / (max(1, up - down) * (grid.x.width if axis == 0 else grid.y.width))

    def one() -> None:
        for p in params:
            p.grad = None
        x, y = task.plain_cvs(module)
        xv, yv = float(x.detach()), float(y.detach())
        ix, iy = _bin(grid, xv, yv, lo)
        inside = 0 <= ix < n_xw and 0 <= iy < n_y
        i, j = min(max(ix, 0), n_xw - 1), min(max(iy, 0), n_y - 1)
        if inside:
            ln_g[i, j] += est.ln_f
        sx = slope(i, j, 0) + float(wall_slope(torch.tensor(xv), *md.x_range, md.wall_strength))
        sy = slope(i, j, 1) + float(wall_slope(torch.tensor(yv), *md.y_range, md.wall_strength))
        (sx * x + sy * y).backward()
        with torch.no_grad():
            for p, v, (low, high) in zip(params, velocities, bounds):
                v.add_(p.grad, alpha=-md.dt)
                v.mul_(c1).add_(torch.randn(v.shape, generator=gen, device=v.device, dtype=v.dtype), alpha=c2)
                p.add_(v, alpha=md.dt)
                out = (p > high) | (p < low)
                p.copy_(torch.maximum(torch.minimum(p, high), low))
                v.copy_(torch.where(out, -v, v))
        sync()
    return one
