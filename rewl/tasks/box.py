"""The analytic system: uniform coordinates in a box, whose density of states is known exactly
(``rewl.testsystems``); it goes through the same interface as the networks."""
from __future__ import annotations

import torch

from ..config import Config
from ..observables import ln_sum_squares
from .base import Task


class BoxQuadraticTask(Task):
    """n coordinates uniform in [-a, a]^n; x = ln sum of squares of the first m, y = of the rest."""

    name = "box_quadratic"
    x_label = "ln E1"
    y_label = "ln E2"

    def __init__(self, cfg: Config, device: torch.device):
        t = cfg.task
        self.dtype = torch.float64
        self.n_params, self.m, self.a = t.n, t.m, t.half_width
        self.group_names = ["coords"]
        self.group = torch.zeros(self.n_params, dtype=torch.long, device=device)
        self.group_half_width = torch.tensor([self.a], dtype=self.dtype, device=device)
        self.hi = torch.full((self.n_params,), self.a, dtype=self.dtype, device=device)
        self.lo = -self.hi

    def cvs(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return ln_sum_squares(walkers[:, : self.m]), ln_sum_squares(walkers[:, self.m:])

    def x_of(self, walkers: torch.Tensor) -> torch.Tensor:
        return ln_sum_squares(walkers[:, : self.m])

    def y_of(self, walkers: torch.Tensor) -> torch.Tensor:
        return ln_sum_squares(walkers[:, self.m:])

    def describe(self) -> str:
        return f"box_quadratic: n = {self.n_params} coordinates in [-{self.a:g}, {self.a:g}], blocks {self.m} + {self.n_params - self.m}"
