"""The REWL engine: one rank's life from start (or resume) to the final run file.

Each rank owns one window of x = ln L_train and advances a batch of walkers with its sampler.
Every ``sync_interval`` steps the ranks meet (see ``Engine.run``). Nothing here depends on wall
time except logging, so a resumed run equals an uninterrupted one bit for bit.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from . import __version__
from .comm import Comm, LayoutError
from .config import SAMPLER_TABLES, Config, parse
from .devices import describe_mapping, device_identity, gpu_sharing_problem, keep_freed_memory, pick_device
from .exchange import SwapStats, exchange_round
from .grid import Window
from .progress import ProgressLine
from .records import OFFSET_ARRAYS, Checkpoint, History, RunRecord, WindowRecord
from .samplers import make_sampler
from .schedule import make_schedule
from .status import RankStatus
from .stop import StopRequest
from .storage import RunStore, StorageError
from .tasks import TaskFactory, make_task
from .walkers import Walkers, drive_into_window, spread_targets
from .wl import Estimate


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
        self.device_mapping = self.map_devices()
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
        self.progress = ProgressLine(cfg.windows.count, cfg.windows.ranks_per_window, self.sampler.rate_label,
                                     self.schedule, cfg.run.max_steps, cfg.output.log_interval,
                                     self.sampler.low_rate_hint,
                                     show_walls=cfg.sampler.kind == "wlmd" and cfg.sampler.wall_strength == "auto")

    def map_devices(self) -> str:
        """Collective: every rank's device; refuses two ranks on one GPU unless the deck allows it.
        Returns the mapping as one line."""
        identities = self.comm.allgather_text(device_identity(self.device))
        problem = gpu_sharing_problem(identities, self.cfg.run.share_gpus)
        if problem:
            raise LayoutError(problem)
        return describe_mapping(identities)

    @property
    def walkers_per_window(self) -> int:
        return self.cfg.sampler.walkers_per_rank * self.cfg.windows.ranks_per_window

    # -- the loop ------------------------------------------------------------------------------

    def run(self, resume_step: int | None) -> str:
        """Run to the end, from checkpoint `resume_step` or from the start (None); returns the
        final status (budget-exhausted, converged or interrupted).

        Pseudocode, every phase on every rank::

            restore the last checkpoint, or initialise the walkers and write checkpoint 0
            if a stop was requested during start-up: stop, interrupted
            loop:
                if step >= max_steps: stop, budget-exhausted
                advance sync_interval steps of every walker         (sampler, estimate)
                merge the window's ln g increments                  (ranks of one window)
                sampler at_sync                                     (WLMC adapts move sizes and levels
                                                                     unvisited bins, WLMD its edges)
                on check steps: flatness check, ln f schedule
                share every rank's status                           (allgather)
                on check steps: rank 0 records ln f and flatness
                on exchange steps: one replica-exchange round       (neighbouring windows)
                count round trips of walkers now in the lowest or highest window
                if any rank was asked to stop: stop, interrupted   (signal, stop file, deadline)
                elif every window converged: stop, converged
                elif on checkpoint steps: write a checkpoint
                progress line
            write the final checkpoint and run file
        """
        cfg = self.cfg
        check, exchange = Periodic(cfg.schedule.check_interval), Periodic(cfg.exchange.interval)
        checkpoint = Periodic(cfg.output.checkpoint_interval)
        self.t_start = time.perf_counter()
        if resume_step is not None:
            self.restore(self.store.read_checkpoint(resume_step, self.comm.rank))
            self.share_status()
        else:
            self.initialise()
            self.share_status()
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
            self.sampler.at_sync(self.step, self.est)
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
            raise RuntimeError(f"window {window.index}: {exc}") from None
        self.walkers, inside = Walkers.at(self.task, params.detach(), window)
        if not bool(inside.all()):
            bad = int((~inside).sum())
            raise RuntimeError(
                f"window {window.index}: {bad} walkers have y outside [grid.y] "
                f"[{window.y_range[0]}, {window.y_range[1]}] after initialisation; widen [grid.y]")
        self.est = Estimate.zeros(window.shape, cfg.schedule.ln_f_initial, self.device, walkers=self.walkers_per_window,
                                  with_accuracy=self.task.has_accuracy, with_offsets=self.sampler.keeps_offsets)
        self.sampler.start(self.walkers, self.est, self.gen, cfg.init.equilibration_steps)
        self.init_seconds = time.perf_counter() - t0

    def advance(self, n_steps: int) -> None:
        """n_steps sampler steps of all this rank's walkers."""
        for _ in range(n_steps):
            self.schedule.before_step(self.est, self.step)
            self.sampler.step(self.walkers, self.est, self.gen)
            self.step += 1
        self.sampler.end_block(self.walkers)

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
            round_trips=float(self.walkers.round_trips.sum()), wall_strength=self.sampler.wall_strength)
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
        complete. A crash in between leaves the previous complete set in force. `scheduled`: at
        step 0 or a multiple of checkpoint_interval (not a stop, not the end of the budget)."""
        self.est.mark_checkpoint(scheduled)
        self.share_status()          # the run file reports the change of ln g just measured
        self.store.write_checkpoint(self.comm.rank, self.snapshot())
        record = self.gather_record(status)
        self.comm.barrier()
        if self.comm.is_root:
            self.store.write_run(record)
            self.store.mark_complete(self.step)
        self.comm.barrier()

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
        gathered = comm.gather_window_arrays([a.cpu().numpy() for a in local.values()], [w.shape for w in self.windows])
        if gathered is None:
            return None
        windows = []
        for w, arrays in zip(self.windows, gathered):
            ranks = self.statuses[comm.rank_of(w.index, 0): comm.rank_of(w.index + 1, 0)]
            lead = ranks[0]
            values = dict(zip(names, arrays))
            windows.append(WindowRecord(
                x_bins=(w.lo, w.hi), ln_g=values["ln_g"], hist=values["hist"], visits=values["visits"],
                accuracy_sum=values.get("accuracy_sum"), **{name: values.get(name) for name in OFFSET_ARRAYS},
                ln_f=lead.ln_f, stage=lead.stage, per_visit=self.est.per_visit, clock_start=lead.clock_start,
                one_over_t=lead.one_over_t, converged=lead.converged, flatness=lead.flatness,
                flatness_all=lead.flatness_all, rare_fraction=lead.rare_fraction, ln_g_change=lead.ln_g_change,
                init_iterations=max(r.init_iterations for r in ranks), init_seconds=max(r.init_seconds for r in ranks),
                wall_strength=lead.wall_strength))
        return RunRecord(
            deck_text=cfg.text, deck_path=cfg.path, deck_overrides=json.dumps(list(cfg.overrides)), status=status,
            task=self.task.name, sampler=cfg.sampler.kind,
            x_label=self.task.x_label, y_label=self.task.y_label, n_params=self.task.n_params,
            ranks_per_window=comm.ranks_per_window, walkers_per_rank=cfg.sampler.walkers_per_rank,
            steps=self.step, max_steps=cfg.run.max_steps, elapsed_seconds=self.elapsed(),
            x_edges=cfg.grid.x.edges, y_edges=cfg.grid.y.edges, windows=windows,
            group_names=self.sampler.counter_names, move_attempted=moves[0], move_accepted=moves[1],
            swap_attempted=swaps[0], swap_accepted=swaps[1], rewl_version=__version__, history=self.history_record(),
            round_trips=self.round_trips())


def _refused(comm: Comm, problem: str | None) -> bool:
    """Collective: rank 0's problem (if any) reaches every rank, and rank 0 prints it."""
    problem = comm.bcast_text(problem)
    if problem and comm.is_root:
        print(f"rewl: error: {problem}", file=sys.stderr, flush=True)
    return problem is not None


def run_deck(cfg: Config, out_dir: str, resume: bool, force: bool, stop: StopRequest,
             custom_task: TaskFactory | None = None) -> int:
    """Run (or resume) a deck under MPI; returns the process exit code. `stop` was created before
    any heavy work (see StopRequest); `custom_task` builds the task of a ``kind = "custom"`` deck.
    Rank 0 holds the directory's writer lock (``RunStore.lock``) from its checks to the end."""
    comm = Comm(cfg.windows.count, cfg.windows.ranks_per_window)
    store = RunStore(out_dir)
    problem, stored, resume_step = None, None, None
    if comm.is_root:
        try:
            if resume:
                stored = store.read_run()
                old = parse(stored.deck_text, str(store.run_path), stored.overrides)
                resume_step, warning = store.resume_point(comm.size)
                if warning:
                    print(f"rewl: warning: {warning}", file=sys.stderr, flush=True)
                diffs = resume_differences(old, cfg)
                if diffs:
                    started = f"; the run was started with {' '.join('--set ' + o for o in old.overrides)}" \
                        if old.overrides else ""
                    problem = (f"{cfg.path}: cannot resume {out_dir}: the deck differs from the run's in "
                               f"{', '.join(diffs)} (only [run] max_steps, [output] and [baseline] may change{started})")
            else:
                problem = store.problem_for_new_run(force)
            problem = problem or store.lock()
        except StorageError as exc:
            problem = str(exc)
    try:
        if _refused(comm, problem):
            return 2
        if resume:
            resume_step = int(comm.bcast_text(str(resume_step)))
        return _run_locked(cfg, comm, store, stored, resume_step, stop, custom_task)
    finally:
        store.unlock()


def _run_locked(cfg: Config, comm: Comm, store: RunStore, stored: RunRecord | None, resume_step: int | None,
                stop: StopRequest, custom_task: TaskFactory | None) -> int:
    """The rest of ``run_deck``: build the engine, prepare the directory, run, report. `stored`:
    the run file's record on rank 0 of a resume (None elsewhere); `resume_step`: the checkpoint
    a resume continues from (every rank), None for a new run."""
    engine = Engine(cfg, comm, store, stop, custom_task)     # data and task problems end here: no run file yet
    problem = None
    if stored is not None and stored.task != engine.task.name:
        problem = f"{cfg.path}: cannot resume {store.dir}: it is a run of task {stored.task!r}, this is {engine.task.name!r}"
    if _refused(comm, problem):
        return 2
    if resume_step is None and comm.is_root:
        store.prepare_new()
    comm.barrier()
    if comm.is_root:
        print(f"rewl {__version__}: {engine.task.describe()}; {cfg.windows.count} windows x "
              f"{cfg.windows.ranks_per_window} ranks x {cfg.sampler.walkers_per_rank} walkers on "
              f"{engine.device_mapping}; {'writing' if resume_step is None else f'resuming from step {resume_step} into'} "
              f"{store.run_path}", flush=True)
    status = engine.run(resume_step)
    if comm.is_root:
        why = f" ({stop.reason() or 'stop requested on another rank'})" if status == "interrupted" else ""
        print(f"rewl: {status}{why} after {engine.step} steps; results in {store.run_path}", flush=True)
    return 0
