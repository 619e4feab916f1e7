"""The REWL driver: one rank's life from start (or resume) to the final run file.

Each rank owns one window of x = ln L_train and advances a batch of walkers. Every
``sync_interval`` steps the ranks meet: ln g increments are merged inside each window, the ln f
schedule advances on flat histograms, a status row is shared by all ranks (so every stop decision
is collective and deterministic), walkers swap between neighbouring windows, and checkpoints are
written. Nothing here depends on wall time except logging, so a resumed run equals an uninterrupted
one bit for bit.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from . import __version__
from .comm import Comm, StopFlag
from .config import Config, parse
from .devices import keep_freed_memory, pick_device
from .exchange import SwapStats, exchange_round
from .grid import Grid, window_bins
from .moves import (Langevin, MDCounters, MoveSizes, Walkers, drive_into_window, thermal_velocities, wlmc_step,
                    wlmd_step)
from .storage import Checkpoint, RunRecord, RunStore, StorageError, WindowRecord
from .tasks import make_task
from .wl import Estimate, advance_schedule, flatness, ramp_ln_f, schedule_progress

# columns of the status row every rank shares at each synchronisation
_ROW = ("window", "ln_f", "flatness", "converged", "stop", "stage", "one_over_t", "move_att", "move_acc", "kinetic_t",
        "swap_att", "swap_acc", "init_iterations", "init_seconds")
_COL = {name: k for k, name in enumerate(_ROW)}


def resume_differences(old: Config, new: Config) -> list[str]:
    """Tables whose values differ between the stored deck and the one given to --resume; only
    [run] max_steps, [output] and [baseline] (not used by the sampler) may change."""
    diffs = []
    for name in ("run", "task", "model", "sampler", "grid", "windows", "schedule", "exchange", "init"):
        a, b = getattr(old, name), getattr(new, name)
        if name == "run":
            a, b = replace(a, max_steps=0), replace(b, max_steps=0)
        if a != b:
            diffs.append(f"[{name}]")
    return diffs


class Engine:
    """One rank of a REWL run."""

    def __init__(self, cfg: Config, comm: Comm, store: RunStore):
        self.cfg, self.comm, self.store = cfg, comm, store
        if comm.size > 1:
            torch.set_num_threads(1)
        keep_freed_memory()
        self.device = pick_device(cfg.run.device)
        self.task = make_task(cfg, self.device)
        self.grid = Grid.from_config(cfg.grid)
        self.bins = window_bins(self.grid.x.bins, cfg.windows.count, cfg.windows.overlap)
        self.x_lo, x_hi = self.bins[comm.window]
        self.n_xw = x_hi - self.x_lo
        self.md = cfg.sampler.kind == "wlmd"
        self.langevin = Langevin.from_config(cfg.sampler, self.grid, self.x_lo, self.n_xw, self.device) if self.md else None
        self.stop = StopFlag()
        seeds = np.random.SeedSequence([cfg.run.seed, comm.rank]).generate_state(2)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(seeds[0]))
        self.rng = np.random.default_rng(int(seeds[1]))
        self.step = 0
        self.exchange_rounds = 0
        self.swaps = SwapStats.zeros(cfg.windows.count)
        self.flat = 0.0
        self.init_iterations, self.init_seconds = 0, 0.0
        self.elapsed_before = 0.0
        self.history: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.warned_hot = False
        self.rows = np.zeros((comm.size, len(_ROW)))

    # -- start ---------------------------------------------------------------------------------

    def initialise(self) -> None:
        """Draw walkers in the box, drive them into the window, equilibrate without updating ln g."""
        t0 = time.perf_counter()
        cfg = self.cfg
        x_min = float(self.grid.x.edges[self.x_lo])
        x_max = float(self.grid.x.edges[self.x_lo + self.n_xw])
        params = self.task.sample_uniform(cfg.sampler.walkers_per_rank, self.gen)
        try:
            params, self.init_iterations = drive_into_window(
                self.task, params, (x_min, x_max), (self.grid.y.min, self.grid.y.max),
                cfg.init.max_iterations, cfg.init.learning_rate)
        except RuntimeError as exc:
            raise RuntimeError(f"window {self.comm.window}: {exc}") from None
        self.walkers, inside = Walkers.at(self.task, params.detach(), self.grid, self.x_lo, self.n_xw)
        if not bool(inside.all()):
            bad = int((~inside).sum())
            raise RuntimeError(
                f"window {self.comm.window}: {bad} walkers have y outside [grid.y] "
                f"[{self.grid.y.min}, {self.grid.y.max}] after initialisation; widen [grid.y]")
        self.est = Estimate.zeros(self.n_xw, self.grid.y.bins, cfg.schedule.ln_f_initial, self.device,
                                  walkers=cfg.sampler.walkers_per_rank * cfg.windows.ranks_per_window,
                                  with_accuracy=self.md and self.task.has_accuracy)
        if self.md:
            self.moves = MDCounters.zeros(self.device)
            self.walkers.velocities = thermal_velocities(self.walkers.params, self.gen)
            for _ in range(cfg.init.equilibration_steps):
                wlmd_step(self.task, self.grid, self.walkers, self.est, self.langevin, self.moves, self.x_lo,
                          self.gen, update=False)
            self.walkers.refresh(self.task, self.grid, self.x_lo, self.n_xw)
        else:
            self.moves = MoveSizes.initial(self.task, cfg.sampler.sigma_initial)
            with torch.no_grad():
                for k in range(cfg.init.equilibration_steps):
                    wlmc_step(self.task, self.grid, self.walkers, self.est, self.moves, self.x_lo, self.gen,
                              update=False)
                    if (k + 1) % cfg.sampler.adapt_interval == 0:
                        self.moves.adapt(self.task, cfg.sampler.target_acceptance)
        self.moves.reset_counters()
        self.init_seconds = time.perf_counter() - t0

    def restore(self, ck: Checkpoint) -> None:
        d = self.device
        t = lambda a: torch.as_tensor(a, device=d)  # noqa: E731
        self.step, self.exchange_rounds = int(ck.step), int(ck.exchange_round)
        self.walkers = Walkers(t(ck.params).to(self.task.dtype), t(ck.x), t(ck.y), t(ck.ix), t(ck.iy),
                               t(ck.velocities).to(self.task.dtype) if self.md else None)
        self.est = Estimate(t(ck.ln_g), t(ck.hist), t(ck.visits), float(ck.ln_f),
                            self.cfg.sampler.walkers_per_rank * self.cfg.windows.ranks_per_window,
                            int(ck.stage), bool(ck.one_over_t), bool(ck.converged),
                            t(ck.acc_sum) if ck.acc_sum.size else None)
        self.flat = float(ck.flatness)
        if self.md:
            self.moves = MDCounters(t(ck.move_attempted), t(ck.move_accepted))
        else:
            self.moves = MoveSizes(t(ck.sigma).to(self.task.dtype), t(ck.move_attempted), t(ck.move_accepted),
                                   t(ck.total_attempted), t(ck.total_accepted))
        self.swaps = SwapStats(ck.swap_attempted.copy(), ck.swap_accepted.copy())
        self.gen.set_state(torch.as_tensor(ck.torch_rng, dtype=torch.uint8))
        self.rng.bit_generator.state = json.loads(ck.numpy_rng)
        self.init_iterations, self.init_seconds = int(ck.init_iterations), float(ck.init_seconds)
        self.elapsed_before = float(ck.elapsed_seconds)
        if self.comm.is_root:
            self.history = [(int(s), lf, fl) for s, lf, fl in zip(ck.history_step, ck.history_ln_f, ck.history_flatness)]

    # -- the loop ------------------------------------------------------------------------------

    def run(self, resume: bool) -> str:
        cfg = self.cfg
        self.t_start = time.perf_counter()
        if resume:
            self.restore(self.store.read_checkpoint(self.store.latest_step(), self.comm.rank))
            self.share_status()
        else:
            self.initialise()
            self.share_status()
            self.checkpoint("running")
        self._snapshot_synced()
        self.step_at_start, self.last_log = self.step, 0.0
        sync = cfg.sampler.sync_interval
        status = None
        while status is None:
            if self.step >= cfg.run.max_steps:
                status = "budget-exhausted"
                break
            self.advance(sync)
            self.merge_window()
            if not self.md and self.step % cfg.sampler.adapt_interval == 0:
                self.moves.adapt(self.task, cfg.sampler.target_acceptance)
            checked = self.step % cfg.schedule.check_interval == 0
            if checked:
                self.check_flatness()
            self.share_status()
            if checked:
                self.record_history()
            if self.step % cfg.exchange.interval == 0:
                exchange_round(self.comm, self.exchange_rounds, self.grid, self.bins, self.walkers, self.est,
                               self.rng, self.swaps)
                self.exchange_rounds += 1
            if self.rows[:, _COL["stop"]].any():
                status = "interrupted"
            elif self.rows[:, _COL["converged"]].all():
                status = "converged"
            elif self.step % cfg.output.checkpoint_interval == 0 and self.step < cfg.run.max_steps:
                self.checkpoint("running")
            self.log_progress(final=False)
        self.checkpoint(status)
        self.log_progress(final=True, status=status)
        return status

    def advance(self, n_steps: int) -> None:
        """n_steps batched WLMC or WLMD steps of all this rank's walkers."""
        ramp = self.cfg.schedule.kind == "ramp"
        for _ in range(n_steps):
            if ramp and not self.est.converged:
                self.est.ln_f = ramp_ln_f(self.cfg.schedule, self.step)
            if self.md:
                wlmd_step(self.task, self.grid, self.walkers, self.est, self.langevin, self.moves, self.x_lo, self.gen)
            else:
                with torch.no_grad():
                    wlmc_step(self.task, self.grid, self.walkers, self.est, self.moves, self.x_lo, self.gen)
            self.step += 1
        if self.md:
            # the exchange and checkpoints need the CVs of the weights as they are now
            self.walkers.refresh(self.task, self.grid, self.x_lo, self.n_xw)

    def merge_window(self) -> None:
        """Sum the ln g and histogram increments of the window's ranks since the last merge."""
        if self.comm.ranks_per_window == 1:
            return
        est = self.est
        for name in est.merged_arrays():
            now = getattr(est, name)
            base = self._synced[name]
            total = self.comm.window_sum((now - base).cpu().numpy())
            setattr(est, name, base + torch.as_tensor(total, device=self.device))
        self._snapshot_synced()

    def _snapshot_synced(self) -> None:
        self._synced = {name: getattr(self.est, name).clone() for name in self.est.merged_arrays()}

    def check_flatness(self) -> None:
        """Flatness over established bins, then the ln f schedule (identical on the window's ranks)."""
        est = self.est
        visited = est.visits > 0
        self.flat = flatness(est.hist, est.visits, self.cfg.schedule.min_visit_fraction)
        # t of the 1/t schedule: Monte Carlo time per bin of one walker (the estimate is their average)
        steps_per_bin = self.step / max(1, int(visited.sum()))
        advance_schedule(est, self.cfg.schedule, self.flat, steps_per_bin, self.step)
        if self.comm.ranks_per_window > 1:
            self._snapshot_synced()

    def share_status(self) -> None:
        """Every rank learns every rank's ln f, flatness, convergence, stop request, counters."""
        row = np.zeros(len(_ROW))
        row[_COL["window"]] = self.comm.window
        row[_COL["ln_f"]] = self.est.ln_f
        row[_COL["flatness"]] = self.flat
        row[_COL["converged"]] = self.est.converged
        row[_COL["stop"]] = self.stop.raised
        row[_COL["stage"]] = self.est.stage
        row[_COL["one_over_t"]] = self.est.one_over_t
        attempted, accepted = self.moves.totals()
        row[_COL["move_att"]], row[_COL["move_acc"]] = float(attempted.sum()), float(accepted.sum())
        w = self.comm.window
        if w < self.comm.n_windows - 1:
            row[_COL["swap_att"]], row[_COL["swap_acc"]] = self.swaps.attempted[w], self.swaps.accepted[w]
        row[_COL["init_iterations"]], row[_COL["init_seconds"]] = self.init_iterations, self.init_seconds
        if self.md:   # kinetic temperature <v^2> (kT = 1 wanted): well above 1 means dt is too large
            row[_COL["kinetic_t"]] = float(self.walkers.velocities.double().square().mean())
        self.rows = self.comm.allgather(row)

    def record_history(self) -> None:
        """Rank 0 keeps every window's ln f and flatness at each check (for diagnostics)."""
        if self.comm.is_root:
            leaders = self.rows[:: self.comm.ranks_per_window]
            self.history.append((self.step, leaders[:, _COL["ln_f"]].copy(), leaders[:, _COL["flatness"]].copy()))

    # -- output --------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    def checkpoint(self, status: str) -> None:
        """Collective: every rank writes its checkpoint, rank 0 the run file, then marks the set
        complete. A crash in between leaves the previous complete set in force."""
        self.store.write_checkpoint(self.comm.rank, self.snapshot())
        record = self.gather_record(status)
        self.comm.barrier()
        if self.comm.is_root:
            self.store.write_run(record)
            self.store.mark_complete(self.step)
        self.comm.barrier()

    def snapshot(self) -> Checkpoint:
        w, est, mv = self.walkers, self.est, self.moves
        n = lambda a: a.detach().cpu().numpy()  # noqa: E731
        none = np.zeros(0)
        if self.md:   # MD keeps only its counters: walker-steps and those inside the window
            moves = dict(sigma=none, move_attempted=n(mv.steps), move_accepted=n(mv.inside),
                         total_attempted=none, total_accepted=none)
        else:
            moves = dict(sigma=n(mv.sigma), move_attempted=n(mv.attempted), move_accepted=n(mv.accepted),
                         total_attempted=n(mv.total_attempted), total_accepted=n(mv.total_accepted))
        return Checkpoint(
            step=self.step, exchange_round=self.exchange_rounds,
            params=n(w.params), x=n(w.x), y=n(w.y), ix=n(w.ix), iy=n(w.iy),
            velocities=n(w.velocities) if self.md else np.zeros((0, 0)),
            ln_g=n(est.ln_g), hist=n(est.hist), visits=n(est.visits), ln_f=est.ln_f, stage=est.stage,
            one_over_t=est.one_over_t, converged=est.converged, flatness=self.flat,
            acc_sum=n(est.acc_sum) if est.acc_sum is not None else np.zeros((0, 0)), **moves,
            swap_attempted=self.swaps.attempted.copy(), swap_accepted=self.swaps.accepted.copy(),
            torch_rng=self.gen.get_state().numpy(), numpy_rng=json.dumps(self.rng.bit_generator.state),
            init_iterations=self.init_iterations, init_seconds=self.init_seconds, elapsed_seconds=self.elapsed(),
            **self.history_arrays())

    def history_arrays(self) -> dict[str, np.ndarray]:
        """Rank 0's record of the flatness checks: steps (T,), ln f and flatness (T, n_windows)."""
        n_w, hist = self.cfg.windows.count, self.history
        return {"history_step": np.array([h[0] for h in hist], dtype=np.int64),
                "history_ln_f": np.array([h[1] for h in hist]).reshape(len(hist), n_w),
                "history_flatness": np.array([h[2] for h in hist]).reshape(len(hist), n_w)}

    def gather_record(self, status: str) -> RunRecord | None:
        """Collective: window leaders send their estimate to rank 0, which builds the run record."""
        comm, cfg = self.comm, self.cfg
        n_w, n_y = cfg.windows.count, self.grid.y.bins
        attempted, accepted = self.moves.totals()
        moves = np.zeros((2, n_w, len(attempted)))
        moves[0, comm.window], moves[1, comm.window] = attempted.cpu().numpy(), accepted.cpu().numpy()
        moves = comm.world_sum(moves)
        swaps = comm.world_sum(np.stack([self.swaps.attempted, self.swaps.accepted]))
        leader = comm.local == 0
        names = self.est.merged_arrays()       # the same on every rank: ln_g, hist, visits [, acc_sum]
        if leader and not comm.is_root:
            for tag, name in enumerate(names):
                comm.send(getattr(self.est, name).cpu().numpy(), 0, tag=100 + tag)
        if not comm.is_root:
            return None
        windows = []
        for k, (lo, hi) in enumerate(self.bins):
            src = comm.rank_of(k, 0)
            if src == 0:
                arrays = [getattr(self.est, name).cpu().numpy() for name in names]
            else:
                arrays = [comm.recv((hi - lo, n_y), np.float64, src, tag=100 + t) for t in range(len(names))]
            row = self.rows[src]
            windows.append(WindowRecord(
                x_bins=(lo, hi), ln_g=arrays[0], hist=arrays[1], visits=arrays[2],
                accuracy_sum=arrays[3] if len(arrays) > 3 else None, ln_f=float(row[_COL["ln_f"]]),
                stage=int(row[_COL["stage"]]), one_over_t=bool(row[_COL["one_over_t"]]),
                converged=bool(row[_COL["converged"]]), flatness=float(row[_COL["flatness"]]),
                init_iterations=int(self.rows[comm.rank_of(k, 0): comm.rank_of(k + 1, 0), _COL["init_iterations"]].max()),
                init_seconds=float(self.rows[comm.rank_of(k, 0): comm.rank_of(k + 1, 0), _COL["init_seconds"]].max())))
        return RunRecord(
            deck_text=cfg.text, deck_path=cfg.path, status=status, task=self.task.name, sampler=cfg.sampler.kind,
            x_label=self.task.x_label, y_label=self.task.y_label, n_params=self.task.n_params,
            ranks_per_window=comm.ranks_per_window, walkers_per_rank=cfg.sampler.walkers_per_rank,
            steps=self.step, max_steps=cfg.run.max_steps, elapsed_seconds=self.elapsed(),
            x_edges=self.grid.x.edges, y_edges=self.grid.y.edges, windows=windows,
            group_names=["md_inside"] if self.md else self.task.group_names,
            move_attempted=moves[0], move_accepted=moves[1],
            swap_attempted=swaps[0], swap_accepted=swaps[1],
            rewl_version=__version__, **self.history_arrays())

    def log_progress(self, final: bool, status: str = "") -> None:
        """Rank 0: a progress line every log_interval seconds (a live bar on a terminal)."""
        if not self.comm.is_root:
            return
        now = time.perf_counter()
        tty = sys.stdout.isatty()
        due = final or now - self.last_log >= self.cfg.output.log_interval
        if not (due or (tty and now - self.last_log >= 0.5)):
            return
        rows = self.rows
        parts = []
        for k in range(self.cfg.windows.count):
            r = rows[k * self.comm.ranks_per_window: (k + 1) * self.comm.ranks_per_window]
            acc = r[:, _COL["move_acc"]].sum() / max(1.0, r[:, _COL["move_att"]].sum())
            mark = "*" if r[0, _COL["converged"]] else ""
            label = "in" if self.md else "acc"      # MD: fraction of walker-steps inside the window
            part = f"w{k}{mark} lnf={r[0, _COL['ln_f']]:.2e} flat={r[0, _COL['flatness']]:.2f} {label}={acc:.2f}"
            if self.md:
                part += f" T={r[:, _COL['kinetic_t']].mean():.2f}"
            parts.append(part)
        swaps = []
        for k in range(self.cfg.windows.count - 1):
            r = rows[k * self.comm.ranks_per_window: (k + 1) * self.comm.ranks_per_window]
            swaps.append(f"{r[:, _COL['swap_acc']].sum() / max(1.0, r[:, _COL['swap_att']].sum()):.2f}")
        progress = min(schedule_progress(r[_COL["ln_f"]], bool(r[_COL["converged"]]), self.cfg.schedule, self.step)
                       for r in rows)
        elapsed = self.elapsed()
        done = self.step - self.step_at_start
        rate = done / max(1e-9, now - self.t_start)
        left = (self.cfg.run.max_steps - self.step) / rate if rate > 0 else float("inf")
        line = (f"step {self.step}/{self.cfg.run.max_steps} | " + " | ".join(parts)
                + (f" | swap {' '.join(swaps)}" if swaps else "")
                + f" | ln f progress {100 * progress:.0f}% | {_hms(elapsed)} elapsed, budget ends in {_hms(left)}")
        if final:
            line += f" | {status}"
        hot = rows[:, _COL["kinetic_t"]].max()
        if self.md and hot > 1.5 and not self.warned_hot:
            self.warned_hot = True
            print(f"\nrewl: warning: kinetic temperature {hot:.3g} (should be 1): the Langevin integration is "
                  "unstable; lower [sampler] dt or wall_strength", file=sys.stderr, flush=True)
        if due:
            print(("\r" if tty else "") + line, flush=True)
            self.last_log = now
        else:
            print("\r" + line[: 200], end="", flush=True)


def _hms(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_deck(cfg: Config, out_dir: str, resume: bool, force: bool) -> int:
    """Run (or resume) a deck under MPI; returns the process exit code."""
    comm = Comm(cfg.windows.count, cfg.windows.ranks_per_window)
    store = RunStore(out_dir)
    problem = None
    if comm.is_root:
        try:
            if resume:
                old = parse(store.read_run().deck_text, str(store.run_path))
                store.latest_step()
                diffs = resume_differences(old, cfg)
                if diffs:
                    problem = (f"{cfg.path}: cannot resume {out_dir}: the deck differs from the run's in "
                               f"{', '.join(diffs)} (only [run] max_steps, [output] and [baseline] may change)")
            else:
                problem = store.problem_for_new_run(force)
                if problem is None:
                    store.prepare_new()
        except StorageError as exc:
            problem = str(exc)
    problem = comm.bcast_text(problem)
    if problem:
        if comm.is_root:
            print(f"rewl: error: {problem}", file=sys.stderr, flush=True)
        return 2
    engine = Engine(cfg, comm, store)
    if comm.is_root:
        print(f"rewl {__version__}: {engine.task.describe()}; {cfg.windows.count} windows x "
              f"{cfg.windows.ranks_per_window} ranks x {cfg.sampler.walkers_per_rank} walkers on {engine.device}; "
              f"{'resuming' if resume else 'writing'} {store.run_path}", flush=True)
    status = engine.run(resume)
    if comm.is_root:
        print(f"rewl: {status} after {engine.step} steps; results in {store.run_path}", flush=True)
    return 0
