"""The REWL engine: one rank's life from start (or resume) to the final run file.

Each rank owns one window of x = ln L_train and advances a batch of walkers with its sampler.
Every ``sync_interval`` steps the ranks meet (see ``Engine.run``). Nothing here depends on wall
time except logging, so a resumed run equals an uninterrupted one bit for bit.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .comm import Comm, LayoutError, agree
from .config import SAMPLER_TABLES, Config, parse
from .data import DataError
from .devices import describe_mapping, device_identity, gpu_sharing_problem, keep_freed_memory, pick_device
from .errors import StartError, WriteFailed
from .exchange import SwapStats, exchange_round
from .grid import Window
from .joining import JoinFailed, edge_rows, join_pairs
from .progress import ProgressLine
from .records import OFFSET_ARRAYS, Checkpoint, History, RunRecord, WindowRecord
from .samplers import make_sampler
from .schedule import make_schedule
from .status import RankStatus
from .stop import StopRequest
from .storage import RunStore, StorageError
from .tasks import TaskError, TaskFactory, make_task
from .walkers import Walkers, drive_into_window, spread_targets
from .wl import Estimate, fold_crossings, mark_crossings, record_y


class Periodic:
    """A trigger that fires at steps that are multiples of `interval`."""

    def __init__(self, interval: int):
        self.interval = interval

    def __call__(self, step: int) -> bool:
        return step % self.interval == 0


def resume_differences(old: Config, new: Config) -> list[str]:
    """Tables whose values differ between the stored deck and the one given to --resume; only
    [run] max_steps, [output] and [baseline] (not used by the sampler) may change."""
    diffs = []
    for name in SAMPLER_TABLES:
        a, b = getattr(old, name), getattr(new, name)
        if name == "run":
            a, b = replace(a, max_steps=0), replace(b, max_steps=0)
        if a != b:
            diffs.append(f"[{name}]")
    return diffs


class Engine:
    """One rank of a REWL run: its window, walkers, estimate, sampler and the loop that drives them."""

    def __init__(self, cfg: Config, comm: Comm, store: RunStore, stop: StopRequest, custom_task: TaskFactory | None = None):
        self.cfg, self.comm, self.store, self.stop = cfg, comm, store, stop
        if comm.size > 1:
            torch.set_num_threads(1)
        keep_freed_memory()
        self.device = pick_device(cfg.run.device)
        self.device_mapping = ""                 # map_devices, once every rank has its engine
        self.task = make_task(cfg, self.device, custom_task)
        self.windows = Window.split(cfg.grid, cfg.windows.count, cfg.windows.overlap)
        self.window = self.windows[comm.window]
        self.sampler = make_sampler(cfg.sampler, self.task, self.window, self.device)
        self.schedule = make_schedule(cfg.schedule)
        seeds = np.random.SeedSequence([cfg.run.seed, comm.rank]).generate_state(2)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(seeds[0]))
        self.rng = np.random.default_rng(int(seeds[1]))
        self.step = 0
        self.exchange_rounds = 0
        self.swaps = SwapStats.zeros(cfg.windows.count)
        self.init_iterations, self.init_seconds = 0, 0.0
        self.elapsed_before = 0.0
        self.history: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.statuses: list[RankStatus] = []
        self.marked_step = -1                  # the step of the last checkpoint measured (``write_checkpoint``)
        self.join_problem = ""                 # why windows that all settled did not join (rank 0 printed it)
        self.progress = ProgressLine(cfg.windows.count, cfg.windows.ranks_per_window, self.sampler.rate_label,
                                     self.schedule, cfg.run.max_steps, cfg.output.log_interval,
                                     self.sampler.low_rate_hint,
                                     show_walls=cfg.sampler.kind == "wlmd" and cfg.sampler.wall_strength == "auto")

    def map_devices(self) -> None:
        """Collective: every rank's device, as one line; refuses two ranks on one GPU unless the
        deck allows it."""
        identities = self.comm.allgather_text(device_identity(self.device))
        problem = gpu_sharing_problem(identities, self.cfg.run.share_gpus)
        if problem:
            raise LayoutError(problem)
        self.device_mapping = describe_mapping(identities)

    @property
    def walkers_per_window(self) -> int:
        return self.cfg.sampler.walkers_per_rank * self.cfg.windows.ranks_per_window

    # -- the loop ------------------------------------------------------------------------------

    def start(self, resume_step: int | None) -> None:
        """This rank's walkers and estimate: restored from checkpoint `resume_step`, or
        initialised (None). Local: ``run_deck`` has every rank agree that it worked."""
        self.t_start = time.perf_counter()
        self.resumed = resume_step is not None
        if self.resumed:
            self.restore(self.store.read_checkpoint(resume_step, self.comm.rank))
        else:
            self.initialise()

    def run(self) -> str:
        """Run to the end from where ``start`` left the walkers; returns the final status
        (budget-exhausted, converged or interrupted). A write failure raises ``WriteFailed`` on
        every rank (``write_checkpoint``); any other exception names the step it happened at.

        Pseudocode, every phase on every rank::

            a new run writes checkpoint 0
            if a stop was requested during start-up: stop, interrupted
            loop:
                if step >= max_steps: stop, budget-exhausted
                advance sync_interval steps of every walker         (sampler, estimate, crossings of x edges)
                merge the window's ln g increments                  (ranks of one window)
                sampler at_sync                                     (WLMC and HMC adapt move sizes and
                                                                     level unvisited bins, WLMD its edges)
                on check steps: flatness check, ln f schedule
                share every rank's status                           (allgather)
                on check steps: rank 0 records ln f and flatness
                on exchange steps: one replica-exchange round       (neighbouring windows)
                count round trips of walkers now in the lowest or highest window
                if any rank was asked to stop: stop, interrupted   (signal, stop file, deadline)
                elif the run converged: stop, converged
                elif on checkpoint steps: settle each window, conclude whether the run converged
                    (every window settled and the windows join), write a checkpoint; stop if converged
                progress line
            write the final checkpoint and run file
        """
        try:
            return self._loop()
        except WriteFailed:
            raise
        except Exception as exc:
            exc.add_note(f"rewl: at step {self.step}, window {self.window.index}, rank {self.comm.rank}")
            raise

    def _loop(self) -> str:
        cfg = self.cfg
        check, exchange = Periodic(cfg.schedule.check_interval), Periodic(cfg.exchange.interval)
        checkpoint = Periodic(cfg.output.checkpoint_interval)
        self.share_status()
        if not self.resumed:
            self.write_checkpoint("running")
        self.remember_merged()
        self.step_at_start = self.step
        status = self.decide()       # a stop requested during start-up ends here, resumable
        while status is None:
            if self.step >= cfg.run.max_steps:
                status = "budget-exhausted"
                break
            self.advance(cfg.sampler.sync_interval)
            self.merge_window()
            self.sampler.at_sync(self.step, self.est, self.walkers)
            self.remember_merged()
            if check(self.step):
                self.check_flatness()
            self.share_status()
            if check(self.step):
                self.record_history()
            if exchange(self.step):
                self.exchange()
            self.walkers.track_round_trips(self.window.index == 0, self.window.index == cfg.windows.count - 1)
            status = self.decide()
            if status is None and checkpoint(self.step) and self.step < cfg.run.max_steps:
                self.write_checkpoint("running")
                status = self.decide()
            self.show_progress()
        self.write_checkpoint(status, scheduled=False)
        self.show_progress(final=True, status=status)
        return status

    # -- phases --------------------------------------------------------------------------------

    def initialise(self) -> None:
        """Draw walkers in the box, drive them into the window (spread over its x bins unless
        [init] spread = false), let the sampler equilibrate them without updating ln g."""
        t0 = time.perf_counter()
        cfg, window = self.cfg, self.window
        count = cfg.sampler.walkers_per_rank
        params = self.task.sample_uniform(count, self.gen)
        targets = (spread_targets(window, count, self.walkers_per_window, self.comm.local * count, self.device)
                   if cfg.init.spread else window.x_range)
        try:
            params, self.init_iterations = drive_into_window(
                self.task, params, targets, window.y_range, cfg.init.max_iterations, cfg.init.learning_rate)
        except RuntimeError as exc:
            raise StartError(f"window {window.index}: {exc}") from None
        self.walkers, inside = Walkers.at(self.task, params.detach(), window)
        if not bool(inside.all()):       # only y can be outside (the drive brought x in); never when recorded
            bad = int((~inside).sum())
            raise StartError(
                f"window {window.index}: {bad} walkers have y outside [grid.y] "
                f"[{window.y_range[0]}, {window.y_range[1]}] after initialisation; widen [grid.y]")
        self.est = Estimate.zeros(window.shape, cfg.schedule.ln_f_initial, self.device, walkers=self.walkers_per_window,
                                  with_accuracy=self.task.has_accuracy, with_offsets=self.sampler.keeps_offsets,
                                  recorded_y_bins=window.recorded_y_bins)
        self.sampler.start(self.walkers, self.est, self.gen, cfg.init.equilibration_steps)
        self.init_seconds = time.perf_counter() - t0

    def advance(self, n_steps: int) -> None:
        """n_steps sampler steps of all this rank's walkers, counting the x edges they cross."""
        marks = torch.zeros(self.window.n_x, dtype=torch.float64, device=self.device)
        for _ in range(n_steps):
            self.schedule.before_step(self.est, self.step)
            before = self.walkers.ix
            self.sampler.step(self.walkers, self.est, self.gen)
            mark_crossings(marks, before, self.walkers.ix)
            self.step += 1
        self.sampler.end_block(self.walkers)
        fold_crossings(self.est, marks)
        if self.est.y_hist is not None:
            self.record_y()

    def record_y(self) -> None:
        """y recorded: each walker inside the window adds its y to the histogram of its x bin, once
        per synchronisation. Samples sync_interval steps apart are close to independent (a sweep
        or more of single-parameter moves); every step would add mostly repeats: recorded every
        step, box_quadratic's P(y | x) in bins of 1,000 visits scattered by up to 0.25 from the
        exact one (about 40 independent samples per 1,000 visits), at 100 times the work."""
        x, y = self.walkers.x, self.walkers.y
        ix, _, inside = self.window.bin(x, y)
        record_y(self.est, ix, self.window.grid.y.index(y), inside)

    def merge_window(self) -> None:
        """Sum the ln g and histogram increments of the window's ranks since the last merge."""
        if self.comm.ranks_per_window == 1:
            return
        est = self.est
        for name in est.merged_arrays():
            base = self._merged[name]
            total = self.comm.window_sum((getattr(est, name) - base).cpu().numpy())
            setattr(est, name, base + torch.as_tensor(total, device=self.device))

    def remember_merged(self) -> None:
        """The estimate as merged, and as every rank of the window then changed it alike (the
        sampler's at_sync, a new stage): the next merge sums the increments since."""
        if self.comm.ranks_per_window == 1:
            return
        self._merged = {name: getattr(self.est, name).clone() for name in self.est.merged_arrays()}

    def check_flatness(self) -> None:
        """The schedule's check (identical on the window's ranks: they see the merged estimate)."""
        self.schedule.check(self.est, self.step)
        self.remember_merged()

    def share_status(self) -> None:
        """Every rank learns every rank's status."""
        attempted, accepted = self.sampler.totals()
        w, est = self.comm.window, self.est
        has_pair = w < self.comm.n_windows - 1
        mine = RankStatus(
            window=w, ln_f=est.ln_f, flatness=est.flatness, converged=est.converged, stop=self.stop.reason() is not None,
            stage=est.stage, one_over_t=est.one_over_t, clock_start=est.clock_start, move_attempted=float(attempted.sum()),
            move_accepted=float(accepted.sum()), kinetic_t=self.sampler.kinetic_temperature(self.walkers),
            swap_attempted=float(self.swaps.attempted[w]) if has_pair else 0.0,
            swap_accepted=float(self.swaps.accepted[w]) if has_pair else 0.0,
            init_iterations=self.init_iterations, init_seconds=self.init_seconds, flatness_all=est.flatness_all,
            rare_fraction=est.rare_fraction, ln_g_change=est.ln_g_change,
            round_trips=float(self.walkers.round_trips.sum()), wall_strength=self.sampler.wall_strength,
            step_size=self.sampler.step_size, leapfrog_steps=self.sampler.leapfrog_steps,
            settled=est.settled, recent_flatness=est.recent_flatness, recent_crossings=est.recent_crossings)
        self.statuses = [RankStatus.from_array(row) for row in self.comm.allgather(mine.to_array())]

    def record_history(self) -> None:
        """Rank 0 keeps every window's ln f, flatness and rare fraction, and the round trips, at
        each check (for diagnostics)."""
        if self.comm.is_root:
            leaders = self.statuses[:: self.comm.ranks_per_window]
            self.history.append((self.step, *(np.array([getattr(s, name) for s in leaders])
                                              for name in ("ln_f", "flatness", "flatness_all", "rare_fraction")),
                                 self.round_trips()))

    def round_trips(self) -> float:
        """All walkers' completed round trips between the lowest and the highest window (nan for
        a single window)."""
        if self.comm.n_windows == 1:
            return float("nan")
        return float(sum(s.round_trips for s in self.statuses))

    def exchange(self) -> None:
        exchange_round(self.comm, self.exchange_rounds, self.windows, self.walkers, self.est, self.rng, self.swaps)
        self.exchange_rounds += 1

    def decide(self) -> str | None:
        """The run's status from every rank's: a stop signal anywhere, or every window converged."""
        if any(s.stop for s in self.statuses):
            return "interrupted"
        if all(s.converged for s in self.statuses):
            return "converged"
        return None

    def show_progress(self, final: bool = False, status: str = "") -> None:
        if not self.comm.is_root:
            return
        rate = (self.step - self.step_at_start) / max(1e-9, time.perf_counter() - self.t_start)
        left = (self.cfg.run.max_steps - self.step) / rate if rate > 0 else float("inf")
        self.progress.show(self.step, self.statuses, self.elapsed(), left, final, status)

    # -- checkpoints and the run file ----------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    def write_checkpoint(self, status: str, scheduled: bool = True) -> None:
        """Collective: every rank writes its checkpoint, rank 0 the run file, then marks the set
        complete. A crash in between leaves the previous complete set in force; a write that
        fails on any rank (a full disk) ends the run on every rank with ``WriteFailed``, the
        failed set's files removed. `scheduled`: at step 0 or a multiple of checkpoint_interval
        (not a stop, not the end of the budget): each window is settled or not on what happened
        since the previous one (``Schedule.settle``), and the run concludes (``conclude``)."""
        if self.step != self.marked_step:      # the end of a run that converged at a checkpoint: measured there
            keep = self.schedule.at_end(self.est, self.step)
            self.est.mark_checkpoint(scheduled, self.cfg.schedule.decide_depth, keep_stretch=keep)
            if scheduled:
                if self.schedule.end_stretch(self.est, self.step):
                    self.remember_merged()
                self.schedule.settle(self.est, self.step)
            self.marked_step = self.step
            self.share_status()      # the run file reports what was just measured
            if scheduled and status == "running":
                self.conclude()
        snapshot = self.snapshot()
        self.written("checkpoint", lambda: self.store.write_checkpoint(self.comm.rank, snapshot))
        record = self.gather_record(status)

        def complete() -> None:
            if self.comm.is_root:
                self.store.write_run(record)
                self.store.mark_complete(self.step)
        self.written("run file", complete)

    def conclude(self) -> None:
        """Collective, when every window is settled: the run converged if its windows also join
        (``joining.join_pairs`` on the estimates gathered to rank 0, with the analysis's default
        thresholds); then every window's estimate is final (``Estimate.converged``). Windows that
        settled apart but contradict each other in an overlap run on; rank 0 says why."""
        if not all(s.settled for s in self.statuses) or all(s.converged for s in self.statuses):
            return
        record = self.gather_record("running")
        problem = ""
        if self.comm.is_root:
            try:
                join_pairs(record, self.cfg.schedule.decide_depth, edge_rows(self.cfg.sampler))
            except JoinFailed as exc:
                problem = str(exc)
                if problem != self.join_problem:
                    print(f"rewl: every window settled at step {self.step}, but {problem}; running on", flush=True)
        self.join_problem = self.comm.bcast_text(problem)
        if not self.join_problem:
            self.est.converged = True
            self.share_status()

    def written(self, what: str, write: Callable[[], None]) -> None:
        """Collective: `write` on every rank; if it failed with an OSError on any rank, every
        rank removes its part of this step's checkpoint and raises ``WriteFailed`` naming the
        directory, the step, the cause and what to do."""
        try:
            write()
            problem = ""
        except OSError as exc:
            problem = os.strerror(exc.errno) if exc.errno else str(exc)    # h5py's text runs to lines
        failed = [(rank, text) for rank, (text,) in enumerate(self.comm.allgather_text((problem,))) if text]
        if not failed:
            return
        self.store.discard_unmarked(self.step, self.comm.rank)
        self.comm.barrier()
        if self.comm.is_root:
            self.store.discard_unmarked(self.step)
        causes = "; ".join(f"rank {rank}: {text}" for rank, text in failed)
        try:
            kept = self.store.latest_step()
        except StorageError:
            kept = None
        if kept is None:
            then = f"no checkpoint was completed: free space, then start again with `{resume_command(self.cfg, self.store.dir, False)}`"
        else:
            then = (f"its run file and the complete checkpoint of step {kept} are intact: free space (or fix the "
                    f"filesystem), then continue with `{resume_command(self.cfg, self.store.dir, True)}`")
        raise WriteFailed(f"cannot write the {what} of step {self.step} in {self.store.dir} ({causes}); "
                          f"the run stopped; {then}")

    def snapshot(self) -> Checkpoint:
        return Checkpoint(
            step=self.step, exchange_round=self.exchange_rounds, walkers=self.walkers.to_record(),
            estimate=self.est.to_record(), sampler=self.sampler.state(),
            swap_attempted=self.swaps.attempted.copy(), swap_accepted=self.swaps.accepted.copy(),
            torch_rng=self.gen.get_state().numpy(), numpy_rng=json.dumps(self.rng.bit_generator.state),
            init_iterations=self.init_iterations, init_seconds=self.init_seconds, elapsed_seconds=self.elapsed(),
            history=self.history_record())

    def restore(self, ck: Checkpoint) -> None:
        """The inverse of ``snapshot``."""
        self.step, self.exchange_rounds = int(ck.step), int(ck.exchange_round)
        self.walkers = Walkers.from_record(ck.walkers, self.task.dtype, self.device)
        self.est = Estimate.from_record(ck.estimate, self.walkers_per_window, self.device)
        self.sampler.load_state(ck.sampler)
        self.swaps = SwapStats(ck.swap_attempted.copy(), ck.swap_accepted.copy())
        self.gen.set_state(torch.as_tensor(ck.torch_rng, dtype=torch.uint8))
        self.rng.bit_generator.state = json.loads(ck.numpy_rng)
        self.init_iterations, self.init_seconds = int(ck.init_iterations), float(ck.init_seconds)
        self.elapsed_before = float(ck.elapsed_seconds)
        if self.comm.is_root:
            h = ck.history
            missing = np.full_like(h.ln_f, np.nan)       # schema 1 and 2 checkpoints
            self.history = list(zip(h.step.tolist(), h.ln_f, h.flatness,
                                    missing if h.flatness_all is None else h.flatness_all,
                                    missing if h.rare_fraction is None else h.rare_fraction,
                                    np.full(len(h.step), np.nan) if h.round_trips is None else h.round_trips))

    def history_record(self) -> History:
        """Rank 0's record of the flatness checks (empty on other ranks)."""
        n_w, hist = self.cfg.windows.count, self.history
        column = lambda k: np.array([h[k] for h in hist]).reshape(len(hist), n_w)  # noqa: E731
        return History(step=np.array([h[0] for h in hist], dtype=np.int64), ln_f=column(1), flatness=column(2),
                       flatness_all=column(3), rare_fraction=column(4),
                       round_trips=np.array([h[5] for h in hist], dtype=np.float64))

    def gather_record(self, status: str) -> RunRecord | None:
        """Collective: window leaders send their estimate to rank 0, which builds the run record."""
        comm, cfg = self.comm, self.cfg
        attempted, accepted = self.sampler.totals()
        moves = np.zeros((2, cfg.windows.count, len(attempted)))
        moves[0, comm.window], moves[1, comm.window] = attempted.cpu().numpy(), accepted.cpu().numpy()
        moves = comm.world_sum(moves)
        swaps = comm.world_sum(np.stack([self.swaps.attempted, self.swaps.accepted]))
        names = self.est.merged_arrays()       # the same on every rank
        local = {name: getattr(self.est, name) for name in names}
        local["ln_g"] = self.sampler.bin_ln_g(local["ln_g"])     # whole bins (WLMD keeps ln g per reachable area)
        shapes = [[{"y_hist": (w.n_x, cfg.grid.y.bins), "edge_crossings": (w.n_x - 1,)}.get(name, w.shape) for name in names]
                  for w in self.windows]
        gathered = comm.gather_window_arrays([a.cpu().numpy() for a in local.values()], shapes)
        if gathered is None:
            return None
        windows = []
        for w, arrays in zip(self.windows, gathered):
            ranks = self.statuses[comm.rank_of(w.index, 0): comm.rank_of(w.index + 1, 0)]
            lead = ranks[0]
            values = dict(zip(names, arrays))
            windows.append(WindowRecord(
                x_bins=(w.lo, w.hi), ln_g=values["ln_g"], hist=values["hist"], visits=values["visits"],
                accuracy_sum=values.get("accuracy_sum"), y_hist=values.get("y_hist"),
                **{name: values.get(name) for name in OFFSET_ARRAYS},
                ln_f=lead.ln_f, stage=lead.stage, per_visit=self.est.per_visit, clock_start=lead.clock_start,
                one_over_t=lead.one_over_t, converged=lead.converged, flatness=lead.flatness,
                flatness_all=lead.flatness_all, rare_fraction=lead.rare_fraction, ln_g_change=lead.ln_g_change,
                settled=lead.settled, recent_flatness=lead.recent_flatness, recent_crossings=lead.recent_crossings,
                edge_crossings=values["edge_crossings"],
                init_iterations=max(r.init_iterations for r in ranks), init_seconds=max(r.init_seconds for r in ranks),
                wall_strength=lead.wall_strength, step_size=lead.step_size, leapfrog_steps=lead.leapfrog_steps))
        return RunRecord(
            deck_text=cfg.text, deck_path=cfg.path, deck_overrides=json.dumps(list(cfg.overrides)), status=status,
            task=self.task.name, sampler=cfg.sampler.kind,
            x_label=self.task.x_label, y_label=self.task.y_label, n_params=self.task.n_params,
            ranks_per_window=comm.ranks_per_window, walkers_per_rank=cfg.sampler.walkers_per_rank,
            steps=self.step, max_steps=cfg.run.max_steps, elapsed_seconds=self.elapsed(),
            x_edges=cfg.grid.x.edges, y_edges=cfg.grid.y.edges, windows=windows,
            group_names=self.sampler.counter_names, move_attempted=moves[0], move_accepted=moves[1],
            swap_attempted=swaps[0], swap_accepted=swaps[1], rewl_version=__version__, history=self.history_record(),
            round_trips=self.round_trips(), y_mode="recorded" if cfg.grid.y_recorded else "flattened")


def resume_command(cfg: Config, out_dir: Path | str, resume: bool) -> str:
    """The command line that continues (or restarts) this run."""
    words = ["rewl run", cfg.path]
    if Path(out_dir) != Path(cfg.output.dir):
        words += ["--out", str(out_dir)]
    words += [f"--set {item}" for item in cfg.overrides]
    return " ".join(words + ["--resume" if resume else "--force"])


def _claim(cfg: Config, comm: Comm, store: RunStore, resume: bool,
           force: bool) -> tuple[RunRecord | None, int | None, str]:
    """Rank 0's checks of the output directory and its lock: for a resume the stored record, the
    checkpoint to continue from and the override that keeps the run's own y mode (``own_y_mode``),
    else (None, None, ""). StorageError or StartError when the run may not go there."""
    if not resume:
        problem = store.problem_for_new_run(force) or store.lock()
        if problem:
            raise StartError(problem)
        return None, None, ""
    stored = store.read_run()
    keep = own_y_mode(stored, cfg)
    old = parse(stored.deck_text, str(store.run_path), stored.overrides + ((keep,) if keep else ()))
    if keep:
        cfg = parse(cfg.text, cfg.path, cfg.overrides + (keep,))
        print(f"rewl: note: {store.dir} was run with y {stored.y_mode} (runs begun before rewl recorded y by default "
              f"flatten it); it resumes so (--set {keep})", file=sys.stderr, flush=True)
    resume_step, warning = store.resume_point(comm.size)
    if warning:
        print(f"rewl: warning: {warning}", file=sys.stderr, flush=True)
    diffs = resume_differences(old, cfg)
    if diffs:
        started = f"; the run was started with {' '.join('--set ' + o for o in old.overrides)}" if old.overrides else ""
        raise StartError(f"{cfg.path}: cannot resume {store.dir}: the deck differs from the run's in "
                         f"{', '.join(diffs)} (only [run] max_steps, [output] and [baseline] may change{started})")
    problem = store.lock()
    if problem:
        raise StartError(problem)
    return stored, resume_step, keep


def own_y_mode(stored: RunRecord, cfg: Config) -> str:
    """The `--set` that keeps a stored run's y mode when the deck now resolves to the other one
    (a run begun before y was recorded by default), else ""."""
    return "" if stored.y_recorded == cfg.grid.y_recorded else f'grid.y.mode="{stored.y_mode}"'


def _build_engine(cfg: Config, comm: Comm, store: RunStore, stop: StopRequest, custom_task: TaskFactory | None) -> Engine:
    """This rank's engine; its data and task problems name the deck that asked for them."""
    try:
        return Engine(cfg, comm, store, stop, custom_task)
    except (DataError, TaskError) as exc:
        if str(exc).startswith(cfg.path):
            raise
        raise type(exc)(f"{cfg.path}: {exc}") from None


def _check_same_task(cfg: Config, store: RunStore, stored: RunRecord | None, engine: Engine) -> None:
    """A resume continues a run of the same task (rank 0 holds the stored record)."""
    if stored is not None and stored.task != engine.task.name:
        raise StartError(f"{cfg.path}: cannot resume {store.dir}: it is a run of task {stored.task!r}, "
                         f"this is {engine.task.name!r}")


def run_deck(cfg: Config, out_dir: str, resume: bool, force: bool, stop: StopRequest,
             custom_task: TaskFactory | None = None) -> int:
    """Run (or resume) a deck under MPI; returns 0. `stop` was created before any heavy work (see
    StopRequest); `custom_task` builds the task of a ``kind = "custom"`` deck. Set-up, in phases
    that every rank agrees on (``agree``): a problem on any rank raises ``SetupFailed`` on every
    rank, before anything is written. Rank 0 holds the directory's writer lock
    (``RunStore.lock``) from its checks to the end."""
    comm = agree(lambda: Comm(cfg.windows.count, cfg.windows.ranks_per_window))
    store = RunStore(out_dir)
    try:
        stored, resume_step, keep = agree(lambda: _claim(cfg, comm, store, resume, force) if comm.is_root
                                          else (None, None, ""))
        if resume:
            resume_step = int(comm.bcast_text(str(resume_step)))
            keep = comm.bcast_text(keep)
            if keep:
                cfg = parse(cfg.text, cfg.path, cfg.overrides + (keep,))
        engine = agree(lambda: _build_engine(cfg, comm, store, stop, custom_task))
        agree(engine.map_devices)
        agree(lambda: _check_same_task(cfg, store, stored, engine))
        agree(lambda: engine.start(resume_step))
        if resume_step is None:
            agree(lambda: store.prepare_new() if comm.is_root else None)
        begun = "new run" if resume_step is None else f"resuming from step {resume_step}"
        if comm.is_root:
            store.log("start", f"rewl {__version__}: {begun} of {cfg.path} on {comm.size} ranks")
            print(f"rewl {__version__}: {engine.task.describe()}; {cfg.windows.count} windows x "
                  f"{cfg.windows.ranks_per_window} ranks x {cfg.sampler.walkers_per_rank} walkers on "
                  f"{engine.device_mapping}; {'writing' if resume_step is None else f'{begun} into'} "
                  f"{store.run_path}", flush=True)
        status = engine.run()
        if comm.is_root:
            why = f" ({stop.reason() or 'stop requested on another rank'})" if status == "interrupted" else ""
            store.log("end", f"{status}{why} after {engine.step} steps")
            print(f"rewl: {status}{why} after {engine.step} steps; results in {store.run_path}", flush=True)
        return 0
    finally:
        store.unlock()
