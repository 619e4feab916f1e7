"""The (x, y) grid of the entropy estimate and the split of x into overlapping windows.

x = ln L_train is split into windows; y (test accuracy, or a second CV) is shared by all of them.
A window owns the x bins [lo, hi) of the global grid and keeps ln g only over those bins.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import AxisConfig, GridConfig


@dataclass(frozen=True)
class Axis:
    """Uniform bins: edges = min + width * arange(bins + 1)."""

    min: float
    max: float
    width: float
    bins: int

    @classmethod
    def from_config(cls, cfg: AxisConfig) -> "Axis":
        return cls(cfg.min, cfg.max, cfg.width, cfg.bins)

    @property
    def edges(self) -> np.ndarray:
        """Shape (bins + 1,)."""
        return self.min + self.width * np.arange(self.bins + 1)

    @property
    def centers(self) -> np.ndarray:
        """Shape (bins,)."""
        return self.min + self.width * (np.arange(self.bins) + 0.5)

    def index(self, values: torch.Tensor) -> torch.Tensor:
        """Bin index of each value (any shape); values outside [min, max) give -1 or bins."""
        idx = torch.floor((values.double() - self.min) / self.width)
        idx = torch.nan_to_num(idx, nan=-1.0, posinf=self.bins, neginf=-1.0)
        return idx.clamp_(-1, self.bins).long()


@dataclass(frozen=True)
class Grid:
    x: Axis
    y: Axis

    @classmethod
    def from_config(cls, cfg: GridConfig) -> "Grid":
        return cls(Axis.from_config(cfg.x), Axis.from_config(cfg.y))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.x.bins, self.y.bins)


def window_bins(n_x: int, count: int, overlap: float) -> list[tuple[int, int]]:
    """Split n_x bins into `count` windows [lo, hi) of equal width overlapping by `overlap`.

    Width = n_x / (1 + (count - 1)(1 - overlap)) (Vogel et al. 2014). Every window has at least
    three bins and each neighbouring pair shares at least two, so exchanges are possible.
    """
    if count == 1:
        return [(0, n_x)]
    width = n_x / (1 + (count - 1) * (1 - overlap))
    shift = width * (1 - overlap)
    bounds = []
    for k in range(count):
        lo = int(round(k * shift))
        hi = n_x if k == count - 1 else int(round(k * shift + width))
        bounds.append((lo, hi))
    for k, (lo, hi) in enumerate(bounds):
        if hi - lo < 3:
            raise ValueError(f"window {k} would have {hi - lo} x bins (at least 3 needed)")
        if k and bounds[k - 1][1] - lo < 2:
            raise ValueError(f"windows {k - 1} and {k} would share {bounds[k - 1][1] - lo} x bins (at least 2 needed)")
    return bounds
