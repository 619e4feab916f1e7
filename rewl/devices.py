"""Where a rank computes: its torch device (the GPU of its node-local rank), threads, and the CPU
allocator setting.
"""
from __future__ import annotations

import ctypes
import os
import socket
import sys
from collections.abc import Mapping

import torch

# Node-local rank, most specific first: under `mpiexec` inside a SLURM allocation MPICH's proxy is
# the only SLURM task of its node, so SLURM_LOCALID is 0 for every rank there; MPI's own variable
# is right. Under `srun --mpi=pmi2` only SLURM_LOCALID is set.
LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")


def local_rank(environ: Mapping[str, str]) -> tuple[int, str]:
    """This process's index among the ranks of its node, and the variable it was read from
    ((0, "") when no launcher says)."""
    for var in LOCAL_RANK_VARS:
        value = environ.get(var, "")
        if value.isdigit():
            return int(value), var
    return 0, ""


def gpu_for_rank(environ: Mapping[str, str], n_visible: int) -> int:
    """The index (among the n_visible GPUs this process sees) of this rank's GPU: its node-local
    rank modulo n_visible. When SLURM binds one GPU per task (CUDA_VISIBLE_DEVICES holds just that
    one) every rank gets index 0, its own GPU."""
    if n_visible <= 0:
        raise ValueError("no GPU visible")
    return local_rank(environ)[0] % n_visible


def pick_device(choice: str, environ: Mapping[str, str] = os.environ) -> torch.device:
    """cuda:(local rank mod visible GPUs) when CUDA is present and allowed, else CPU."""
    if choice == "cpu" or not torch.cuda.is_available():
        if choice == "cuda":
            raise RuntimeError('the deck asks for device = "cuda" but CUDA is not available here')
        return torch.device("cpu")
    return torch.device(f"cuda:{gpu_for_rank(environ, torch.cuda.device_count())}")


def device_identity(device: torch.device, environ: Mapping[str, str] = os.environ) -> tuple[str, str, str]:
    """(host, physical id, label) of a rank's device. The id tells GPUs apart across the ranks of a
    node (the GPU's UUID; indices are not enough: under SLURM's device cgroups every task may see
    its own GPU as cuda:0); "" for the CPU, which ranks share by design."""
    host = socket.gethostname().split(".")[0]
    if device.type != "cuda":
        return host, "", "cpu"
    index = device.index or 0
    props = torch.cuda.get_device_properties(index)
    physical = str(getattr(props, "uuid", "")) or f"{environ.get('CUDA_VISIBLE_DEVICES', '')}#{index}"
    rank, var = local_rank(environ)
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    label = f"cuda:{index}" + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "") + \
        (f" local rank {rank} ({var})" if var else "")
    return host, physical, label


def gpu_sharing_problem(identities: list[tuple[str, str, str]], allowed: bool) -> str | None:
    """Why this mapping (one (host, physical id, label) per rank) is refused: ranks sharing a GPU
    when the deck does not allow it; None when fine."""
    by_gpu: dict[tuple[str, str], list[int]] = {}
    for rank, (host, physical, _label) in enumerate(identities):
        if physical:
            by_gpu.setdefault((host, physical), []).append(rank)
    shared = [ranks for ranks in by_gpu.values() if len(ranks) > 1]
    if not shared or allowed:
        return None
    groups = "; ".join(f"ranks {', '.join(map(str, g))} on {identities[g[0]][0]} {identities[g[0]][2]}" for g in shared)
    return (f"two ranks would share one GPU ({groups}): ask for one GPU per rank (e.g. #SBATCH --gpus-per-task=1), "
            "start fewer ranks per node, or set [run] share_gpus = true")


def describe_mapping(identities: list[tuple[str, str, str]]) -> str:
    """One line: which rank computes where, grouped by host ("cpu" when every rank is on a CPU)."""
    if all(not physical for _, physical, _ in identities):
        return "cpu"
    hosts: dict[str, list[str]] = {}
    for rank, (host, _physical, label) in enumerate(identities):
        hosts.setdefault(host, []).append(f"rank {rank} {label}")
    return "; ".join(f"{host}: {', '.join(rows)}" for host, rows in hosts.items())


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning it to the OS after every tensor.

    A batched step allocates megabyte-sized temporaries; by default each comes from a fresh mmap
    and pays a page fault per 4 KiB on first touch, which halved the throughput of the spiral
    step on one core. Raising the mmap and trim thresholds makes them reuse the heap.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_top_pad, 64 << 20)
