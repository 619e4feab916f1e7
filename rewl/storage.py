"""Storage: the HDF5 run file and the per-rank checkpoints of a run directory.

Layout of a run directory::

    run.h5                          the run file (rank 0): deck, grid, per-window estimates, stats
    checkpoints/LATEST              text: the step of the last complete checkpoint set
    checkpoints/PREVIOUS            text: the step of the complete set before it (kept for a resume
                                    when a file of the latest is damaged)
    checkpoints/step_<step>/rank_<r>.h5   one per rank: walkers, move sizes, RNG states, estimate
    run.log                         text: each start, resume and end, and any failure with its traceback

Every file is written to a temporary name and renamed into place, so a reader (or a resume after
a crash) sees either the old or the new file, never a partial one. No pickle: arrays, numbers and
strings (RNG states of numpy as JSON text) only.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
import types
import typing
from dataclasses import MISSING as dataclasses_missing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import UserError
from .records import BaselineRecord, Checkpoint, EstimateRecord, History, RunRecord, WalkersRecord, WindowRecord

__all__ = ["BaselineRecord", "Checkpoint", "EstimateRecord", "History", "RunRecord", "RunStore", "StorageError",
           "WalkersRecord", "WindowRecord", "SCHEMA_VERSION"]

SCHEMA_VERSION = 4
# 2 added optional data (WLMD velocities, hard-accuracy sums); 3 nested the checkpoint (walkers/,
# estimate/, sampler/, history/) and added the convergence diagnostics. Run files of 1 and 2 have
# the layout of 3 (their diagnostics read as nan); their checkpoints are read by ``_legacy_checkpoint``.
# 4 counts ln f per walker visit (estimate attributes per_visit, clock_start); older runs read as
# per_visit = false and resume with ln f per step of all walkers.
READABLE_VERSIONS = (1, 2, 3, 4)
FORMAT = "rewl-run"


class StorageError(UserError, RuntimeError):
    """A run directory or file is missing, not a rewl run, or of an unknown schema."""


def _atomic_h5(path: Path):
    """Context manager: an h5py File built in memory, then written to a temporary name and
    renamed onto `path`. The HDF5 library never writes the disk itself: a full disk met by its
    own writes surfaced (measured) as errors swallowed in h5py's destructors, a silently truncated
    file and a crashed process, where plain file writes raise one OSError. On any failure the
    temporary file is removed and `path` keeps what it had."""
    class _Writer:
        def __enter__(self):
            self.file = h5py.File(path.name, "w", driver="core", backing_store=False)
            return self.file

        def __exit__(self, exc_type, *_):
            try:
                if exc_type is None:
                    self.file.flush()
                    _write_bytes_atomic(path, self.file.id.get_file_image())
            finally:
                self.file.close()
            return False
    return _Writer()


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """`data` into `path` through a temporary file, flushed to the disk, renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)      # gone already after a successful replace


def _write_text_atomic(path: Path, text: str) -> None:
    _write_bytes_atomic(path, text.encode())


def _stamp(f: h5py.File, fmt: str) -> None:
    f.attrs["format"] = fmt
    f.attrs["schema_version"] = SCHEMA_VERSION


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


# ----------------------------------------------------------------------------------------------
# the codec: one mapping of records to HDF5 groups and back


def _split(group: h5py.Group, path: str, create: bool) -> tuple[h5py.Group | None, str]:
    """The group holding `path` (relative to `group`) and the last name of the path."""
    parent, _, leaf = path.rpartition("/")
    if not parent:
        return group, leaf
    if create:
        return group.require_group(parent), leaf
    return (group[parent] if parent in group else None), leaf


def encode(group: h5py.Group, rec: Any) -> None:
    """Write the dataclass record `rec` into `group`: arrays as datasets, numbers and short strings
    as attributes, nested records, lists of records and dicts of arrays as subgroups; None is left
    out."""
    for f in fields(rec):
        value = getattr(rec, f.name)
        if value is None:
            continue
        parent, leaf = _split(group, f.metadata.get("h5", f.name), create=True)
        if is_dataclass(value):
            encode(parent.create_group(leaf), value)
        elif isinstance(value, dict):
            sub = parent.create_group(leaf)
            for name, array in value.items():
                sub.create_dataset(name, data=array)
        elif isinstance(value, list) and value and is_dataclass(value[0]):
            sub = parent.create_group(leaf)
            for k, item in enumerate(value):
                encode(sub.create_group(f"{k:03d}"), item)
        elif isinstance(value, list):
            parent.attrs[leaf] = json.dumps(value)
        elif isinstance(value, np.ndarray):
            extra = {"compression": "gzip", "compression_opts": 1} if f.metadata.get("compress") else {}
            parent.create_dataset(leaf, data=value, **extra)
        elif f.metadata.get("dataset"):
            parent.create_dataset(leaf, data=value)
        elif isinstance(value, tuple):
            parent.attrs[leaf] = np.asarray(value, dtype=np.int64)
        else:
            parent.attrs[leaf] = value


def _optional(hint: Any) -> tuple[Any, bool]:
    """(T, True) for a hint `T | None`, else (hint, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def decode(group: h5py.Group, cls: type) -> Any:
    """Read a record of type `cls` from `group` (the inverse of ``encode``); StorageError naming
    the file and the missing entry when a field without a default is absent."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        hint, optional = _optional(hints[f.name])
        parent, leaf = _split(group, f.metadata.get("h5", f.name), create=False)
        origin = typing.get_origin(hint)
        present = parent is not None and (leaf in parent or leaf in parent.attrs)
        if not present:
            if optional or f.default is not dataclasses_missing:
                continue
            raise StorageError(f"{group.file.filename}: no {group.name.rstrip('/')}/{leaf}")
        if is_dataclass(hint):
            values[f.name] = decode(parent[leaf], hint)
        elif origin is dict:
            values[f.name] = {name: parent[leaf][name][()] for name in parent[leaf]}
        elif origin is list and is_dataclass(typing.get_args(hint)[0]):
            sub = parent[leaf]
            values[f.name] = [decode(sub[name], typing.get_args(hint)[0]) for name in sorted(sub)]
        elif origin is list:
            values[f.name] = json.loads(parent.attrs[leaf])
        elif hint is np.ndarray:
            values[f.name] = parent[leaf][()]
        elif leaf in parent:                       # a string stored as a dataset
            values[f.name] = parent[leaf][()].decode()
        elif origin is tuple:
            values[f.name] = tuple(int(v) for v in parent.attrs[leaf])
        else:
            values[f.name] = hint(_scalar(parent.attrs[leaf]))
    return cls(**values)


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _legacy_checkpoint(f: h5py.File) -> Checkpoint:
    """A checkpoint of schema 1 or 2: one flat group. Its move counters meant "since the last
    adaptation" (move_*) plus "up to it" (total_*) under wlmc, and walker-steps and those inside
    the window under wlmd; they become the sampler state of schema 3."""
    a = {k: _scalar(v) for k, v in f.attrs.items()}
    d = {k: f[k][()] for k in f}
    velocities = d.get("velocities")
    accuracy = d.get("acc_sum")
    walkers = WalkersRecord(params=d["params"], x=d["x"], y=d["y"], ix=d["ix"], iy=d["iy"],
                            velocities=velocities if velocities is not None and velocities.size else None)
    estimate = EstimateRecord(ln_g=d["ln_g"], hist=d["hist"], visits=d["visits"], ln_f=float(a["ln_f"]),
                              stage=int(a["stage"]), one_over_t=bool(a["one_over_t"]),
                              converged=bool(a["converged"]), flatness=float(a["flatness"]),
                              accuracy_sum=accuracy if accuracy is not None and accuracy.size else None)
    if d["sigma"].size:
        sampler = {"sigma": d["sigma"], "attempted_since_adapt": d["move_attempted"],
                   "accepted_since_adapt": d["move_accepted"], "attempted_until_adapt": d["total_attempted"],
                   "accepted_until_adapt": d["total_accepted"]}
    else:
        sampler = {"steps": d["move_attempted"], "inside": d["move_accepted"]}
    return Checkpoint(step=int(a["step"]), exchange_round=int(a["exchange_round"]), walkers=walkers,
                      estimate=estimate, sampler=sampler, swap_attempted=d["swap_attempted"],
                      swap_accepted=d["swap_accepted"], torch_rng=d["torch_rng"], numpy_rng=str(a["numpy_rng"]),
                      init_iterations=int(a["init_iterations"]), init_seconds=float(a["init_seconds"]),
                      elapsed_seconds=float(a["elapsed_seconds"]),
                      history=History(step=d["history_step"], ln_f=d["history_ln_f"],
                                      flatness=d["history_flatness"]))


class RunStore:
    """A run directory: paired write/read of the run file and of checkpoints."""

    RUN_FILE = "run.h5"
    CKPT_DIR = "checkpoints"
    LOG_FILE = "run.log"         # plain text, appended: starts, ends and failures, with their time
    LOCK_FILE = ".lock"          # held (flock) by the writing run's rank 0 while it lives

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self._lock_fd: int | None = None

    @property
    def run_path(self) -> Path:
        return self.dir / self.RUN_FILE

    @property
    def ckpt_dir(self) -> Path:
        return self.dir / self.CKPT_DIR

    @property
    def log_path(self) -> Path:
        return self.dir / self.LOG_FILE

    LOG_KINDS = ("start", "end", "failed")

    def log(self, kind: str, text: str) -> None:
        """Append `text` to the run's log, each line stamped with the time, the host and `kind`
        (one of LOG_KINDS); best effort (a full disk must not hide the error being logged), one
        write so that ranks do not interleave."""
        assert kind in self.LOG_KINDS, kind
        stamp = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {socket.gethostname()} {kind}"
        lines = "".join(f"{stamp} {line}\n" for line in text.rstrip("\n").splitlines())
        try:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, lines.encode())
            finally:
                os.close(fd)
        except OSError:
            pass

    # -- directory life cycle -------------------------------------------------------------------

    def problem_for_new_run(self, force: bool) -> str | None:
        """Why a new run may not start here (None if it may)."""
        if force or not self.dir.exists():
            return None
        if self.run_path.exists() or self.ckpt_dir.exists():
            return (f"output directory {self.dir} already holds a run; pass --force to overwrite it "
                    "or --resume to continue it")
        return None

    def lock(self) -> str | None:
        """Take the directory's writer lock, an exclusive flock on LOCK_FILE that the kernel drops
        when this process ends, however it ends. Returns why not when another live process holds
        it (its pid and host are in the file), else None. Two runs writing one directory would
        mix their files: a second `run --force` or `--resume` started while the first still
        writes (for example its stop checkpoint) is refused. On a filesystem without flock the
        run goes on unlocked."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / self.LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            return (f"output directory {self.dir} is being written by another rewl run (process {holder}); "
                    "wait for it to end, or stop it, before running here again")
        except OSError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} on {socket.gethostname()}".encode())
        self._lock_fd = fd
        return None

    def unlock(self) -> None:
        """Release the writer lock (if this store holds it)."""
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def prepare_new(self) -> None:
        """Create the directory; remove a previous run's files (only ours) when present."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_path.unlink(missing_ok=True)
        self.log_path.unlink(missing_ok=True)
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)
        self.ckpt_dir.mkdir()

    # -- run file -------------------------------------------------------------------------------

    def write_run(self, rec: RunRecord) -> None:
        with _atomic_h5(self.run_path) as f:
            _stamp(f, FORMAT)
            encode(f, rec)

    def read_run(self) -> RunRecord:
        f = _open_checked(self.run_path, FORMAT, f"no run file (is {self.dir} a rewl run directory?)",
                          "not a rewl run file")
        with f:
            return decode(f, RunRecord)

    # -- SGD baselines -------------------------------------------------------------------------

    BASELINE_FILE = "baseline.h5"

    @property
    def baseline_path(self) -> Path:
        return self.dir / self.BASELINE_FILE

    def write_baseline(self, rec: BaselineRecord, path: str | Path | None = None) -> Path:
        path = Path(path) if path else self.baseline_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with _atomic_h5(path) as f:
            _stamp(f, FORMAT + "-baseline")
            encode(f, rec)
        return path

    @staticmethod
    def read_baseline(path: str | Path) -> BaselineRecord:
        f = _open_checked(Path(path), FORMAT + "-baseline", "no such baseline file",
                          "not a rewl SGD baseline file (made by `rewl sgd`)")
        with f:
            return decode(f, BaselineRecord)

    # -- checkpoints ----------------------------------------------------------------------------

    def _ckpt_path(self, step: int, rank: int) -> Path:
        return self.ckpt_dir / f"step_{step:012d}" / f"rank_{rank:05d}.h5"

    def write_checkpoint(self, rank: int, ck: Checkpoint) -> None:
        path = self._ckpt_path(ck.step, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _atomic_h5(path) as f:
            _stamp(f, FORMAT + "-checkpoint")
            encode(f, ck)

    def read_checkpoint(self, step: int, rank: int) -> Checkpoint:
        path = self._ckpt_path(step, rank)
        f = _open_checked(path, FORMAT + "-checkpoint",
                          "checkpoint missing (was the run made with another number of ranks?)",
                          "not a rewl checkpoint")
        with f:
            if int(f.attrs["schema_version"]) < 3:
                return _legacy_checkpoint(f)
            return decode(f, Checkpoint)

    def logged_failure(self) -> list[str]:
        """The failure the run's log records after its last start or end (its headline and its
        last lines: the exception and where it happened), or [] when the last run ended well."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        entries = [line.split(" ", 4)[3:] for line in lines]          # [kind, text] after time and host
        failure: list[str] = []
        for kind, *text in entries:
            failure = failure + text if kind == "failed" else []
        headlines = [text for text in failure if text and not text.startswith((" ", "Traceback"))]
        return headlines[:1] + headlines[-2:] if len(headlines) > 3 else headlines

    def discard_unmarked(self, step: int, rank: int | None = None) -> None:
        """Remove the files of checkpoint `step` after a failed write: one rank's (`rank`), or the
        whole set; never a set that LATEST or PREVIOUS names."""
        if step in self._markers().values():
            return
        if rank is None:
            shutil.rmtree(self._ckpt_path(step, 0).parent, ignore_errors=True)
        else:
            self._ckpt_path(step, rank).unlink(missing_ok=True)

    def mark_complete(self, step: int) -> None:
        """Record `step` as the last complete checkpoint set, keep the set before it (a resume
        falls back to it when a file of the latest is damaged) and drop older sets."""
        # the newest marked set before `step` (after a resume that fell back, LATEST may name a
        # damaged set at or past `step`: it is dropped once the run has moved beyond it)
        previous = max((s for s in self._markers().values() if s < step), default=None)
        if previous is not None:
            _write_text_atomic(self.ckpt_dir / "PREVIOUS", f"{previous}\n")
        _write_text_atomic(self.ckpt_dir / "LATEST", f"{step}\n")
        keep = {f"step_{s:012d}" for s in (step, previous) if s is not None}
        for old in self.ckpt_dir.glob("step_*"):
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)

    def _markers(self) -> dict[str, int]:
        """The steps named by checkpoints/LATEST and checkpoints/PREVIOUS (those that exist)."""
        steps = {}
        for name in ("LATEST", "PREVIOUS"):
            try:
                steps[name] = int((self.ckpt_dir / name).read_text().strip())
            except (OSError, ValueError):
                pass
        return steps

    def latest_step(self) -> int:
        marker = self.ckpt_dir / "LATEST"
        if not marker.exists():
            raise StorageError(f"{self.dir}: no complete checkpoint to resume from ({marker} missing)")
        return int(marker.read_text().strip())

    def resume_point(self, ranks: int) -> tuple[int, str | None]:
        """The newest complete checkpoint set whose `ranks` files all read, and a warning when that
        is not the latest (naming the damaged file). StorageError naming every damaged file, and
        what to do, when no set is usable."""
        latest = self.latest_step()
        previous = self._markers().get("PREVIOUS")
        candidates = [latest] + ([previous] if previous is not None and previous < latest else [])
        damage = []
        for step in candidates:
            problem = next(filter(None, (self._unreadable(step, r) for r in range(ranks))), None)
            if problem is None:
                warning = None if step == latest else \
                    f"{damage[0]}; resuming from the previous complete checkpoint, step {step}"
                return step, warning
            damage.append(problem)
        raise StorageError(f"{self.dir}: no usable checkpoint to resume from ({'; '.join(damage)}); restore the "
                           "files from a backup, or start the run again with --force")

    def _unreadable(self, step: int, rank: int) -> str | None:
        try:
            self.read_checkpoint(step, rank)
        except (StorageError, OSError, KeyError, ValueError) as exc:
            text = str(exc)
            return text if str(self._ckpt_path(step, rank)) in text else f"{self._ckpt_path(step, rank)}: {text}"
        return None
