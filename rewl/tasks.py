"""Tasks: what a walker is (a flat parameter vector in a box) and its collective variables.

Every task gives, for walkers (B, n_params): x (B,) = the windowed CV (ln L_train) and y (B,) = the
second CV. The analytic ``box_quadratic`` system goes through exactly the same interface, so the
engine path it tests is the one the networks use.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .config import Config
from .models import FNN, batched_forward, n_params, param_layout
from .observables import accuracy, cross_entropy, cross_entropy_points, ln_sum_squares


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


class Task:
    """Base: a box [lo, hi] per parameter, parameter groups, and the CVs of batched walkers."""

    name: str
    n_params: int
    lo: torch.Tensor          # (n_params,)
    hi: torch.Tensor          # (n_params,)
    group: torch.Tensor       # (n_params,) long: group (layer) of each parameter
    group_names: list[str]
    group_half_width: torch.Tensor  # (n_groups,)
    dtype: torch.dtype
    x_label = "ln L_train"
    y_label = "y"

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def cvs(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """walkers (B, n_params) -> x (B,), y (B,)."""
        raise NotImplementedError

    def x_of(self, walkers: torch.Tensor) -> torch.Tensor:
        """The windowed CV alone, differentiable: walkers (B, n_params) -> (B,)."""
        raise NotImplementedError

    def y_of(self, walkers: torch.Tensor) -> torch.Tensor | None:
        """The second CV, differentiable, or None when it is not (hard accuracy): (B,)."""
        return None

    def sample_uniform(self, count: int, gen: torch.Generator) -> torch.Tensor:
        """Walkers uniform in the box: (count, n_params)."""
        u = torch.rand(count, self.n_params, generator=gen, device=self.lo.device, dtype=self.dtype)
        return self.lo + u * (self.hi - self.lo)

    def describe(self) -> str:
        return f"{self.name}: {self.n_params} parameters"

    def hard_test_accuracy(self, walkers: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Fraction of test points classified right, given the walkers and their y: (B,), or None
        for a task without classes."""
        return None

    def train_point_losses(self, walkers: torch.Tensor) -> torch.Tensor:
        """Loss of every training point, differentiable: (B, n_params) -> (B, P_train).
        Only tasks with a network to train (SGD baselines) have it."""
        raise TypeError(f"task {self.name!r} has no network to train")

    def initial_weights(self, count: int, seed: int) -> torch.Tensor:
        """`count` weight vectors from the network's standard initialisation: (count, n_params)."""
        raise TypeError(f"task {self.name!r} has no network to train")


class SpiralTask(Task):
    """Spiral classification with an FNN; x = ln cross-entropy on train, y = hard test accuracy."""

    name = "spiral"
    y_label = "A_test"

    def __init__(self, cfg: Config, device: torch.device):
        t, m = cfg.task, cfg.model
        self.dtype = getattr(torch, m.dtype)
        rng = np.random.default_rng(t.data_seed)
        x_train, y_train = spiral_data(t.train_per_class, t.noise, rng)
        x_test, y_test = spiral_data(t.test_per_class, t.noise, rng)
        self.n_train = len(y_train)
        inputs = torch.tensor(np.concatenate([x_train, x_test]), dtype=self.dtype, device=device)
        self.inputs_t = inputs.t().contiguous()      # (2, P): train points first, then test
        self.labels_train = torch.tensor(y_train, device=device)
        self.labels_test = torch.tensor(y_test, device=device)
        self.module = FNN(2, m.hidden, 2, m.activation).to(device=device, dtype=self.dtype)
        self.forward = batched_forward(self.module, for_compile=m.compile)
        # dynamic=False: one batch size per rank, so one specialised kernel
        self._cvs = torch.compile(self._cvs_eager, dynamic=False) if m.compile else self._cvs_eager
        self.n_params = n_params(self.module)
        fan_outs = [layer.out_features for layer in self.module.layers]
        half = m.box if m.box is not None else tuple(2.0 / math.sqrt(f) for f in fan_outs)
        layout = param_layout(self.module)
        self.group_names = [f"layer{k}" for k in range(len(fan_outs))]
        self.group = torch.cat([torch.full((s.size,), s.group, dtype=torch.long) for s in layout]).to(device)
        self.group_half_width = torch.tensor(half, dtype=self.dtype, device=device)
        self.hi = self.group_half_width[self.group]
        self.lo = -self.hi

    def cvs(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cvs(walkers)

    def _cvs_eager(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.forward(walkers, self.inputs_t)
        n = self.n_train
        x = torch.log(cross_entropy(logits[..., :n], self.labels_train))
        y = accuracy(logits[..., n:], self.labels_test)
        return x, y

    def x_of(self, walkers: torch.Tensor) -> torch.Tensor:
        logits = self.forward(walkers, self.inputs_t[:, : self.n_train])
        return torch.log(cross_entropy(logits, self.labels_train))

    def hard_test_accuracy(self, walkers: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y                                   # y is the hard test accuracy here

    def train_point_losses(self, walkers: torch.Tensor) -> torch.Tensor:
        logits = self.forward(walkers, self.inputs_t[:, : self.n_train])
        return cross_entropy_points(logits, self.labels_train)

    def initial_weights(self, count: int, seed: int) -> torch.Tensor:
        """PyTorch's default initialisation of nn.Linear (uniform +-1/sqrt(fan_in)), per run."""
        gen = torch.Generator().manual_seed(seed)
        rows = []
        for layer in self.module.layers:
            bound = 1.0 / math.sqrt(layer.in_features)
            size = layer.weight.numel() + layer.bias.numel()
            rows.append((torch.rand(count, size, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
        return torch.cat(rows, dim=1).to(device=self.lo.device, dtype=self.dtype)

    def describe(self) -> str:
        hidden = [layer.out_features for layer in self.module.layers[:-1]]
        return (f"spiral: FNN 2 -> {' -> '.join(map(str, hidden))} -> 2 ({self.n_params} parameters), "
                f"{self.n_train} train / {len(self.labels_test)} test points, "
                f"box +-{', +-'.join(f'{h:.4g}' for h in self.group_half_width.tolist())} per layer")

    def plain_step_fn(self):
        """For the benchmark: a one-walker nn.Module and a function computing its (x, y)."""
        n = self.n_train
        inputs, lt, ls = self.inputs_t.t(), self.labels_train, self.labels_test

        def cvs(module: FNN) -> tuple[float, float]:
            out = module(inputs).detach()
            x = torch.log(torch.nn.functional.cross_entropy(out[:n], lt))
            y = (out[n:].argmax(dim=1) == ls).float().mean()
            return float(x), float(y)
        return self.module, cvs


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


def make_task(cfg: Config, device: torch.device) -> Task:
    if cfg.task.kind == "spiral":
        return SpiralTask(cfg, device)
    return BoxQuadraticTask(cfg, device)
