"""MPI: the rank layout (windows x ranks per window), the launch check, the few collectives the
engine needs, set-up agreed by every rank (``agree``), and abort on a later failure. Everything
handed in and out is a numpy array.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import TypeVar

import numpy as np

from .errors import UserError

T = TypeVar("T")


class LayoutError(UserError, RuntimeError):
    """The MPI world size does not match the deck."""


def env_rank() -> int:
    """This process's rank as the launcher tells it, without initialising MPI (0 when unknown)."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                pass
    return 0


def launch_problem(world_size: int, environ: Mapping[str, str]) -> str | None:
    """Why this launch is wrong, or None: srun started several tasks but MPI sees a world of one.

    That is what ``srun`` without ``--mpi=pmi2`` does under SLURM's default ``MpiDefault=none``
    with pip's MPICH: N independent 1-rank copies of the run, all writing the same directory.
    (``mpiexec`` inside an allocation starts one proxy task per node, so its step may have fewer
    tasks than ranks, never a world of one with more.)"""
    tasks = environ.get("SLURM_STEP_NUM_TASKS", "")
    if world_size != 1 or not tasks.isdigit() or int(tasks) <= 1:
        return None
    return (f"srun started {tasks} tasks but MPI sees a world of 1 rank in each: srun is not wiring up MPI "
            f"(SLURM's MpiDefault=none), so every task would run its own copy. Launch one {tasks}-rank world "
            f"with `srun --mpi=pmi2 -n {tasks} rewl run ...`, or `mpiexec -n {tasks} rewl run ...` "
            f"inside the allocation (slurm/rewl.sbatch does this)")


class Comm:
    """World communicator split into windows: rank = window * ranks_per_window + local."""

    def __init__(self, windows: int, ranks_per_window: int):
        from mpi4py import MPI
        self.MPI = MPI
        self.world = MPI.COMM_WORLD
        self.rank, self.size = self.world.Get_rank(), self.world.Get_size()
        problem = launch_problem(self.size, os.environ)
        if problem:
            raise LayoutError(problem)
        if self.size != windows * ranks_per_window:
            raise LayoutError(
                f"the deck asks for {windows} windows x {ranks_per_window} ranks per window = "
                f"{windows * ranks_per_window} MPI ranks, but this job has {self.size}; "
                f"run with mpiexec -n {windows * ranks_per_window}")
        self.n_windows, self.ranks_per_window = windows, ranks_per_window
        self.window, self.local = divmod(self.rank, ranks_per_window)
        self.window_comm = self.world.Split(color=self.window, key=self.local)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def rank_of(self, window: int, local: int) -> int:
        return window * self.ranks_per_window + local

    def window_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum of `values` over the ranks of this window (same shape)."""
        if self.ranks_per_window == 1:
            return values
        out = np.empty_like(values)
        self.window_comm.Allreduce(np.ascontiguousarray(values), out, op=self.MPI.SUM)
        return out

    def world_sum(self, values: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        self.world.Allreduce(np.ascontiguousarray(values), out, op=self.MPI.SUM)
        return out

    def allgather(self, row: np.ndarray) -> np.ndarray:
        """Rows (k,) of every rank stacked: (size, k)."""
        row = np.ascontiguousarray(row)
        out = np.empty((self.size, *row.shape), dtype=row.dtype)
        self.world.Allgather(row, out)
        return out

    def gather_window_arrays(self, arrays: list[np.ndarray], shapes: list[list[tuple[int, ...]]]) -> list[list[np.ndarray]] | None:
        """Rank 0 collects the float64 `arrays` of every window's first rank (window k's i-th array
        has shape shapes[k][i]); returns one list of arrays per window on rank 0, None elsewhere.
        Every window leader must call it."""
        tag = 100
        if self.local == 0 and not self.is_root:
            for i, array in enumerate(arrays):
                self.send(np.asarray(array, dtype=np.float64), 0, tag=tag + i)
        if not self.is_root:
            return None
        gathered = []
        for k, shape in enumerate(shapes):
            source = self.rank_of(k, 0)
            if source == 0:
                gathered.append([np.asarray(a, dtype=np.float64) for a in arrays])
            else:
                gathered.append([self.recv(shape[i], np.float64, source, tag=tag + i) for i in range(len(arrays))])
        return gathered

    def bcast_text(self, text: str | None) -> str | None:
        return self.world.bcast(text, root=0)

    def allgather_text(self, items: tuple[str, ...]) -> list[tuple[str, ...]]:
        """Every rank's tuple of strings, in rank order."""
        return [tuple(row) for row in self.world.allgather(tuple(items))]

    def send(self, values: np.ndarray, dest: int, tag: int = 0) -> None:
        self.world.Send(np.ascontiguousarray(values), dest=dest, tag=tag)

    def recv(self, shape: tuple[int, ...], dtype: np.dtype, source: int, tag: int = 0) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        self.world.Recv(out, source=source, tag=tag)
        return out

    def sendrecv(self, values: np.ndarray, partner: int, shape: tuple[int, ...], dtype: np.dtype, tag: int = 0) -> np.ndarray:
        """Send `values` to `partner` and receive an array of `shape` from it."""
        out = np.empty(shape, dtype=dtype)
        self.world.Sendrecv(np.ascontiguousarray(values), dest=partner, sendtag=tag,
                            recvbuf=out, source=partner, recvtag=tag)
        return out

    def barrier(self) -> None:
        self.world.Barrier()


class SetupFailed(UserError):
    """Set-up failed on one or more ranks; raised on every rank alike by ``agree``, with every
    failing rank's message. Every rank can then leave normally (exit 2), none waits."""

    def __init__(self, problems: list[tuple[int, str]], size: int):
        self.problems, self.size = problems, size
        super().__init__(self.report())

    def report(self) -> str:
        """One ``rewl: error:`` block per distinct message, naming the ranks when not all of them
        met it."""
        by_text: dict[str, list[int]] = {}
        for rank, text in self.problems:
            by_text.setdefault(text, []).append(rank)
        blocks = []
        for text, ranks in by_text.items():
            where = "" if len(ranks) == self.size else \
                f"[rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}] "
            blocks.append(f"rewl: error: {where}{text.rstrip()}")
        return "\n".join(blocks)


def agree(action: Callable[[], T]) -> T:
    """Collective over the world: run `action` on every rank; if it raised on any rank, raise
    ``SetupFailed`` on every rank with every rank's message (a ``UserError``'s message alone,
    anything else with its traceback: a bug). So an error met by one rank only, a data file
    missing on one node, reaches the user through rank 0 and no rank is left waiting in a
    collective. `action` may itself be collective (every rank calls it)."""
    from mpi4py import MPI
    try:
        result, problem = action(), None
    except UserError as exc:
        result, problem = None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a bug: reported with its traceback, still by agreement
        result, problem = None, "".join(traceback.format_exception(exc))
    world = MPI.COMM_WORLD
    problems = world.allgather(problem) if world.Get_size() > 1 else [problem]
    failed = [(rank, text) for rank, text in enumerate(problems) if text is not None]
    if failed:
        raise SetupFailed(failed, len(problems))
    return result


def _drain_stderr(limit: float = 10.0) -> None:
    """Wait (at most `limit` s) until what this process wrote to its stderr pipe has been read.
    Under mpiexec the pipe leads to MPICH's proxy, which forwards it; an abort travels on another
    channel and may overtake text still in the pipe, so on a starved machine a traceback written
    just before ``MPI_Abort`` was seen to vanish. Nothing to wait for on a file or a terminal."""
    import fcntl
    import struct
    import termios
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            pending = struct.unpack("i", fcntl.ioctl(sys.stderr.fileno(), termios.FIONREAD, b"\0" * 4))[0]
        except (OSError, ValueError):
            return
        if pending == 0:
            return
        time.sleep(0.01)


def run_or_abort(main: Callable[[], int], rank: int, log: Callable[[str], None] | None = None) -> int:
    """Run `main`; if it raises on this rank, write the rank's traceback to stderr and to `log`
    (the run directory's log, where it cannot be lost), wait until stderr has been read, then
    abort every rank, so a failure never leaves the others waiting in a collective."""
    try:
        return main()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - anything must bring the whole job down
        text = f"[rank {rank}] rewl failed:\n" + "".join(traceback.format_exception(exc))
        sys.stdout.flush()
        sys.stderr.write(text)
        sys.stderr.flush()
        if log is not None:
            log(text)
        _drain_stderr()
        from mpi4py import MPI
        if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
            MPI.COMM_WORLD.Abort(1)
        return 1
