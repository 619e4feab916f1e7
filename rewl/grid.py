"""The (x, y) grid of the entropy estimate and its windows.

x = ln L_train is split into overlapping windows; y (test accuracy, or a second CV) is shared by
all of them. A ``Window`` owns the x bins [lo, hi) of the global grid, keeps ln g only over those
bins, and answers which local bin a walker's CVs fall in.

y has one of two roles (``Grid.y_recorded``). Flattened: Wang-Landau over the 2-D grid, ln g(x, y).
Recorded: Wang-Landau over x alone (the estimate has one y column, every y inside it) while each
visit adds its y to a histogram per x bin on the y grid: with a bias that depends on x alone the
walkers' y at fixed x is distributed as at equilibrium, so S(x, y) = ln g(x) + ln P(y | x)
(Schulz, Binder, Mueller 2002). This module depends on nothing else in
the package (the deck's ``[grid]`` tables are read straight into ``Axis``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Axis:
    """Uniform bins: edges = min + width * arange(bins + 1)."""

    min: float
    max: float
    width: float

    @property
    def bins(self) -> int:
        return int(round((self.max - self.min) / self.width))

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
    y_recorded: bool = False    # y recorded per x bin (True) or flattened with x (False)

    @property
    def wl_y_bins(self) -> int:
        """y bins of the Wang-Landau estimate: 1 when y is recorded, else the y grid's."""
        return 1 if self.y_recorded else self.y.bins

    def wl_y_index(self, values: torch.Tensor) -> torch.Tensor:
        """The Wang-Landau y bin of each value (any shape): 0 when y is recorded (any y, nan too)."""
        return torch.zeros(values.shape, dtype=torch.long, device=values.device) if self.y_recorded else self.y.index(values)


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


@dataclass(frozen=True)
class Window:
    """Window `index` of a run: the global x bins [lo, hi) and every y bin of the grid.

    Local bins: ix in [0, n_x) counts from lo; iy is the Wang-Landau y bin (the global y bin, or
    0 when y is recorded). The window's estimate arrays are (n_x, n_y); its recorded y
    histogram, when y is recorded, (n_x, grid.y.bins)."""

    index: int
    grid: Grid
    lo: int
    hi: int

    @classmethod
    def split(cls, grid: Grid, count: int, overlap: float) -> list[Window]:
        """The `count` overlapping windows of the grid's x axis (see ``window_bins``)."""
        return [cls(k, grid, lo, hi) for k, (lo, hi) in enumerate(window_bins(grid.x.bins, count, overlap))]

    @property
    def n_x(self) -> int:
        return self.hi - self.lo

    @property
    def n_y(self) -> int:
        return self.grid.wl_y_bins

    @property
    def recorded_y_bins(self) -> int:
        """y bins of the recorded y histogram (the y grid's), 0 when y is flattened."""
        return self.grid.y.bins if self.grid.y_recorded else 0

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the window's estimate arrays: (n_x, n_y)."""
        return (self.n_x, self.n_y)

    @property
    def x_range(self) -> tuple[float, float]:
        edges = self.grid.x.edges
        return float(edges[self.lo]), float(edges[self.hi])

    @property
    def y_range(self) -> tuple[float, float]:
        """The y a walker of the window may have: the y grid's range, anything when y is recorded."""
        return (-math.inf, math.inf) if self.grid.y_recorded else (self.grid.y.min, self.grid.y.max)

    def bin(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Local bins of CVs x, y (B,): ix (B,) in [0, n_x), iy (B,) in [0, n_y), and inside (B,) bool.

        Values outside the window are flagged by `inside` and their indices clamped, so lookups
        stay legal."""
        ix = self.grid.x.index(x) - self.lo
        iy = self.grid.wl_y_index(y)
        inside = (ix >= 0) & (ix < self.n_x) & (iy >= 0) & (iy < self.n_y)
        return ix.clamp_(0, self.n_x - 1), iy.clamp_(0, self.n_y - 1), inside

    def fractional(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fractional local bin coordinates (B,) each: bin k spans [k, k + 1) (y: 1/2, the centre of
        the one Wang-Landau y bin, when y is recorded)."""
        fx = (x - self.grid.x.min) / self.grid.x.width - self.lo
        if self.grid.y_recorded:
            return fx, torch.full_like(y, 0.5)
        return fx, (y - self.grid.y.min) / self.grid.y.width

    def overlap_with(self, upper: Window) -> tuple[int, int]:
        """The global x bins [lo, hi) this window shares with the next one up."""
        return upper.lo, self.hi
