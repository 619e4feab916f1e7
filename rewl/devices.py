"""Where a rank computes: its torch device, threads, and the CPU allocator setting."""
from __future__ import annotations

import ctypes
import os
import sys

import torch


def pick_device(choice: str) -> torch.device:
    """cuda:(local rank mod device count) when CUDA is present and allowed, else CPU."""
    if choice == "cpu" or not torch.cuda.is_available():
        if choice == "cuda":
            raise RuntimeError('the deck asks for device = "cuda" but CUDA is not available here')
        return torch.device("cpu")
    local = 0
    for var in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"):
        if var in os.environ:
            local = int(os.environ[var])
            break
    return torch.device(f"cuda:{local % torch.cuda.device_count()}")


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
