"""Samplers behind one interface (``Sampler``): Wang-Landau Monte Carlo (single-parameter moves),
Hamiltonian Monte Carlo and molecular dynamics."""
from __future__ import annotations

import torch

from ..config import SamplerConfig
from ..grid import Window
from ..tasks import Task
from .base import Sampler
from .hmc import HMC
from .wlmc import WLMC
from .wlmd import WLMD

__all__ = ["HMC", "Sampler", "WLMC", "WLMD", "make_sampler"]


def make_sampler(cfg: SamplerConfig, task: Task, window: Window, device: torch.device) -> Sampler:
    """The deck's sampler for one rank's window."""
    return {"wlmc": WLMC, "hmc": HMC, "wlmd": WLMD}[cfg.kind](cfg, task, window, device)
