"""Command line: ``python -m rewl {run,check,info,bench} ...``.

Decks are validated before MPI starts; a bad deck prints one message (on rank 0) and every rank
exits with code 2.
"""
from __future__ import annotations

import argparse
import sys

from .comm import env_rank
from .config import Config, DeckError, load


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rewl", description="Replica-exchange Wang-Landau sampling of "
                                "neural-network entropy landscapes S(ln L_train, y).")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run (or resume) a deck; under MPI: mpiexec -n N python -m rewl run DECK")
    r.add_argument("deck")
    r.add_argument("--out", help="output directory (default: [output] dir of the deck)")
    r.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    r.add_argument("--force", action="store_true", help="overwrite an existing run in the output directory")
    c = sub.add_parser("check", help="validate a deck and print its layout; runs nothing")
    c.add_argument("deck")
    i = sub.add_parser("info", help="summarise a run directory or run file")
    i.add_argument("run")
    b = sub.add_parser("bench", help="walker-steps per second: batched engine vs a plain one-walker loop")
    b.add_argument("deck")
    b.add_argument("--seconds", type=float, default=5.0, help="time per measurement (default 5)")
    b.add_argument("--walkers", type=int, help="batch size (default: the deck's walkers_per_rank)")
    b.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one core)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quiet = env_rank() != 0       # under mpiexec, only rank 0 reports deck errors
    if args.command == "info":
        from .report import info
        return info(args.run)
    try:
        cfg = load(args.deck)
    except DeckError as exc:
        if not quiet:
            print(f"rewl: error: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.command == "check":
        return check(cfg)
    if args.command == "bench":
        from .bench import bench
        return bench(cfg, args.seconds, args.walkers, args.threads)
    from .comm import LayoutError, run_or_abort
    from .driver import run_deck

    def go() -> int:
        try:
            return run_deck(cfg, args.out or cfg.output.dir, args.resume, args.force)
        except LayoutError as exc:
            if not quiet:
                print(f"rewl: error: {cfg.path}: {exc}", file=sys.stderr, flush=True)
            return 2
    return run_or_abort(go, env_rank())


def check(cfg: Config) -> int:
    """Print what the deck would run: task, parameter count, grid, windows, rank layout."""
    import torch

    from .grid import Grid, window_bins
    from .tasks import make_task
    task = make_task(cfg, torch.device("cpu"))
    grid = Grid.from_config(cfg.grid)
    bins = window_bins(grid.x.bins, cfg.windows.count, cfg.windows.overlap)
    w = cfg.windows
    print(f"{cfg.path}: OK")
    print(f"  task      {task.describe()}")
    print(f"  sampler   {cfg.sampler.kind}, {cfg.sampler.walkers_per_rank} walkers per rank, "
          f"schedule {cfg.schedule.kind} ln f {cfg.schedule.ln_f_initial:g} -> {cfg.schedule.ln_f_final:g}, "
          f"budget {cfg.run.max_steps} steps")
    print(f"  grid      x = {task.x_label}: {grid.x.bins} bins in [{grid.x.min:g}, {grid.x.max:g}]; "
          f"y = {task.y_label}: {grid.y.bins} bins in [{grid.y.min:g}, {grid.y.max:g}]")
    print(f"  ranks     {cfg.world_size} = {w.count} windows x {w.ranks_per_window} ranks per window "
          f"(mpiexec -n {cfg.world_size})")
    edges = grid.x.edges
    for k, (lo, hi) in enumerate(bins):
        ranks = f"{k * w.ranks_per_window}" if w.ranks_per_window == 1 else \
            f"{k * w.ranks_per_window}-{(k + 1) * w.ranks_per_window - 1}"
        print(f"  window {k:<3d} x in [{edges[lo]:.4g}, {edges[hi]:.4g}) bins {lo}-{hi - 1} on rank(s) {ranks}")
    print(f"  output    {cfg.output.dir}")
    return 0
