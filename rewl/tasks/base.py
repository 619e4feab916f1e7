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
from ..errors import UserError
from ..models import FNN, batched_forward, n_params, param_layout
from ..observables import correct_points, cross_entropy_points, smooth_accuracy_points


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
    deck's), batched forward, the standard initialisation for baselines. Subclasses sum their
    outputs over points into totals (``_output_totals``) and turn the totals into the CVs
    (``_cvs_from_totals``).

    ``[model] chunk_points`` = m > 0 evaluates the points m at a time (``_totals``): with gradients
    on, each chunk's backward runs right after its forward and only its per-walker gradients are
    kept (``ChunkedTotals``), so a step holds one chunk's activations instead of all points' -- the
    memory of the CNNs' steps -- for the same arithmetic."""

    n_train: int
    n_points: int             # training points first, then test points
    chunk_points: int = 0

    def _build(self, cfg: Config, device: torch.device, d_in: int, d_out: int, inputs: np.ndarray) -> None:
        """inputs (P, d_in): training points first, then test points."""
        m = cfg.model
        self.dtype = getattr(torch, m.dtype)
        self.inputs_t = torch.tensor(inputs, dtype=self.dtype, device=device).t().contiguous()   # (d_in, P)
        self.n_points = len(inputs)
        module = FNN(d_in, m.hidden, d_out, m.activation).to(device=device, dtype=self.dtype)
        fan_outs = [layer.out_features for layer in module.layers]
        half = m.box if m.box is not None else tuple(2.0 / math.sqrt(f) for f in fan_outs)
        self._attach(module, batched_forward(module, for_compile=m.compile),
                     [f"layer{k}" for k in range(len(fan_outs))], half, m.compile, m.chunk_points)

    def _attach(self, module: nn.Module, forward: Callable, group_names: list[str],
                half_widths: tuple[float, ...] | list[float], compile_: bool, chunk_points: int) -> None:
        """Take `module` (on its device and dtype) and its batched `forward`; one parameter group per
        layer (``param_layout``), box +-half_widths[k] for layer k; `compile_` torch.compiles the CVs,
        `chunk_points` > 0 evaluates the points that many at a time."""
        self.module, self.forward = module, forward
        self.chunk_points = chunk_points
        # dynamic=False: one batch size per rank, so one specialised kernel; the MD path and the
        # training loss alone (HMC's leapfrog, the drive into the window) compile forward and backward
        # together (AOTAutograd: HMC's step 2.1x faster, docs/performance.md)
        self._cvs = torch.compile(self._cvs_eager, dynamic=False) if compile_ else self._cvs_eager
        self._md = torch.compile(self._md_eager, dynamic=False) if compile_ else self._md_eager
        self._x = torch.compile(self._x_eager, dynamic=False) if compile_ else self._x_eager
        self.n_params = n_params(module)
        device = next(module.parameters()).device
        self.group_names = group_names
        self.group = torch.cat([torch.full((s.size,), s.group, dtype=torch.long) for s in param_layout(module)]).to(device)
        self.group_half_width = torch.tensor(half_widths, dtype=self.dtype, device=device)
        self.hi = self.group_half_width[self.group]
        self.lo = -self.hi

    @property
    def n_test(self) -> int:
        return self.n_points - self.n_train

    def _layers(self) -> list[nn.Module]:
        """The layers holding parameters, in walker order."""
        return list(self.module.layers)

    def _points(self, part: slice) -> torch.Tensor:
        """The inputs of points `part` in the layout the forward takes."""
        return self.inputs_t[:, part]

    def _output_totals(self, out: torch.Tensor, part: slice) -> torch.Tensor:
        """outputs (B, d_out, p) of the points `part` (start:stop, p of them) -> their sums (B, k):
        the quantities the CVs average, each summed over the part's training or test points."""
        raise NotImplementedError

    def _cvs_from_totals(self, totals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """totals (B, k) of all points -> x, y, hard test accuracy (or None): (B,) each."""
        raise NotImplementedError

    def _part_totals(self, walkers: torch.Tensor, part: slice) -> torch.Tensor:
        return self._output_totals(self.forward(walkers, self._points(part)), part)

    def _grad_columns(self, train: bool) -> tuple[int, ...]:
        """The columns of ``_output_totals`` that depend differentiably on the walkers over the
        training points (`train`) or over the test points."""
        raise NotImplementedError

    def _totals(self, walkers: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """``_output_totals`` of points start:stop: (B, k); with ``chunk_points`` = m > 0, summed over
        chunks of at most m training or m test points (``ChunkedTotals`` where gradients are on)."""
        if not self.chunk_points:
            return self._part_totals(walkers, slice(start, stop))
        n, m = self.n_train, self.chunk_points
        parts = [slice(a, min(a + m, hi)) for lo, hi in ((start, min(stop, n)), (max(start, n), stop)) for a in range(lo, hi, m)]
        if torch.is_grad_enabled() and walkers.requires_grad:
            return ChunkedTotals.apply(walkers, self, parts)
        return sum(self._part_totals(walkers, part) for part in parts)

    def _cvs_eager(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = self._cvs_from_totals(self._totals(walkers, 0, self.n_points))
        return x, y

    def _md_eager(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return self._cvs_from_totals(self._totals(walkers, 0, self.n_points))

    def cvs(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cvs(walkers)

    def md_cvs(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return self._md(walkers)

    def _x_eager(self, walkers: torch.Tensor) -> torch.Tensor:
        return torch.log(self._totals(walkers, 0, self.n_train)[:, 0] / self.n_train)

    def x_of(self, walkers: torch.Tensor) -> torch.Tensor:
        return self._x(walkers)

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
        out = module(self._points(slice(None)).t())                        # (P, d_out)
        x, y, _ = self._cvs_from_totals(self._output_totals(out.t().unsqueeze(0), slice(0, self.n_points)))
        return x[0], y[0]


class ClassificationTask(NetworkTask):
    """x = ln cross-entropy on train; y = hard test accuracy (wlmc) or the smoothed accuracy A_s =
    mean sigmoid(k (correct - largest wrong logit)) (wlmd: y must be differentiable), through
    ``_y_transform``. Under wlmd the hard accuracy is recorded beside y. Subclasses set
    ``labels_train``, ``labels_test``, ``n_train``, ``n_points``, ``smooth_k`` and ``_points``."""

    labels_train: torch.Tensor
    labels_test: torch.Tensor
    smooth_k: float | None

    def _y_transform(self, accuracy_values: torch.Tensor) -> torch.Tensor:
        return accuracy_values

    def _output_totals(self, out: torch.Tensor, part: slice) -> torch.Tensor:
        """Per walker (B, 3): the cross-entropy summed over the part's training points, y's accuracy
        (smooth under wlmd, else hard) and the hard accuracy summed over its test points."""
        n, start, stop = self.n_train, part.start, part.stop
        k = max(0, min(stop, n) - start)                   # the part's first k points are training points
        train, test = out[..., :k], out[..., k:]
        labels_test = self.labels_test[max(start, n) - n: max(stop, n) - n]
        ce = cross_entropy_points(train, self.labels_train[start:start + k]).sum(dim=1)
        hard = correct_points(test.detach(), labels_test).sum(dim=1)
        soft = hard if self.smooth_k is None else smooth_accuracy_points(test, labels_test, self.smooth_k).sum(dim=1)
        return torch.stack([ce, soft, hard], dim=1)

    def _grad_columns(self, train: bool) -> tuple[int, ...]:
        return (0,) if train else (1,) if self.smooth_k is not None else ()

    def _cvs_from_totals(self, totals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x = torch.log(totals[:, 0] / self.n_train)
        y = self._y_transform(totals[:, 1] / self.n_test)
        return x, y, None if self.smooth_k is None else totals[:, 2].detach() / self.n_test

    def hard_test_accuracy(self, walkers: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._totals(walkers.detach(), self.n_train, self.n_points)[:, 2] / self.n_test

    def train_point_losses(self, walkers: torch.Tensor) -> torch.Tensor:
        logits = self.forward(walkers, self._points(slice(0, self.n_train)))
        return cross_entropy_points(logits, self.labels_train)


class RegressionTask(NetworkTask):
    """An FNN d -> ... -> 1 with mean squared error; x = ln L_train, y = ln L_test. Subclasses set
    the points: ``_build`` with inputs (P, d), training points first, ``targets`` (P,) and ``n_train``."""

    y_label = "ln L_test"
    targets: torch.Tensor

    def _squared_errors(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (out[:, 0] - targets).square()                                       # (B, P)

    def _output_totals(self, out: torch.Tensor, part: slice) -> torch.Tensor:
        """Per walker (B, 2): the squared errors summed over the part's training and test points."""
        se = self._squared_errors(out, self.targets[part])
        k = max(0, min(part.stop, self.n_train) - part.start)
        return torch.stack([se[:, :k].sum(dim=1), se[:, k:].sum(dim=1)], dim=1)

    def _grad_columns(self, train: bool) -> tuple[int, ...]:
        return (0,) if train else (1,)

    def _cvs_from_totals(self, totals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        return torch.log(totals[:, 0] / self.n_train), torch.log(totals[:, 1] / self.n_test), None

    def train_point_losses(self, walkers: torch.Tensor) -> torch.Tensor:
        out = self.forward(walkers, self._points(slice(0, self.n_train)))
        return self._squared_errors(out, self.targets[: self.n_train])

    def y_of(self, walkers: torch.Tensor) -> torch.Tensor:
        return torch.log(self._totals(walkers, self.n_train, self.n_points)[:, 1] / self.n_test)


class ChunkedTotals(torch.autograd.Function):
    """A network task's totals (B, k) over chunks of points (slices, each all training or all test
    points), differentiable in the walkers (B, n_params) without keeping any chunk's activations:
    the forward runs each chunk's forward and backward at once and accumulates the per-walker
    gradients of the totals' differentiable columns, J_c (B, n_params) (a walker's totals depend
    on its own row only, so the gradient of a column's sum over walkers is every walker's own);
    the backward is sum_c grad_c J_c. Same arithmetic as one pass over all points; the memory
    of one chunk's activations plus one (B, n_params) array per differentiable column."""

    @staticmethod
    def forward(ctx, walkers: torch.Tensor, task: NetworkTask, parts: list[slice]) -> torch.Tensor:
        jacobians: dict[int, torch.Tensor] = {}
        total = None
        for part in parts:
            w = walkers.detach().requires_grad_(True)
            with torch.enable_grad():
                sums = task._part_totals(w, part)
                columns = task._grad_columns(part.start < task.n_train)
                for i, c in enumerate(columns):
                    grad, = torch.autograd.grad(sums[:, c].sum(), w, retain_graph=i < len(columns) - 1)
                    jacobians[c] = grad if c not in jacobians else jacobians[c].add_(grad)
            sums = sums.detach()
            total = sums if total is None else total + sums
        ctx.columns = sorted(jacobians)
        ctx.save_for_backward(*(jacobians[c] for c in ctx.columns))
        return total

    @staticmethod
    def backward(ctx, grad_totals: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = None
        for c, jacobian in zip(ctx.columns, ctx.saved_tensors):
            term = grad_totals[:, c:c + 1] * jacobian
            grad = term if grad is None else grad + term
        return grad, None, None


class TaskError(UserError, ValueError):
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
