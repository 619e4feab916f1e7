"""The interface every sampler implements; the engine knows samplers only through it.

A sampler moves one rank's walkers inside its window and updates the window's estimate. It owns
its own settings and counters, and says how to save and restore them. To add a sampler: a module
beside ``wlmc.py`` and ``wlmd.py`` with a subclass of ``Sampler``, its name in
``config.SAMPLERS`` (with its deck keys in ``SamplerConfig``, marked ``only=``), and in
``samplers.make_sampler``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from ..config import SamplerConfig
from ..grid import Window
from ..tasks import Task
from ..walkers import Walkers
from ..wl import Estimate


class Sampler(ABC):
    """Moves of one rank's walkers (B, n_params) in one window."""

    kind: str
    rate_label: str            # the progress line's name for accepted / attempted
    low_rate_hint = ""         # what a rate under ``ProgressLine.LOW_RATE`` means, for the warning
    carries_velocities = False  # walkers have velocities (they travel in exchanges and checkpoints)
    keeps_offsets = False      # the estimate sums the walkers' offsets inside their bins (``wl.reach_fraction``)

    def __init__(self, cfg: SamplerConfig, task: Task, window: Window, device: torch.device):
        self.cfg, self.task, self.window, self.device = cfg, task, window, device

    @property
    @abstractmethod
    def counter_names(self) -> list[str]:
        """Names of the entries of ``totals()`` (the run file's acceptance columns)."""

    @abstractmethod
    def start(self, walkers: Walkers, est: Estimate, gen: torch.Generator, steps: int) -> None:
        """Prepare fresh walkers (all inside the window) and run `steps` moves without updating ln g,
        each walker kept in its own x bin (the drive spread them over the window; on a flat ln g they
        would gather where S is highest); the counters start at zero afterwards."""

    @abstractmethod
    def step(self, walkers: Walkers, est: Estimate, gen: torch.Generator) -> None:
        """One move of every walker, and the estimate's update."""

    def end_block(self, walkers: Walkers) -> None:
        """After the steps between two synchronisations: make the walkers' CVs and bins current
        (the exchange and the checkpoints read them)."""

    def at_sync(self, step: int, est: Estimate, walkers: Walkers) -> None:
        """At every synchronisation point, after the window's estimates were merged."""

    def bin_ln_g(self, ln_g: torch.Tensor) -> torch.Tensor:
        """ln g of whole bins from the estimate's ln g (n_x, n_y): what the run file stores. The
        same unless the sampler keeps ln g per unit of a bin's reachable part (WLMD)."""
        return ln_g

    @abstractmethod
    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Attempted and accepted counts over the whole run, (n_counters,) float64 each."""

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Everything a checkpoint needs to continue bit for bit (besides walkers and estimate)."""

    @abstractmethod
    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """The inverse of ``state``."""

    @property
    def wall_strength(self) -> float:
        """c of the soft walls now (samplers with walls), else nan."""
        return float("nan")

    @property
    def step_size(self) -> float:
        """The tuned leapfrog step (samplers with trajectories), else nan."""
        return float("nan")

    @property
    def leapfrog_steps(self) -> int:
        """Leapfrog steps per trajectory now (samplers with trajectories), else 0."""
        return 0

    def kinetic_temperature(self, walkers: Walkers) -> float:
        """<v^2> of the walkers (should be 1), or nan for samplers without velocities."""
        return float("nan")
