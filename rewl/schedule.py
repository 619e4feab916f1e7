"""The ln f schedule: when and how the Wang-Landau modification factor falls.

One object per run (``make_schedule``), shared by nothing but the estimate it is handed. The
engine calls ``before_step`` before every step (the ramp sets ln f there) and ``check`` at every
flatness check (every ``[schedule] check_interval`` steps); a window whose ln f reaches
``ln_f_final`` is marked converged, and its estimate frozen.

To add a schedule: subclass ``Schedule``, override ``_reduce`` (and ``before_step`` when ln f is
a function of the step), add its name to ``config.SCHEDULES`` and to ``make_schedule``.
"""
from __future__ import annotations

import math

from .config import ScheduleConfig
from .wl import Estimate, flatness, stage_deposits, trapped_bins, visit_diagnostics


class Schedule:
    """Base: flatness measured at each check, convergence at ln_f_final."""

    def __init__(self, cfg: ScheduleConfig):
        self.cfg = cfg

    def before_step(self, est: Estimate, step: int) -> None:
        """Called before every step; schedules driven by the flatness checks do nothing here."""

    def check(self, est: Estimate, step: int) -> None:
        """A flatness check at `step`: the flatness of the stage histogram over every visited bin
        except those `decide_depth` below the top of their x row (``wl.flatness``) and the
        diagnostics, then the ln f update; identical on every rank of a window (it sees the merged
        estimate). Under WLMD with [sampler] flatness_of = "deposits" the test measures what the
        stage's visits deposited (``wl.stage_deposits``) instead of the visits. While a deep bin
        is a trap (``wl.trapped_bins``) the flatness is 0, ln f holds (so the trap fills) and the
        window does not converge."""
        cfg = self.cfg
        stage = est.hist if est.deposit_table is None else stage_deposits(est.hist, est.deposit_table)
        est.flatness = flatness(stage, est.visits, cfg.min_visit_fraction, est.ln_g, cfg.decide_depth)
        trapped = est.per_visit and math.isfinite(cfg.decide_depth) and bool(   # older runs keep their rule
            trapped_bins(est.hist, est.visits, est.ln_g, cfg.decide_depth, cfg.min_visit_fraction, cfg.flatness).any())
        if trapped:
            est.flatness = 0.0
        est.flatness_all, est.rare_fraction = visit_diagnostics(est.hist, est.visits, est.reach)
        if est.converged or trapped:
            return
        if self._reduce(est, est.time_per_bin(step)):
            est.hist.zero_()
            if not est.one_over_t:
                est.clock_start = float(est.visits.sum())
        if self._decaying(step) and est.ln_f <= cfg.ln_f_final:
            est.converged = True

    def _reduce(self, est: Estimate, time_per_bin: float) -> bool:
        """Lower ln f if the schedule's criterion holds; True when a new stage starts (the
        histogram is then reset)."""
        raise NotImplementedError

    def _decaying(self, step: int) -> bool:
        return True

    def progress(self, ln_f: float, converged: bool, step: int) -> float:
        """Fraction of the way from ln_f_initial to ln_f_final on a log scale, in [0, 1]."""
        if converged:
            return 1.0
        if not self._decaying(step):
            return 0.0
        span = math.log(self.cfg.ln_f_initial / self.cfg.ln_f_final)
        return min(1.0, max(0.0, math.log(self.cfg.ln_f_initial / ln_f) / span))


class Halving(Schedule):
    """ln f /= 2 whenever min H >= flatness x mean H over every visited bin."""

    def _reduce(self, est: Estimate, time_per_bin: float) -> bool:
        if est.flatness < self.cfg.flatness:
            return False
        est.ln_f /= 2.0
        est.stage += 1
        return True


class OneOverT(Schedule):
    """Belardinelli-Pereyra (2007) with many walkers: ln f /= 2 whenever the stage is flat, as in
    ``Halving`` (their "every bin seen again" is a one-walker criterion that hundreds of walkers
    meet at every check, whatever ln g), until ln f < 1/t; then ln f = 1/t, so the error keeps
    falling as t^-1/2 instead of saturating.

    t is walker visits per visited bin (``Estimate.time_per_bin``: the information all M walkers
    gathered, so 1/t falls M times faster with M walkers) counted from the start of the last
    halving stage, not of the run. Before a window's first flat stages its walkers explore and
    build the landscape; that takes a number of steps set by how fast each walker moves, not by
    how many there are, so with thousands of walkers those steps hold tens of thousands of visits
    per bin. Counted in t, they would hold ln f in the halving regime down to 1/t of the whole run
    (box n = 24 with 4,096 walkers: every window reached 1e-5 by halving alone, max error 0.14,
    where a 1/t stage would have averaged it to 0.05). The origin only ever raises 1/t, so the
    rule is never faster than Belardinelli and Pereyra's. Runs begun before schema 4 keep t =
    steps per visited bin since their start (their ln f is per step of all walkers)."""

    def _reduce(self, est: Estimate, time_per_bin: float) -> bool:
        if est.one_over_t:
            est.ln_f = min(est.ln_f, 1.0 / time_per_bin)
            return False
        if est.flatness < self.cfg.flatness:
            return False
        before = est.ln_f
        est.ln_f /= 2.0
        est.stage += 1
        if est.ln_f < 1.0 / time_per_bin:
            est.one_over_t = True
            est.ln_f = min(before, 1.0 / time_per_bin)   # ln f never grows
        return True


class Ramp(Schedule):
    """The reference study's MD schedule, a function of the step alone: a linear rise to
    ln_f_initial over ramp_steps, constant up to plateau_end, then
    ln_f_initial * decay_time / (step - plateau_end + decay_time). The histogram is never reset."""

    def before_step(self, est: Estimate, step: int) -> None:
        if not est.converged:
            est.ln_f = self.ln_f(step)

    def ln_f(self, step: int) -> float:
        cfg = self.cfg
        top = cfg.ln_f_initial
        if step < cfg.ramp_steps:
            return top * step / cfg.ramp_steps
        if step <= cfg.plateau_end:
            return top
        return top * cfg.decay_time / (step - cfg.plateau_end + cfg.decay_time)

    def _reduce(self, est: Estimate, time_per_bin: float) -> bool:
        return False

    def _decaying(self, step: int) -> bool:
        return step > self.cfg.plateau_end      # ln f starts at 0 on the ramp


def make_schedule(cfg: ScheduleConfig) -> Schedule:
    return {"halving": Halving, "1/t": OneOverT, "ramp": Ramp}[cfg.kind](cfg)
