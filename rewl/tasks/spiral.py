"""The spiral tasks: two interleaved spirals classified by an FNN 2 -> hidden -> 2, and the same
points as a regression (2 -> hidden -> 1) for the width study."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..config import GRADIENT_SAMPLERS, Config
from .base import ClassificationTask, RegressionTask


def spiral_data(per_class: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals: r ~ U[1, 5], angle 2r (+pi for class 1), Gaussian noise on the
    coordinates. Returns inputs (2 * per_class, 2) and labels (2 * per_class,)."""
    points, labels = [], []
    for cls in (0, 1):
        r = rng.uniform(1.0, 5.0, per_class)
        angle = 2.0 * r + math.pi * cls
        xy = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
        points.append(xy + noise * rng.standard_normal(xy.shape))
        labels.append(np.full(per_class, cls))
    return np.concatenate(points), np.concatenate(labels)


class SpiralTask(ClassificationTask):
    """Spiral classification with an FNN 2 -> hidden -> 2."""

    name = "spiral"

    def __init__(self, cfg: Config, device: torch.device):
        t = cfg.task
        rng = np.random.default_rng(t.data_seed)
        x_train, y_train = spiral_data(t.train_per_class, t.noise, rng)
        x_test, y_test = spiral_data(t.test_per_class, t.noise, rng)
        self.n_train = len(y_train)
        self.labels_train = torch.tensor(y_train, device=device)
        self.labels_test = torch.tensor(y_test, device=device)
        # a smoothed accuracy only where WLMD must push along y (y flattened); recorded, y is the hard accuracy
        self.smooth_k = t.accuracy_k if cfg.sampler.kind in GRADIENT_SAMPLERS and not cfg.grid.y_recorded else None
        self.y_label = "A_smooth" if self.smooth_k else "A_test"
        self.has_accuracy = self.smooth_k is not None
        self._build(cfg, device, 2, 2, np.concatenate([x_train, x_test]))

    def hard_test_accuracy(self, walkers: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y if self.smooth_k is None else super().hard_test_accuracy(walkers, y)   # wlmc: y is it

    def describe(self) -> str:
        y = f"A_smooth (k = {self.smooth_k:g})" if self.smooth_k else "hard test accuracy"
        return (f"spiral: {self.network_text()}; {self.n_train} train / {len(self.labels_test)} test points; "
                f"y = {y}")


def spiral_regression_data(points: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The spiral as a regression: r ~ U[1, 5] and arm s = +-1 at random, the point at angle
    2r (+pi on the second arm) with Gaussian noise on the coordinates, target s r / 5 (the signed
    position along the arms). Returns inputs (points, 2) and targets (points,)."""
    r = rng.uniform(1.0, 5.0, points)
    arm = rng.integers(0, 2, points)
    angle = 2.0 * r + math.pi * arm
    xy = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1) + noise * rng.standard_normal((points, 2))
    return xy, np.where(arm == 0, 1.0, -1.0) * r / 5.0


class SpiralRegressionTask(RegressionTask):
    """Spiral regression (the width study of the reference): FNN 2 -> W -> W -> 1, half of the
    points train, half test."""

    name = "spiral_regression"

    def __init__(self, cfg: Config, device: torch.device):
        t = cfg.task
        inputs, targets = spiral_regression_data(t.points, t.noise, np.random.default_rng(t.data_seed))
        self.n_train = t.points // 2
        self._build(cfg, device, 2, 1, inputs)
        self.targets = torch.tensor(targets, dtype=self.dtype, device=device)     # (P,)

    def describe(self) -> str:
        return (f"spiral_regression: {self.network_text()}; {self.n_train} train / "
                f"{len(self.targets) - self.n_train} test points; MSE")
