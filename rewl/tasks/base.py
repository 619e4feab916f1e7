"""The task contract: ``Task`` (a box of parameters and its collective variables, the base of a
user's own task), ``NetworkTask`` (walkers are a network's weights) with its classification and
regression bases, ``TaskError`` and ``validate_task`` (a custom task checked against the contract).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..models import FNN, batched_forward, n_params, param_layout
from ..observables import accuracy, cross_entropy, cross_entropy_points, smooth_accuracy


class Task:
    """Base: a box [lo, hi] per parameter, parameter groups, and the CVs of batched walkers.

    Also the base of a user's own task (``rewl.Task``, run by ``rewl.run(deck, task=...)`` with
    ``[task] kind = "custom"``): call ``set_box`` in ``__init__``, implement ``cvs`` and ``x_of``
    (and ``y_of`` or ``md_cvs`` for WLMD); everything else has a default. docs/tasks.md, "Your own task".
    """

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
    has_accuracy = False      # a hard test accuracy is recorded per bin beside y (wlmd classification)

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def set_box(self, name: str, lo: torch.Tensor, hi: torch.Tensor, groups: dict[str, int] | None = None) -> None:
        """Set the name, the box lo <= w <= hi ((n_params,) each; their dtype is the walkers'), and
        the parameter groups (name -> number of consecutive parameters, in order; default: one
        group). WLMC adapts one move size per group, starting from a fraction of the group's mean
        half width."""
        if lo.ndim != 1 or lo.shape != hi.shape:
            raise TaskError(f"task {name!r}: lo and hi must have the same shape (n_params,), got "
                            f"{tuple(lo.shape)} and {tuple(hi.shape)}")
        if not bool((hi > lo).all()):
            raise TaskError(f"task {name!r}: every parameter needs hi > lo")
        groups = groups or {"params": lo.numel()}
        if sum(groups.values()) != lo.numel() or min(groups.values()) <= 0:
            raise TaskError(f"task {name!r}: the group sizes {groups} must be positive and add up to n_params = {lo.numel()}")
        self.name, self.dtype, self.lo, self.hi = name, lo.dtype, lo, hi
        self.n_params = lo.numel()
        self.group_names = list(groups)
        self.group = torch.cat([torch.full((size,), k, dtype=torch.long) for k, size in enumerate(groups.values())]).to(lo.device)
        half = 0.5 * (hi - lo)
        self.group_half_width = torch.stack([half[self.group == k].mean() for k in range(len(groups))])

    def cvs(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """walkers (B, n_params) -> x (B,), y (B,)."""
        raise NotImplementedError

    def x_of(self, walkers: torch.Tensor) -> torch.Tensor:
        """The windowed CV alone, differentiable: walkers (B, n_params) -> (B,)."""
        raise NotImplementedError

    def y_of(self, walkers: torch.Tensor) -> torch.Tensor | None:
        """The second CV, differentiable, or None when it is not (hard accuracy): (B,)."""
        return None

    def md_cvs(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x, y differentiable (B,) for the MD force, and the hard test accuracy (B,) or None."""
        x, y = self.cvs(walkers)
        return x, y, None

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


class NetworkTask(Task):
    """A task whose walkers are the weights of an FNN: box +-2/sqrt(fan_out) per layer (or the
    deck's), batched forward, the standard initialisation for baselines. Subclasses turn outputs
    (B, d_out, P) into the CVs (``_cvs_from_outputs``)."""

    def _build(self, cfg: Config, device: torch.device, d_in: int, d_out: int, inputs: np.ndarray) -> None:
        """inputs (P, d_in): training points first, then test points."""
        m = cfg.model
        self.dtype = getattr(torch, m.dtype)
        self.inputs_t = torch.tensor(inputs, dtype=self.dtype, device=device).t().contiguous()   # (d_in, P)
        module = FNN(d_in, m.hidden, d_out, m.activation).to(device=device, dtype=self.dtype)
        fan_outs = [layer.out_features for layer in module.layers]
        half = m.box if m.box is not None else tuple(2.0 / math.sqrt(f) for f in fan_outs)
        self._attach(cfg, module, batched_forward(module, for_compile=m.compile),
                     [f"layer{k}" for k in range(len(fan_outs))], half)

    def _attach(self, cfg: Config, module: nn.Module, forward: Callable, group_names: list[str],
                half_widths: tuple[float, ...] | list[float]) -> None:
        """Take `module` (on its device and dtype) and its batched `forward`; one parameter group per
        layer (``param_layout``), box +-half_widths[k] for layer k."""
        self.module, self.forward = module, forward
        # dynamic=False: one batch size per rank, so one specialised kernel; the MD path compiles
        # forward and backward together (AOTAutograd)
        compile_ = cfg.model.compile
        self._cvs = torch.compile(self._cvs_eager, dynamic=False) if compile_ else self._cvs_eager
        self._md = torch.compile(self._md_eager, dynamic=False) if compile_ else self._md_eager
        self.n_params = n_params(module)
        device = next(module.parameters()).device
        self.group_names = group_names
        self.group = torch.cat([torch.full((s.size,), s.group, dtype=torch.long) for s in param_layout(module)]).to(device)
        self.group_half_width = torch.tensor(half_widths, dtype=self.dtype, device=device)
        self.hi = self.group_half_width[self.group]
        self.lo = -self.hi

    def _layers(self) -> list[nn.Module]:
        """The layers holding parameters, in walker order."""
        return list(self.module.layers)

    def _cvs_from_outputs(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """outputs (B, d_out, P) of all points -> x, y, hard test accuracy (or None): (B,) each."""
        raise NotImplementedError

    def _cvs_eager(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = self._cvs_from_outputs(self.forward(walkers, self.inputs_t))
        return x, y

    def _md_eager(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return self._cvs_from_outputs(self.forward(walkers, self.inputs_t))

    def cvs(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cvs(walkers)

    def md_cvs(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return self._md(walkers)

    def x_of(self, walkers: torch.Tensor) -> torch.Tensor:
        return torch.log(self.train_point_losses(walkers).mean(dim=1))

    def initial_weights(self, count: int, seed: int) -> torch.Tensor:
        """PyTorch's default initialisation, per run: Linear and Conv2d uniform +-1/sqrt(fan_in),
        a norm's gain 1 and shift 0."""
        gen = torch.Generator().manual_seed(seed)
        rows = []
        for layer in self._layers():
            if isinstance(layer, nn.GroupNorm):
                c = layer.num_channels
                rows.append(torch.cat([torch.ones(count, c, dtype=torch.float64), torch.zeros(count, c, dtype=torch.float64)], dim=1))
                continue
            bound = 1.0 / math.sqrt(layer.weight[0].numel())          # fan_in
            size = layer.weight.numel() + layer.bias.numel()
            rows.append((torch.rand(count, size, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
        return torch.cat(rows, dim=1).to(device=self.lo.device, dtype=self.dtype)

    def network_text(self) -> str:
        widths = [self.module.layers[0].in_features] + [layer.out_features for layer in self.module.layers]
        return (f"FNN {' -> '.join(map(str, widths))} ({self.n_params} parameters), box "
                f"+-{', +-'.join(f'{h:.4g}' for h in self.group_half_width.tolist())} per layer")

    def plain_cvs(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """For the benchmark's plain loop: x, y of one nn.Module (differentiable when grad is on)."""
        out = module(self.inputs_t.t())                        # (P, d_out)
        x, y, _ = self._cvs_from_outputs(out.t().unsqueeze(0))
        return x[0], y[0]


class ClassificationTask(NetworkTask):
    """x = ln cross-entropy on train; y = hard test accuracy (wlmc) or the smoothed accuracy A_s =
    mean sigmoid(k (correct - largest wrong logit)) (wlmd: y must be differentiable), through
    ``_y_transform``. Under wlmd the hard accuracy is recorded beside y. Subclasses set
    ``labels_train``, ``labels_test``, ``n_train``, ``smooth_k`` and ``_points``."""

    labels_train: torch.Tensor
    labels_test: torch.Tensor
    n_train: int
    smooth_k: float | None

    def _points(self, part: slice) -> torch.Tensor:
        """The inputs of points `part` in the layout the forward takes."""
        return self.inputs_t[:, part]

    def _y_transform(self, accuracy_values: torch.Tensor) -> torch.Tensor:
        return accuracy_values

    def _cvs_from_outputs(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        n = self.n_train
        x = torch.log(cross_entropy(out[..., :n], self.labels_train))
        test = out[..., n:]
        if self.smooth_k is None:
            return x, self._y_transform(accuracy(test, self.labels_test)), None
        hard = accuracy(test.detach(), self.labels_test)
        return x, self._y_transform(smooth_accuracy(test, self.labels_test, self.smooth_k)), hard

    def hard_test_accuracy(self, walkers: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return accuracy(self.forward(walkers, self._points(slice(self.n_train, None))), self.labels_test)

    def train_point_losses(self, walkers: torch.Tensor) -> torch.Tensor:
        logits = self.forward(walkers, self._points(slice(0, self.n_train)))
        return cross_entropy_points(logits, self.labels_train)


class RegressionTask(NetworkTask):
    """An FNN d -> ... -> 1 with mean squared error; x = ln L_train, y = ln L_test. Subclasses set
    the points: ``_build`` with inputs (P, d), training points first, ``targets`` (P,) and ``n_train``."""

    y_label = "ln L_test"
    n_train: int
    targets: torch.Tensor

    def _squared_errors(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (out[:, 0] - targets).square()                                       # (B, P)

    def _cvs_from_outputs(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        n = self.n_train
        se = self._squared_errors(out, self.targets)
        return torch.log(se[:, :n].mean(dim=1)), torch.log(se[:, n:].mean(dim=1)), None

    def train_point_losses(self, walkers: torch.Tensor) -> torch.Tensor:
        out = self.forward(walkers, self.inputs_t[:, : self.n_train])
        return self._squared_errors(out, self.targets[: self.n_train])

    def y_of(self, walkers: torch.Tensor) -> torch.Tensor:
        out = self.forward(walkers, self.inputs_t[:, self.n_train:])
        return torch.log(self._squared_errors(out, self.targets[self.n_train:]).mean(dim=1))


class TaskError(ValueError):
    """A custom task does not keep the Task contract (shapes, dtypes, finiteness)."""


TaskFactory = Callable[[torch.device], Task]


def validate_task(task: Task, device: torch.device, md: bool = False, batch: int = 3) -> None:
    """Check a custom task against the contract on a few walkers uniform in its box; TaskError
    naming what is wrong."""
    if not isinstance(task, Task):
        raise TaskError(f"the task factory returned {type(task).__name__}, not a rewl.Task")
    name = getattr(task, "name", type(task).__name__)
    for attr in ("lo", "hi", "group", "group_names", "group_half_width", "dtype", "n_params"):
        if not hasattr(task, attr):
            raise TaskError(f"task {name!r} has no {attr}: call self.set_box(name, lo, hi, groups) in its __init__")
    if task.lo.device.type != device.type:
        raise TaskError(f"task {name!r}: its box is on {task.lo.device}, the rank computes on {device}")
    gen = torch.Generator(device=device).manual_seed(0)
    walkers = task.sample_uniform(batch, gen)

    def check(what: str, value: object) -> None:
        if not isinstance(value, torch.Tensor) or value.shape != (batch,):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise TaskError(f"task {name!r}: {what} must be a tensor of shape (B,) = ({batch},) for walkers ({batch}, "
                            f"{task.n_params}), got {shape}")
        if not value.dtype.is_floating_point:
            raise TaskError(f"task {name!r}: {what} must be floating point, got {value.dtype}")
    with torch.no_grad():
        x, y = task.cvs(walkers)
    check("cvs()[0] (x)", x)
    check("cvs()[1] (y)", y)
    p = walkers.clone().requires_grad_(True)
    with torch.enable_grad():
        x_d = task.x_of(p)
        check("x_of()", x_d)
        if not x_d.requires_grad:
            raise TaskError(f"task {name!r}: x_of() must be differentiable in the walkers (the drive into windows "
                            "follows its gradient)")
        if md:
            x_md, y_md, _ = task.md_cvs(p)
            check("md_cvs()[0]", x_md)
            check("md_cvs()[1]", y_md)
            if not (x_md.requires_grad and y_md.requires_grad):
                raise TaskError(f"task {name!r}: WLMD needs x and y of md_cvs() differentiable in the walkers")
