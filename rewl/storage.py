"""Storage: the HDF5 run file and the per-rank checkpoints of a run directory.

Layout of a run directory::

    run.h5                          the run file (rank 0): deck, grid, per-window estimates, stats
    checkpoints/LATEST              text: the step of the last complete checkpoint set
    checkpoints/step_<step>/rank_<r>.h5   one per rank: walkers, move sizes, RNG states, estimate

Every file is written to a temporary name and renamed into place, so a reader (or a resume after
a crash) sees either the old or the new file, never a partial one. No pickle: arrays, numbers and
strings (RNG states of numpy as JSON text) only.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

SCHEMA_VERSION = 2
# version 2 added optional data (WLMD velocities, hard-accuracy sums); version 1 files read as before
READABLE_VERSIONS = (1, 2)
FORMAT = "rewl-run"


class StorageError(RuntimeError):
    """A run directory or file is missing, not a rewl run, or of an unknown schema."""


@dataclass
class WindowRecord:
    """One window's estimate as stored in the run file. Arrays are (n_xw, n_y)."""

    x_bins: tuple[int, int]        # [lo, hi) in the global x grid
    ln_g: np.ndarray
    hist: np.ndarray
    visits: np.ndarray
    ln_f: float
    stage: int
    one_over_t: bool
    converged: bool
    flatness: float
    init_iterations: int
    init_seconds: float
    accuracy_sum: np.ndarray | None = None   # (n_xw, n_y) hard test accuracy summed over visits
                                             # (wlmd with a smoothed accuracy as y); mean = sum / visits


@dataclass
class RunRecord:
    """Everything in run.h5."""

    deck_text: str
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
    x_edges: np.ndarray            # (n_x + 1,)
    y_edges: np.ndarray            # (n_y + 1,)
    windows: list[WindowRecord]
    group_names: list[str]
    move_attempted: np.ndarray     # (n_windows, n_groups); wlmd: (n_windows, 1) walker-steps
    move_accepted: np.ndarray      # (n_windows, n_groups); wlmd: walker-steps inside the window
    swap_attempted: np.ndarray     # (n_windows - 1,)
    swap_accepted: np.ndarray      # (n_windows - 1,)
    history_step: np.ndarray       # (T,) steps of the flatness checks
    history_ln_f: np.ndarray       # (T, n_windows)
    history_flatness: np.ndarray   # (T, n_windows)
    rewl_version: str = ""

    @property
    def n_windows(self) -> int:
        return len(self.windows)


@dataclass
class Checkpoint:
    """One rank's complete state at a synchronisation point."""

    step: int
    exchange_round: int
    params: np.ndarray             # (B, n_params)
    x: np.ndarray                  # (B,)
    y: np.ndarray                  # (B,)
    ix: np.ndarray                 # (B,)
    iy: np.ndarray                 # (B,)
    ln_g: np.ndarray               # (n_xw, n_y)
    hist: np.ndarray
    visits: np.ndarray
    ln_f: float
    stage: int
    one_over_t: bool
    converged: bool
    flatness: float
    sigma: np.ndarray              # (n_groups,); empty under wlmd
    move_attempted: np.ndarray     # (n_groups,) since the last adaptation; wlmd: (1,) walker-steps
    move_accepted: np.ndarray
    total_attempted: np.ndarray    # (n_groups,) up to the last adaptation
    total_accepted: np.ndarray
    swap_attempted: np.ndarray     # (n_windows - 1,)
    swap_accepted: np.ndarray
    torch_rng: np.ndarray          # uint8 state of the torch generator
    numpy_rng: str                 # JSON of the numpy bit generator state
    init_iterations: int
    init_seconds: float
    elapsed_seconds: float
    history_step: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    history_ln_f: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    history_flatness: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    velocities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))   # (B, n_params) under wlmd
    acc_sum: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))      # (n_xw, n_y) or empty


@dataclass
class BaselineRecord:
    """Trajectories of independent SGD/Adam trainings (``python -m rewl sgd``)."""

    deck_text: str
    deck_path: str
    task: str
    optimizer: str
    learning_rate: float
    batch_size: int
    x_label: str
    y_label: str
    step: np.ndarray               # (T,) training steps of the records
    x: np.ndarray                  # (runs, T) ln L_train
    y: np.ndarray                  # (runs, T) the landscape's y (test accuracy or ln L_test)
    accuracy: np.ndarray           # (runs, T) hard test accuracy (nan for tasks without classes)
    elapsed_seconds: float
    rewl_version: str = ""

    @property
    def runs(self) -> int:
        return self.x.shape[0]


def _atomic_h5(path: Path):
    """Context manager: an h5py File on a temporary name, renamed onto `path` on success."""
    class _Writer:
        def __enter__(self):
            self.tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            self.file = h5py.File(self.tmp, "w")
            return self.file

        def __exit__(self, exc_type, *_):
            self.file.close()
            if exc_type is not None:
                self.tmp.unlink(missing_ok=True)
                return False
            with open(self.tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp, path)
            return False
    return _Writer()


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _open_checked(path: Path, fmt: str, missing: str, wrong: str) -> h5py.File:
    """Open an HDF5 file of this schema for reading; StorageError naming the path otherwise."""
    if not path.exists():
        raise StorageError(f"{path}: {missing}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise StorageError(f"{path}: not an HDF5 file ({exc})") from None
    if f.attrs.get("format") != fmt:
        f.close()
        raise StorageError(f"{path}: {wrong}")
    version = int(f.attrs.get("schema_version", -1))
    if version not in READABLE_VERSIONS:
        f.close()
        raise StorageError(f"{path}: schema version {version}, this rewl reads "
                           f"{', '.join(map(str, READABLE_VERSIONS))}")
    return f


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class RunStore:
    """A run directory: paired write/read of the run file and of checkpoints."""

    RUN_FILE = "run.h5"
    CKPT_DIR = "checkpoints"

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    @property
    def run_path(self) -> Path:
        return self.dir / self.RUN_FILE

    @property
    def ckpt_dir(self) -> Path:
        return self.dir / self.CKPT_DIR

    # -- directory life cycle -------------------------------------------------------------------

    def problem_for_new_run(self, force: bool) -> str | None:
        """Why a new run may not start here (None if it may)."""
        if force or not self.dir.exists():
            return None
        if self.run_path.exists() or self.ckpt_dir.exists():
            return (f"output directory {self.dir} already holds a run; pass --force to overwrite it "
                    "or --resume to continue it")
        return None

    def prepare_new(self) -> None:
        """Create the directory; remove a previous run's files (only ours) when present."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_path.unlink(missing_ok=True)
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)
        self.ckpt_dir.mkdir()

    # -- run file -------------------------------------------------------------------------------

    def write_run(self, rec: RunRecord) -> None:
        with _atomic_h5(self.run_path) as f:
            f.attrs["format"] = FORMAT
            f.attrs["schema_version"] = SCHEMA_VERSION
            for name in ("status", "task", "sampler", "x_label", "y_label", "n_params", "ranks_per_window",
                         "walkers_per_rank", "steps", "max_steps", "elapsed_seconds", "deck_path", "rewl_version"):
                f.attrs[name] = getattr(rec, name)
            f.attrs["n_windows"] = rec.n_windows
            f.create_dataset("deck", data=rec.deck_text)
            f.create_dataset("grid/x_edges", data=rec.x_edges)
            f.create_dataset("grid/y_edges", data=rec.y_edges)
            for k, w in enumerate(rec.windows):
                g = f.create_group(f"windows/{k:03d}")
                for name in ("ln_g", "hist", "visits", "accuracy_sum"):
                    if getattr(w, name) is not None:
                        g.create_dataset(name, data=getattr(w, name), compression="gzip", compression_opts=1)
                g.attrs["x_bins"] = np.asarray(w.x_bins, dtype=np.int64)
                for name in ("ln_f", "stage", "one_over_t", "converged", "flatness", "init_iterations", "init_seconds"):
                    g.attrs[name] = getattr(w, name)
            acc = f.create_group("acceptance")
            acc.attrs["group_names"] = json.dumps(rec.group_names)
            for name in ("move_attempted", "move_accepted", "swap_attempted", "swap_accepted"):
                acc.create_dataset(name, data=getattr(rec, name))
            hist = f.create_group("history")
            hist.create_dataset("step", data=rec.history_step)
            hist.create_dataset("ln_f", data=rec.history_ln_f)
            hist.create_dataset("flatness", data=rec.history_flatness)

    def read_run(self) -> RunRecord:
        f = _open_checked(self.run_path, FORMAT, f"no run file (is {self.dir} a rewl run directory?)",
                          "not a rewl run file")
        with f:
            a = {k: _scalar(v) for k, v in f.attrs.items()}
            windows = []
            for k in range(int(a["n_windows"])):
                g = f[f"windows/{k:03d}"]
                windows.append(WindowRecord(
                    x_bins=tuple(int(v) for v in g.attrs["x_bins"]),
                    ln_g=g["ln_g"][()], hist=g["hist"][()], visits=g["visits"][()],
                    accuracy_sum=g["accuracy_sum"][()] if "accuracy_sum" in g else None,
                    ln_f=float(g.attrs["ln_f"]), stage=int(g.attrs["stage"]),
                    one_over_t=bool(g.attrs["one_over_t"]), converged=bool(g.attrs["converged"]),
                    flatness=float(g.attrs["flatness"]), init_iterations=int(g.attrs["init_iterations"]),
                    init_seconds=float(g.attrs["init_seconds"])))
            acc = f["acceptance"]
            return RunRecord(
                deck_text=f["deck"][()].decode(), deck_path=str(a["deck_path"]), status=str(a["status"]),
                task=str(a["task"]), sampler=str(a["sampler"]), x_label=str(a["x_label"]), y_label=str(a["y_label"]),
                n_params=int(a["n_params"]), ranks_per_window=int(a["ranks_per_window"]),
                walkers_per_rank=int(a["walkers_per_rank"]), steps=int(a["steps"]), max_steps=int(a["max_steps"]),
                elapsed_seconds=float(a["elapsed_seconds"]), rewl_version=str(a["rewl_version"]),
                x_edges=f["grid/x_edges"][()], y_edges=f["grid/y_edges"][()], windows=windows,
                group_names=json.loads(acc.attrs["group_names"]),
                move_attempted=acc["move_attempted"][()], move_accepted=acc["move_accepted"][()],
                swap_attempted=acc["swap_attempted"][()], swap_accepted=acc["swap_accepted"][()],
                history_step=f["history/step"][()], history_ln_f=f["history/ln_f"][()],
                history_flatness=f["history/flatness"][()])

    # -- SGD baselines -------------------------------------------------------------------------

    BASELINE_FILE = "baseline.h5"

    @property
    def baseline_path(self) -> Path:
        return self.dir / self.BASELINE_FILE

    def write_baseline(self, rec: BaselineRecord, path: str | Path | None = None) -> Path:
        path = Path(path) if path else self.baseline_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with _atomic_h5(path) as f:
            f.attrs["format"] = FORMAT + "-baseline"
            f.attrs["schema_version"] = SCHEMA_VERSION
            for name in ("deck_path", "task", "optimizer", "learning_rate", "batch_size", "x_label", "y_label",
                         "elapsed_seconds", "rewl_version"):
                f.attrs[name] = getattr(rec, name)
            f.create_dataset("deck", data=rec.deck_text)
            for name in ("step", "x", "y", "accuracy"):
                f.create_dataset(name, data=getattr(rec, name))
        return path

    @staticmethod
    def read_baseline(path: str | Path) -> BaselineRecord:
        f = _open_checked(Path(path), FORMAT + "-baseline", "no such baseline file",
                          "not a rewl SGD baseline file (made by `python -m rewl sgd`)")
        with f:
            a = {k: _scalar(v) for k, v in f.attrs.items()}
            return BaselineRecord(
                deck_text=f["deck"][()].decode(), deck_path=str(a["deck_path"]), task=str(a["task"]),
                optimizer=str(a["optimizer"]), learning_rate=float(a["learning_rate"]),
                batch_size=int(a["batch_size"]), x_label=str(a["x_label"]), y_label=str(a["y_label"]),
                step=f["step"][()], x=f["x"][()], y=f["y"][()], accuracy=f["accuracy"][()],
                elapsed_seconds=float(a["elapsed_seconds"]),
                rewl_version=str(a["rewl_version"]))

    # -- checkpoints ----------------------------------------------------------------------------

    def _ckpt_path(self, step: int, rank: int) -> Path:
        return self.ckpt_dir / f"step_{step:012d}" / f"rank_{rank:05d}.h5"

    def write_checkpoint(self, rank: int, ck: Checkpoint) -> None:
        path = self._ckpt_path(ck.step, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _atomic_h5(path) as f:
            f.attrs["format"] = FORMAT + "-checkpoint"
            f.attrs["schema_version"] = SCHEMA_VERSION
            for fld in fields(Checkpoint):
                value = getattr(ck, fld.name)
                if isinstance(value, np.ndarray):
                    f.create_dataset(fld.name, data=value)
                else:
                    f.attrs[fld.name] = value

    def read_checkpoint(self, step: int, rank: int) -> Checkpoint:
        f = _open_checked(self._ckpt_path(step, rank), FORMAT + "-checkpoint",
                          "checkpoint missing (was the run made with another number of ranks?)",
                          "not a rewl checkpoint")
        with f:
            values = {}
            for fld in fields(Checkpoint):
                if fld.name in f:
                    values[fld.name] = f[fld.name][()]
                elif fld.name in f.attrs:
                    values[fld.name] = _scalar(f.attrs[fld.name])
                elif fld.default_factory is MISSING:   # optional fields of later schema versions
                    raise StorageError(f"{self._ckpt_path(step, rank)}: no {fld.name!r}")
        return Checkpoint(**values)

    def mark_complete(self, step: int) -> None:
        """Record `step` as the last complete checkpoint set and drop older sets."""
        _write_text_atomic(self.ckpt_dir / "LATEST", f"{step}\n")
        for old in self.ckpt_dir.glob("step_*"):
            if old.name != f"step_{step:012d}":
                shutil.rmtree(old, ignore_errors=True)

    def latest_step(self) -> int:
        marker = self.ckpt_dir / "LATEST"
        if not marker.exists():
            raise StorageError(f"{self.dir}: no complete checkpoint to resume from ({marker} missing)")
        return int(marker.read_text().strip())
