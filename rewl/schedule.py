"""The ln f schedule: when and how the Wang-Landau modification factor falls.

One object per run (``make_schedule``), shared by nothing but the estimate it is handed. The
engine calls ``before_step`` before every step (the ramp sets ln f there), ``check`` at every
flatness check (every ``[schedule] check_interval`` steps), and ``end_stretch`` then ``settle``
at every scheduled checkpoint. A window is *settled* when ln f has come down to ``ln_f_final``
and its estimate stopped moving (``settle``); the run converged when every window is settled at
one checkpoint and the windows join (``Engine.conclude``); until then ln f follows the schedule
further down.

To add a schedule: subclass ``Schedule``, override ``_reduce`` (and ``before_step`` when ln f is
a function of the step), add its name to ``config.SCHEDULES`` and to ``make_schedule``.
"""
from __future__ import annotations

import math

from .config import ScheduleConfig
from .wl import Estimate, flatness, trapped_bins, visit_diagnostics

# Crossings of every x edge of a window a checkpoint interval must hold for the window to settle:
# the ratio of the visits on the two sides of an edge, which the flatness test reads, is known to
# about 1 / sqrt(crossings) when they are independent, 0.1 here.
MIN_CROSSINGS = 100


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
        estimate). While a deep bin
        is a trap (``wl.trapped_bins``) the flatness is 0 and ln f holds (so the trap fills)."""
        cfg = self.cfg
        est.flatness = flatness(est.hist, est.visits, est.ln_g, cfg.decide_depth)
        trapped = self._trapped(est)
        if trapped:
            est.flatness = 0.0
        est.flatness_all, est.rare_fraction = visit_diagnostics(est.hist, est.visits, est.reach)
        if est.converged or trapped:
            return
        self._advance(est, step)

    def end_stretch(self, est: Estimate, step: int) -> bool:
        """At a scheduled checkpoint (``Estimate.mark_checkpoint`` just measured): a halving stage
        whose histogram is not yet flat ends all the same when the stretch since the previous
        checkpoint was flat within `flatness` and walkers crossed every x edge of the window at
        least MIN_CROSSINGS times, the evidence ``settle`` asks for. The stage histogram still
        holds what the walkers visited while ln g was far from right (the first stage: the fill),
        which keeps its min H low long after the walkers' visits have become flat: the spiral's
        lowest window by WLMD (64 walkers) stayed in its first stage until step 26,000 while its
        stretches were flat to 0.91 and more from step 15,000. True when a new stage began (the
        histogram is then reset); runs of before schema 4 keep their rule."""
        cfg = self.cfg
        if (est.converged or est.one_over_t or not est.per_visit or est.flatness >= cfg.flatness
                or not (est.recent_flatness >= cfg.flatness and est.recent_crossings >= MIN_CROSSINGS)
                or self._trapped(est)):
            return False
        stage_flatness, est.flatness = est.flatness, est.recent_flatness
        if self._advance(est, step):
            return True
        est.flatness = stage_flatness      # a schedule that does not halve (the ramp)
        return False

    def _trapped(self, est: Estimate) -> bool:
        """A deep bin is a trap (``wl.trapped_bins``): ln f holds until it fills."""
        depth = self.cfg.decide_depth
        return est.per_visit and math.isfinite(depth) and bool(   # older runs keep their rule
            trapped_bins(est.hist, est.visits, est.ln_g, depth, self.cfg.flatness).any())

    def _advance(self, est: Estimate, step: int) -> bool:
        """Lower ln f if the schedule's criterion holds (``_reduce``), resetting the histogram
        when a new stage starts; True then."""
        if not self._reduce(est, est.time_per_bin(step)):
            return False
        est.hist.zero_()
        if not est.one_over_t:
            est.clock_start = float(est.visits.sum())
        return True

    def at_end(self, est: Estimate, step: int) -> bool:
        """ln f has come down to ln_f_final (the ramp: after its plateau)."""
        return self._decaying(step) and est.ln_f <= self.cfg.ln_f_final

    def settle(self, est: Estimate, step: int) -> None:
        """At a scheduled checkpoint (``Estimate.mark_checkpoint`` just measured): the window is
        settled when ln f came down to ln_f_final, its ln g moved by at most `tolerance` after its
        constant since the previous checkpoint, and over the stretch since its reference
        checkpoint (the previous one, or once ln f is at ln_f_final the first one after) its visits
        were flat within `flatness` (min H / mean H and mean H / max H) and walkers crossed every x
        edge of the window at least MIN_CROSSINGS times.

        The crossings are what make the flatness mean something: walkers that stay where they
        started keep a histogram flat whether or not ln g weighs the bins on either side of an edge
        right (the spiral's ramp runs at 38,000 steps: ln f at its end, S wrong by 10 units at the
        plateau's edge, where single-parameter moves seldom cross). The stretch grows until it
        holds the statistics: judged over one checkpoint interval at a time, box_quadratic's
        windows each passed and failed by turns for 500,000 steps (flatness about 0.8 in the lowest
        window, about 90 crossings per 5,000 steps at the top), never all at once. The change of
        ln g is not judged over the stretch: a 1/t estimate still correcting the error it had when
        the stretch began moves by that much, however right it is by now. A window frozen by an
        earlier rule (runs of before this rule) counts as settled."""
        cfg = self.cfg
        est.settled = est.converged or (
            self.at_end(est, step) and est.ln_g_change <= cfg.tolerance and est.recent_flatness >= cfg.flatness
            and est.recent_crossings >= MIN_CROSSINGS)

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
