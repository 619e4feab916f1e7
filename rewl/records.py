"""Records: what a run stores, as plain dataclasses of numpy arrays, numbers and strings.

One record per stored thing, one name per quantity. ``storage.RunStore`` maps every record to
HDF5 and back with one codec: arrays become datasets, numbers and strings attributes, nested
records and lists of records groups, ``None`` is left out. A field's ``h5`` metadata gives its
path when it differs from the field name (the run-file layout of schema 1 and 2 is kept).
"""
from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field
from typing import Any

import numpy as np


def at(path: str, **meta: Any) -> Any:
    """A field stored at HDF5 path `path` (relative to the record's group)."""
    return field(metadata={"h5": path, **meta})


def compressed(default: Any = MISSING) -> Any:
    """An array field stored gzip-compressed (estimate arrays: mostly smooth, worth it)."""
    return field(default=default, metadata={"compress": True})


OFFSET_ARRAYS = ("offset_x_sum", "offset_y_sum", "offset_x_sq_sum", "offset_y_sq_sum")


def offset_moments(holder: Any) -> tuple[Any, ...] | None:
    """(sum u_x, sum u_y, sum u_x^2, sum u_y^2) over each bin's visits, u the walkers' offsets
    inside their bins (``wl.reach_fraction``), from an estimate or its record; None without them."""
    moments = tuple(getattr(holder, name) for name in OFFSET_ARRAYS)
    return None if any(m is None for m in moments) else moments


@dataclass(kw_only=True)
class EstimateRecord:
    """A window's entropy estimate and its schedule state. Arrays are (n_x, n_y) float64 (n_y = 1
    when y is recorded; y_hist is then (n_x, the grid's y bins))."""

    ln_g: np.ndarray = compressed()
    hist: np.ndarray = compressed()           # visits in the current stage of the schedule
    visits: np.ndarray = compressed()         # visits over the whole run
    ln_f: float
    stage: int                                # completed reductions of ln f
    one_over_t: bool
    converged: bool
    flatness: float                           # at the last flatness check
    per_visit: bool = False                   # ln f per walker visit (schema 4); absent: per step of all
                                              # M walkers, ln f / M per visit (runs begun before schema 4)
    clock_start: float = 0.0                  # visits when the current stage (1/t: the stage before it) began
    accuracy_sum: np.ndarray | None = compressed(None)   # hard test accuracy summed over visits (wlmd with a
                                                     # smoothed accuracy as y); mean = accuracy_sum / visits
    # wlmd: the walkers' positions inside their bins, summed over visits (``wl.reach_fraction``;
    # None in runs begun before they were kept)
    offset_x_sum: np.ndarray | None = compressed(None)   # of u = (x - bin's lower x edge) / bin width, in [0, 1)
    offset_y_sum: np.ndarray | None = compressed(None)
    offset_x_sq_sum: np.ndarray | None = compressed(None)   # of u^2
    offset_y_sq_sum: np.ndarray | None = compressed(None)
    # diagnostics (nan in files of schemas 1 and 2, which lack them)
    flatness_all: float = float("nan")        # min H / mean H over every visited bin
    rare_fraction: float = float("nan")       # visited bins with visits below 10 % of the median
    ln_g_change: float = float("nan")         # max |change of ln g| since the previous checkpoint, after its constant
    ln_g_checkpoint: np.ndarray | None = compressed(None)   # ln g at the previous checkpoint (checkpoints only)
    y_hist: np.ndarray | None = compressed(None)   # (n_x, n_y of the grid) y recorded: visits per y bin
    edge_crossings: np.ndarray | None = None  # (n_x - 1,) walker moves across each x edge over the run
    # over the last checkpoint interval (``Estimate.mark_checkpoint``; older files: not settled, nan)
    settled: bool = False                     # the window's estimate stopped moving (``Schedule.settle``)
    recent_flatness: float = float("nan")     # flatness of the interval's visits
    recent_crossings: float = float("nan")    # crossings of the window's least crossed x edge in it
    visits_checkpoint: np.ndarray | None = compressed(None)   # visits at the previous checkpoint (checkpoints only)
    crossings_checkpoint: np.ndarray | None = None            # edge_crossings then (checkpoints only)

    def offset_moments(self) -> tuple[np.ndarray, ...] | None:
        return offset_moments(self)


@dataclass(kw_only=True)
class WindowRecord(EstimateRecord):
    """One window's estimate as stored in the run file."""

    x_bins: tuple[int, int]                   # [lo, hi) in the global x grid
    init_iterations: int                      # gradient iterations of the drive into the window
    init_seconds: float
    wall_strength: float = float("nan")       # wlmd: c of the soft walls then (its first rank's; nan: wlmc, older files)
    step_size: float = float("nan")           # hmc: the leapfrog step eps then (its first rank's; nan: others)
    leapfrog_steps: int = 0                   # hmc: leapfrog steps per trajectory then (0: others)


@dataclass(kw_only=True)
class WalkersRecord:
    """One rank's walkers: parameters and their CVs and local bins."""

    params: np.ndarray                        # (B, n_params)
    x: np.ndarray                             # (B,) float64
    y: np.ndarray                             # (B,) float64
    ix: np.ndarray                            # (B,) local x bin
    iy: np.ndarray                            # (B,)
    velocities: np.ndarray | None = None      # (B, n_params) under wlmd
    trip_state: np.ndarray | None = None      # (B,) 0, or the end window last reached: 1 lowest, 2 highest
    round_trips: np.ndarray | None = None     # (B,) completed lowest -> highest -> lowest trips


@dataclass(kw_only=True)
class History:
    """Rank 0's record of the flatness checks."""

    step: np.ndarray                          # (T,) steps of the checks
    ln_f: np.ndarray                          # (T, n_windows)
    flatness: np.ndarray                      # (T, n_windows) the schedule's criterion
    flatness_all: np.ndarray | None = None    # (T, n_windows) over every visited bin (None in older files)
    rare_fraction: np.ndarray | None = None   # (T, n_windows)
    round_trips: np.ndarray | None = None     # (T,) completed round trips of all walkers

    @classmethod
    def empty(cls, n_windows: int) -> History:
        z = lambda: np.zeros((0, n_windows))  # noqa: E731
        return cls(step=np.zeros(0, dtype=np.int64), ln_f=z(), flatness=z(), flatness_all=z(), rare_fraction=z(),
                   round_trips=np.zeros(0))


@dataclass(kw_only=True)
class RunRecord:
    """Everything in run.h5."""

    deck_text: str = at("deck", dataset=True)
    deck_path: str
    status: str
    task: str
    sampler: str
    x_label: str
    y_label: str
    n_params: int
    ranks_per_window: int
    walkers_per_rank: int
    steps: int
    max_steps: int
    elapsed_seconds: float
    x_edges: np.ndarray = at("grid/x_edges")            # (n_x + 1,)
    y_edges: np.ndarray = at("grid/y_edges")            # (n_y + 1,)
    windows: list[WindowRecord]
    group_names: list[str] = at("acceptance/group_names")
    move_attempted: np.ndarray = at("acceptance/move_attempted")  # (n_windows, n_groups) run totals;
    move_accepted: np.ndarray = at("acceptance/move_accepted")    # wlmd: walker-steps, and those inside
    swap_attempted: np.ndarray = at("acceptance/swap_attempted")  # (n_windows - 1,)
    swap_accepted: np.ndarray = at("acceptance/swap_accepted")
    history: History
    rewl_version: str = ""
    deck_overrides: str = "[]"                # JSON list of the run's `--set TABLE.KEY=VALUE`
    round_trips: float = float("nan")         # walkers' round trips between the lowest and the highest window
                                              # (nan: one window, or a file that did not record them)
    y_mode: str = "flattened"                 # "recorded": windows' ln g is (n_x, 1) and y_hist holds P(y | x)
                                              # ("flattened" in files written before y could be recorded)

    @property
    def y_recorded(self) -> bool:
        return self.y_mode == "recorded"

    @property
    def overrides(self) -> tuple[str, ...]:
        """The `--set` overrides the run was started with (parse the deck with them)."""
        return tuple(json.loads(self.deck_overrides))

    @property
    def n_windows(self) -> int:
        return len(self.windows)


@dataclass(kw_only=True)
class Checkpoint:
    """One rank's complete state at a synchronisation point."""

    step: int
    exchange_round: int
    walkers: WalkersRecord
    estimate: EstimateRecord
    sampler: dict[str, np.ndarray]            # the sampler's own state (``Sampler.state``)
    swap_attempted: np.ndarray                # (n_windows - 1,)
    swap_accepted: np.ndarray
    torch_rng: np.ndarray                     # uint8 state of the torch generator
    numpy_rng: str                            # JSON of the numpy bit generator state
    init_iterations: int
    init_seconds: float
    elapsed_seconds: float
    history: History                          # rank 0's; empty on the other ranks


@dataclass(kw_only=True)
class BaselineRecord:
    """Trajectories of independent SGD/Adam trainings (``rewl sgd``)."""

    deck_text: str = at("deck", dataset=True)
    deck_path: str
    task: str
    optimizer: str
    learning_rate: float
    batch_size: int
    x_label: str
    y_label: str
    step: np.ndarray                          # (T,) training steps of the records
    x: np.ndarray                             # (runs, T) ln L_train
    y: np.ndarray                             # (runs, T) the landscape's y (test accuracy or ln L_test)
    accuracy: np.ndarray                      # (runs, T) hard test accuracy (nan for tasks without classes)
    elapsed_seconds: float
    rewl_version: str = ""

    @property
    def runs(self) -> int:
        return self.x.shape[0]
