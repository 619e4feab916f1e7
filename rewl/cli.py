"""Command line: ``rewl {run,check,info,status,sgd,bench,analyse} ...`` (also ``python -m rewl``).

`run` installs its stop handlers before anything else (see rewl/stop.py); its set-up errors, a bad
deck included, are agreed by every rank and printed once by rank 0 (exit 2, ``run_checked``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .comm import env_rank
from .config import Config, DeckError, load

if TYPE_CHECKING:
    from .stop import StopRequest
    from .tasks import TaskFactory


def parser(prog: str = "rewl", script_deck: str | None = None) -> argparse.ArgumentParser:
    """`rewl`'s parser; with `script_deck` a study script's (``rewl.run``): the commands that
    need the task, each on that deck (no DECK argument)."""
    from . import __version__
    p = argparse.ArgumentParser(prog=prog, description="Replica-exchange Wang-Landau sampling of "
                                "neural-network entropy landscapes S(ln L_train, y)." + (
                                    f" A study script on {script_deck}: its first argument is one of the commands "
                                    "below, run when left out (python SCRIPT COMMAND --help)." if script_deck else ""))
    p.add_argument("--version", action="version", version=f"rewl {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def deck_of(command: argparse.ArgumentParser) -> None:
        if script_deck is None:
            command.add_argument("deck")
        else:
            command.set_defaults(deck=script_deck)
    r = sub.add_parser("run", help="run (or resume) a deck; under MPI: mpiexec -n N rewl run DECK")
    deck_of(r)
    r.add_argument("--out", help="output directory (default: [output] dir of the deck)")
    r.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    r.add_argument("--force", action="store_true", help="overwrite an existing run in the output directory")
    _set_arg(r)
    r.add_argument("--stop-file", metavar="PATH",
                   help="checkpoint and stop (status interrupted) once this file exists (batch scripts touch it)")
    r.add_argument("--deadline", type=float, metavar="UNIX_TIME",
                   help="checkpoint and stop (status interrupted) at the first synchronisation after this time")
    c = sub.add_parser("check", help="validate a deck and print its layout; runs nothing")
    deck_of(c)
    c.add_argument("--out", help="output directory (default: [output] dir of the deck)")
    c.add_argument("--print", choices=("output_dir", "ranks"), dest="field",
                   help="print only this (for scripts): the output directory or the number of MPI ranks")
    _set_arg(c)
    if script_deck is None:
        i = sub.add_parser("info", help="summarise a run directory or run file")
        i.add_argument("run")
    st = sub.add_parser("status", help="one word for scripts: none, running, interrupted, converged or "
                        "budget-exhausted (the run of DECK, or of --out)")
    deck_of(st)
    st.add_argument("--out", help="output directory (default: [output] dir of the deck)")
    _set_arg(st)
    s = sub.add_parser("sgd", help="train independent SGD/Adam baselines of the deck's network ([baseline] table)")
    deck_of(s)
    s.add_argument("--runs", type=int, help="number of runs (default: [baseline] runs)")
    s.add_argument("--out", help="output directory (default: [output] dir); writes baseline.h5 there")
    s.add_argument("--force", action="store_true", help="overwrite an existing baseline.h5")
    _set_arg(s)
    b = sub.add_parser("bench", help="walker-steps per second: batched engine vs a plain one-walker loop")
    deck_of(b)
    b.add_argument("--seconds", type=float, default=5.0, help="time per measurement (default 5)")
    b.add_argument("--walkers", type=int, help="batch size (default: the deck's walkers_per_rank)")
    b.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one core)")
    b.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    b.add_argument("--sweep", type=_counts, metavar="N,N,...",
                   help="instead: the batched step's walker-steps/s and memory at each walker count")
    _set_arg(b)
    sc = sub.add_parser("scout", help="where the loss lives: ln L_train of walkers uniform in the box and of a few "
                        "optimiser runs, and a suggested [grid.x]")
    deck_of(sc)
    sc.add_argument("--walkers", type=int, default=1000, help="walkers drawn uniform in the box (default 1000)")
    sc.add_argument("--runs", type=int, default=5, help="optimiser runs of the deck's [baseline] (default 5)")
    sc.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    _set_arg(sc)
    if script_deck is not None:
        return p
    # listed for --help only: `main` hands `analyse ...` to the analysis's own parser before this one
    sub.add_parser("analyse", add_help=False, help="figures and numbers from run files: rewl analyse "
                   "{landscape,report,compare,windows,diagnostics} ... (rewl analyse --help)")
    return p


def _counts(text: str) -> list[int]:
    """--sweep's walker counts: positive integers separated by commas."""
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected walker counts like 16,64,256, got {text!r}")
    return counts


def _set_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE", dest="overrides",
                   help="override one deck key (TOML value; repeatable), e.g. --set run.seed=3; "
                        "stored with the run, and a resume must give the same")


def main(argv: list[str] | None = None, custom_task: TaskFactory | None = None,
         parser_: argparse.ArgumentParser | None = None) -> int:
    """The `rewl` command; with `custom_task` (``rewl.run`` from a script) the deck's task is that
    one for every command that builds a task (run, check, sgd, bench, scout)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["analyse"]:        # its own parser takes every argument, --help included
        from analysis.cli import main as analyse
        return analyse(argv[1:])
    args = (parser_ or parser()).parse_args(argv)
    if args.command == "run":
        from .stop import StopRequest
        stop = StopRequest(args.stop_file, args.deadline)    # before the heavy imports and the deck
        return run_checked(args.deck, tuple(args.overrides), args.out, args.resume, args.force, stop, custom_task)
    quiet = env_rank() != 0       # under mpiexec, only rank 0 reports deck errors
    if args.command == "info":
        from .report import info
        return info(args.run)
    try:
        cfg = load(args.deck, tuple(getattr(args, "overrides", ())))
    except DeckError as exc:
        if not quiet:
            print(f"rewl: error: {exc}", file=sys.stderr, flush=True)
        return 2
    if cfg.task.kind == "custom" and custom_task is None and args.command in ("sgd", "bench", "scout"):
        if not quiet:
            print(f'rewl: error: {cfg.path}: [task] kind = "custom": its task is given from Python, '
                  f'rewl.run(deck, task=MyTask) in a script, which takes `{args.command}` as its first argument '
                  f'(python my_study.py {args.command}; docs/tasks.md, "Your own task")', file=sys.stderr, flush=True)
        return 2
    if args.command == "check" and args.field:
        print(args.out or cfg.output.dir if args.field == "output_dir" else cfg.world_size)
        return 0
    if args.command == "status":
        return status(args.out or cfg.output.dir)
    from .data import DataError
    from .tasks import TaskError
    try:
        if args.command == "check":
            return check(cfg, args.out or cfg.output.dir, custom_task)
        if args.command == "sgd":
            return sgd(cfg, args.runs, args.out or cfg.output.dir, args.force, custom_task)
        if args.command == "scout":
            from .scout import scout
            return scout(cfg, args.walkers, args.runs, args.threads, custom_task)
        from .bench import bench, sweep
        if args.sweep:
            return sweep(cfg, args.seconds, args.sweep, args.threads, args.device, custom_task)
        return bench(cfg, args.seconds, args.walkers, args.threads, args.device, custom_task)
    except (DataError, TaskError) as exc:
        print(f"rewl: error: {cfg.path}: {exc}", file=sys.stderr, flush=True)
        return 2


def run_checked(deck: str | Path, overrides: tuple[str, ...], out: str | None, resume: bool, force: bool,
                stop: StopRequest, custom_task: TaskFactory | None = None) -> int:
    """`rewl run` (and ``rewl.run``) on every rank: returns the exit code.

    - 2: set-up failed on some rank (the deck, the layout, the output directory, the task, its
      data, a window out of reach): every rank learns it (``agree``), rank 0 prints each
      message once, naming the ranks that met it, and no rank waits for another.
    - 1: a checkpoint or run-file write failed on some rank (a full disk): one line from rank 0
      naming the directory, the step and what to do; or any other exception after set-up: the
      failing rank prints its traceback, also into the run's log, and aborts the job."""
    from .comm import SetupFailed, agree, run_or_abort
    from .errors import WriteFailed
    from .storage import RunStore
    rank = env_rank()
    stores: list[RunStore] = []           # the run directory, once the deck has named it

    def load_run_deck() -> Config:
        cfg = load(deck, tuple(overrides))
        if cfg.task.kind == "custom" and custom_task is None:
            raise DeckError(cfg.path, "[task] kind", '"custom": its task is given from Python, '
                            'rewl.run(deck, task=MyTask) in a script (docs/tasks.md, "Your own task")')
        return cfg

    def go() -> int:
        from .driver import run_deck
        try:
            cfg = agree(load_run_deck)
            stores.append(RunStore(out or cfg.output.dir))
            return run_deck(cfg, out or cfg.output.dir, resume, force, stop, custom_task)
        except SetupFailed as exc:
            if rank == 0:
                print(exc.report(), file=sys.stderr, flush=True)
            return 2
        except WriteFailed as exc:            # raised on every rank alike
            if rank == 0:
                print(f"rewl: error: {exc}", file=sys.stderr, flush=True)
                stores[0].log("failed", f"error: {exc}")
            return 1

    return run_or_abort(go, rank, lambda text: stores[0].log("failed", text) if stores else None)


def units_note(cfg: Config, window_bins: int) -> str:
    """`check`'s reading of ln f per walker visit for this deck: what one step of a window's walkers
    deposits at the start, and the fewest steps 1/t needs to reach ln_f_final (t = 1 / ln_f_final
    walker visits per bin, every bin of the widest window visited)."""
    walkers = cfg.sampler.walkers_per_rank * cfg.windows.ranks_per_window
    sched = cfg.schedule
    first = sched.ln_f_initial      # under `ramp` the top of the ramp
    note = (f"per walker visit: at ln f {first:.3g} one step of a window's {walkers:,} walkers adds "
            f"{walkers * first:,.4g} to ln g ({walkers * first / window_bins:.3g} per bin of its {window_bins:,})")
    if sched.kind == "1/t":
        note += (f"; ln_f_final {sched.ln_f_final:g} needs {1 / sched.ln_f_final:,.0f} visits per bin after the "
                 f"halving stages: at least {window_bins / (walkers * sched.ln_f_final):,.0f} steps")
    return note


def walls_note(n_params: int, wall_strength: float | str, x_width: float) -> str:
    """`check`'s estimate of where WLMD walkers settle past a window's edge, with advice for when
    that is beyond one x bin (walkers there update no ln g: the window never fills); under "auto",
    how the run tunes them."""
    from .samplers import walls
    from .samplers.wlmd import wall_settling
    if wall_strength == walls.AUTO:
        return (f"tuned by the run: c starts at {walls.settling_strength(n_params, x_width):,.0f} (walkers within half an "
                f"x bin at an entropy slope of n_params / 2 = {n_params / 2:,.0f} per unit of x), or lower where the "
                f"walkers' gradients make that too stiff for dt; every {walls.INTERVAL} steps c doubles while under "
                f"{walls.IN_TARGET:.0%} of walker-steps are inside the window and kT stays within "
                f"{walls.T_TOLERANCE:.0%} of 1 (c= in the progress line, `rewl info`)")
    d = wall_settling(n_params, wall_strength)
    note = (f"at an entropy slope of n_params / 2 = {n_params / 2:,.0f} per unit of x (a loss quadratic in the "
            f"weights), walkers settle about {d:.3g} past a window's edge (x bins {x_width:g})")
    if d > x_width:
        note += (f"; where S rises that fast (large weights) only wall_strength {wall_settling(n_params, x_width):,.0f} or "
                 "more holds them within one bin: if in= falls in the progress line, raise it and watch T= (stiffer "
                 "walls may need a smaller dt)")
    return note


def check(cfg: Config, out_dir: str, custom_task: TaskFactory | None = None) -> int:
    """Print what the deck would run: task, parameter count, grid, windows, rank layout (a custom
    deck's task only where `custom_task` gives it)."""
    import torch

    from .data import DataError
    from .grid import Window
    from .report import bins_text
    from .tasks import describe_unbuilt, make_task
    grid = cfg.grid
    custom = cfg.task.kind == "custom" and custom_task is None
    try:
        task = None if custom else make_task(cfg, torch.device("cpu"), custom_task)
        described = "custom: given from Python (rewl.run(deck, task=...))" if custom else task.describe()
        count = None if custom else task.n_params
    except DataError as exc:           # a deck can be checked before its data is in place
        task = None
        described, count = describe_unbuilt(cfg, str(exc))
    x_label, y_label = ("x", "y") if task is None else (task.x_label, task.y_label)
    windows = Window.split(grid, cfg.windows.count, cfg.windows.overlap)
    w = cfg.windows
    print(f"{cfg.path}: OK" + (f" with --set {' --set '.join(cfg.overrides)}" if cfg.overrides else ""))
    print(f"  task      {described}")
    print(f"  sampler   {cfg.sampler.kind}, {cfg.sampler.walkers_per_rank} walkers per rank, "
          f"schedule {cfg.schedule.kind} ln f {cfg.schedule.ln_f_initial:g} -> {cfg.schedule.ln_f_final:g}, "
          f"budget {cfg.run.max_steps} steps")
    print("  ln f      " + units_note(cfg, max(win.n_x for win in windows) * grid.wl_y_bins))
    if cfg.sampler.kind == "wlmd":
        s = cfg.sampler
        print(f"  dynamics  {s.integrator} Langevin, kT = 1, dt {s.dt:g}, gamma {s.gamma:g}; ln g kernel sigma "
              f"{s.kernel_width:g} bins; soft walls c = {s.wall_strength if s.wall_strength == 'auto' else f'{s.wall_strength:g}'}")
        if count is not None:
            print("  walls     " + walls_note(count, s.wall_strength, grid.x.width))
    if cfg.sampler.kind == "hmc":
        s = cfg.sampler
        print(f"  moves     Hamiltonian trajectories of {s.leapfrog_steps} leapfrog steps (as many forward and backward "
              f"passes per step), step {s.step_size:g} of each weight's spread at first, tuned toward acceptance "
              f"{s.target_acceptance:g} every {s.adapt_interval} steps; exact Metropolis test on the binned ln g")
    print(f"  grid      x = {x_label}: {bins_text(grid.x.bins)} in [{grid.x.min:g}, {grid.x.max:g}]; "
          f"y = {y_label}: {bins_text(grid.y.bins)} in [{grid.y.min:g}, {grid.y.max:g}], "
          + ("recorded (Wang-Landau over x alone)" if grid.y_recorded else "flattened (Wang-Landau over x and y)"))
    print(f"  ranks     {cfg.world_size} = {w.count} windows x {w.ranks_per_window} ranks per window "
          f"(mpiexec -n {cfg.world_size})")
    for win in windows:
        k = win.index
        ranks = f"{k * w.ranks_per_window}" if w.ranks_per_window == 1 else \
            f"{k * w.ranks_per_window}-{(k + 1) * w.ranks_per_window - 1}"
        x_lo, x_hi = win.x_range
        print(f"  window {k:<3d} x in [{x_lo:.4g}, {x_hi:.4g}) bins {win.lo}-{win.hi - 1} on rank(s) {ranks}")
    if task is not None:
        print("  memory    " + memory_note(cfg, task, windows[0]))
    print(f"  output    {out_dir}")
    return 0


def memory_note(cfg: Config, task, window) -> str:
    """`check`'s estimate of a rank's memory from one step of 4 walkers on the CPU, against the
    memory of the device the deck's ranks would use (a GPU each, or this machine's RAM shared by
    all ranks); a warning where it does not fit."""
    import os

    import torch

    from .bench import byte_size, rank_memory
    probe = 4
    per_walker, arrays, what = rank_memory(cfg, task, window, probe)
    walkers = cfg.sampler.walkers_per_rank
    need = (per_walker + arrays) * walkers
    note = (f"a rank's {walkers} walkers: {byte_size(arrays * walkers)} of walker arrays + {byte_size(per_walker * walkers)} "
            f"for a step ({byte_size(per_walker)} per walker: {what}, {probe} walkers)")
    if cfg.run.device != "cpu" and torch.cuda.is_available():
        have, where, ranks = torch.cuda.get_device_properties(0).total_memory, "one GPU per rank", 1
    else:
        have, where, ranks = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's RAM", cfg.world_size
    note += f"; {where}: {byte_size(have)}" + (f" for {ranks} ranks" if ranks > 1 else "")
    if need * ranks > 0.9 * have:
        note += (f"\n  warning: {byte_size(need * ranks)} needed is more than 90 % of {byte_size(have)}: fewer walkers per rank"
                 + (", or [model] chunk_points (fewer points per forward pass)" if hasattr(task, "chunk_points") else "")
                 + " (`rewl bench DECK --sweep ...` measures rate and memory by count)")
    return note


def status(out_dir: str) -> int:
    """Print the run's status word (``none`` when the directory holds no run file)."""
    from .storage import RunStore, StorageError
    store = RunStore(out_dir)
    if not store.run_path.exists():
        print("none")
        return 0
    try:
        rec = store.read_run()
    except StorageError as exc:
        print(f"rewl: error: {exc}", file=sys.stderr)
        return 2
    print(rec.status)              # alone on stdout: the batch scripts read it
    if rec.status != "converged":
        print(f"rewl: {sum(w.settled for w in rec.windows)} of {rec.n_windows} windows settled at step {rec.steps}",
              file=sys.stderr)
    return 0


def sgd(cfg: Config, runs: int | None, out_dir: str, force: bool, custom_task: TaskFactory | None = None) -> int:
    """Train the baselines and write OUT/baseline.h5."""
    from .baseline import train_baselines
    from .storage import RunStore
    store = RunStore(out_dir)
    if store.baseline_path.exists() and not force:
        print(f"rewl: error: {store.baseline_path} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    if runs is not None and runs <= 0:
        print(f"rewl: error: --runs must be positive (got {runs})", file=sys.stderr)
        return 2
    if cfg.task.kind == "box_quadratic":
        print(f"rewl: error: {cfg.path}: [task] kind: {cfg.task.kind!r} has no network to train", file=sys.stderr)
        return 2
    rec = train_baselines(cfg, runs, custom_task=custom_task)
    path = store.write_baseline(rec)
    final_x, final_y = rec.x[:, -1], rec.y[:, -1]
    print(f"rewl sgd: {rec.runs} runs of {rec.optimizer} (lr {rec.learning_rate:g}, batch {rec.batch_size}, "
          f"{rec.step[-1]} steps) in {rec.elapsed_seconds:.1f} s; final ln L_train {final_x.mean():.3f} "
          f"+- {final_x.std(ddof=1) / np.sqrt(rec.runs) if rec.runs > 1 else 0:.3f}, "
          f"{rec.y_label} {final_y.mean():.3f}; written to {path}")
    return 0
