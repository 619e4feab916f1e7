"""The status every rank shares with every other at each synchronisation point.

Stop decisions are taken from the gathered statuses, the same on every rank, so they are
collective and deterministic; the progress line and the run file read them too.
"""
from __future__ import annotations

from dataclasses import astuple, dataclass, fields

import numpy as np


@dataclass(frozen=True)
class RankStatus:
    """One rank's state at a synchronisation point."""

    window: int
    ln_f: float
    flatness: float
    converged: bool
    stop: bool                   # a stop signal arrived on this rank
    stage: int
    one_over_t: bool
    clock_start: float           # visits where 1/t's clock starts (``Estimate.clock_start``)
    move_attempted: float        # run totals over the sampler's counters
    move_accepted: float
    kinetic_t: float             # <v^2> of the walkers (wlmd), nan otherwise
    swap_attempted: float        # with the window above (0 for the top window)
    swap_accepted: float
    init_iterations: int
    init_seconds: float
    flatness_all: float          # over every visited bin
    rare_fraction: float         # visited bins with visits below 10 % of the median
    ln_g_change: float           # since the previous checkpoint, after its constant
    round_trips: float           # completed round trips of this rank's walkers
    wall_strength: float         # c of the soft walls (wlmd), nan otherwise
    step_size: float             # hmc: the leapfrog step eps (units of each weight's spread), nan otherwise
    leapfrog_steps: int          # hmc: leapfrog steps per trajectory, 0 otherwise
    settled: bool                # the window's estimate stopped moving at the last checkpoint
    recent_flatness: float       # over the last checkpoint interval (``Estimate.mark_checkpoint``)
    recent_crossings: float      # of the window's least crossed x edge, over the last checkpoint interval

    def to_array(self) -> np.ndarray:
        """(n_fields,) float64, for one allgather."""
        return np.array(astuple(self), dtype=np.float64)

    @classmethod
    def from_array(cls, row: np.ndarray) -> RankStatus:
        return cls(*(cast(v) for cast, v in zip(_CASTS, row)))


# field types are the annotation strings (postponed annotations): int, bool or float
_CASTS = [{"int": int, "bool": bool, "float": float}[f.type] for f in fields(RankStatus)]
