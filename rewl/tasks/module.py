"""Any PyTorch model as a task: ``ModuleTask`` takes an ``nn.Module`` and its data, flattens the
module's parameters into the walker vector and evaluates all walkers of a rank at once with
``torch.func.vmap`` over ``torch.func.functional_call`` (PyTorch's model-ensembling recipe), gradients
included. docs/tasks.md, "Any nn.Module"."""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from ..models import n_params, param_layout
from .base import NetworkTask, TaskError

# per-point functions of one model's outputs (P, ...) and targets (P, ...) -> (P,)
PointFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_points(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (P, C) against class indices (P,): (P,)."""
    return nn.functional.cross_entropy(outputs, targets, reduction="none")


def squared_error_points(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Squared error of outputs (P, ...) against targets of as many values, averaged over a
    point's outputs: (P,)."""
    return (outputs - targets.reshape(outputs.shape)).square().reshape(len(outputs), -1).mean(dim=1)


def correct_points(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 where the largest logit of (P, C) is the target class (P,), else 0: (P,), no gradient."""
    return (outputs.detach().argmax(dim=1) == targets).to(outputs.dtype)


LOSSES: dict[str, PointFunction] = {"cross_entropy": cross_entropy_points, "mse": squared_error_points}
Y_KINDS = ("accuracy", "test_loss")
# a point's data: a tensor or array (P, ...), or a torch Dataset of (input, target) pairs
Data = tuple[Any, Any] | torch.utils.data.Dataset


class ModuleTask(NetworkTask):
    """Your ``nn.Module`` and data as a task; walkers are the module's parameters, flattened in the
    order of ``named_parameters()``, one group per submodule that holds parameters (named after it).

    - ``train``, ``test``: (inputs, targets) as tensors or arrays with the points first, or a torch
      ``Dataset`` of (input, target) pairs (stacked once).
    - ``loss``: ``"cross_entropy"`` (logits (P, C), class indices), ``"mse"``, or a function of one
      model's outputs (P, ...) and targets returning the loss of each point (P,); x = ln of its mean
      over the training points.
    - ``y``: ``"accuracy"`` (the hard test accuracy; the default for cross_entropy), ``"test_loss"``
      (ln of the loss's mean over the test points; the default otherwise), or a function of outputs
      and targets giving one value per point (P,), averaged over the test points (label ``y_label``).
    - ``box``: the half-width of the weight box: one number, one per group (a sequence in group
      order, or a dict by group name); default +-2/sqrt(fan_out) per group as the reference
      (fan_out: a linear layer's outputs, a convolution's output channels x kernel size, 1 for a
      norm's gain and shift).
    - ``dtype`` (default the module's), ``chunk_points`` (points per forward pass, 0 all),
      ``compile`` (torch.compile the CVs), ``device``.

    A ModuleTask is its own task factory: ``rewl.run(deck, task=ModuleTask(...))`` calls it with each
    rank's device and gets a copy there. Modules whose output is not a function of parameters and
    inputs alone are refused, naming the layer: dropout or batch norm in training mode (call
    ``model.eval()``), batch norm without running statistics, buffers changed by the forward.
    """

    def __init__(self, model: nn.Module, train: Data, test: Data, loss: str | PointFunction = "cross_entropy",
                 y: str | PointFunction | None = None, box: float | Sequence[float] | dict[str, float] | None = None,
                 *, y_label: str | None = None, name: str | None = None, dtype: torch.dtype | None = None,
                 chunk_points: int = 0, compile: bool = False, device: str | torch.device = "cpu"):
        self._args = dict(model=model, train=train, test=test, loss=loss, y=y, box=box, y_label=y_label, name=name,
                          dtype=dtype, chunk_points=chunk_points, compile=compile)
        if not isinstance(model, nn.Module):
            raise TaskError(f"ModuleTask: model must be a torch.nn.Module, got {type(model).__name__}")
        self.name = name or type(model).__name__
        _refuse_impure_layers(self.name, model)
        if n_params(model) == 0:
            raise TaskError(f"task {self.name!r}: the module has no parameters to sample")
        device = torch.device(device)
        self.dtype = dtype or next(model.parameters()).dtype
        if not self.dtype.is_floating_point:
            raise TaskError(f"task {self.name!r}: dtype must be floating point, got {self.dtype}")
        module = copy.deepcopy(model).to(device=device, dtype=self.dtype)   # its own parameters: bench's plain loop
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        if isinstance(loss, str) and loss not in LOSSES:
            raise TaskError(f"task {self.name!r}: loss must be one of {sorted(LOSSES)} or a function "
                            f"(outputs, targets) -> (P,), got {loss!r}")
        self.loss_points = LOSSES[loss] if isinstance(loss, str) else loss
        classes = loss == "cross_entropy"
        y = y if y is not None else "accuracy" if classes else "test_loss"
        if isinstance(y, str) and y not in Y_KINDS:
            raise TaskError(f"task {self.name!r}: y must be one of {list(Y_KINDS)} or a function (outputs, targets) "
                            f"-> (P,), got {y!r}")
        self.y_kind = y if isinstance(y, str) else "custom"
        self.y_points = {"accuracy": correct_points, "test_loss": self.loss_points}.get(self.y_kind, y)
        self.y_label = y_label or {"accuracy": "A_test", "test_loss": "ln L_test"}.get(self.y_kind, "y")
        inputs_train, targets_train = _points(self.name, "train", train)
        inputs_test, targets_test = _points(self.name, "test", test)
        self.n_train = len(inputs_train)
        self.inputs = torch.cat([inputs_train, inputs_test]).to(device=device, dtype=self.dtype)     # (P, ...)
        self.n_points = len(self.inputs)
        targets = torch.cat([targets_train, targets_test]).to(device)
        if classes or self.y_kind == "accuracy":
            if targets.dtype.is_floating_point or targets.dtype == torch.bool:
                raise TaskError(f"task {self.name!r}: {loss if classes else 'accuracy'} needs class indices as "
                                f"targets (an integer tensor), got {targets.dtype}")
            targets = targets.long()
        else:
            targets = targets.to(self.dtype) if targets.dtype.is_floating_point else targets
        self.targets = targets
        layout = param_layout(module)
        self._names = [s.name for s in layout]
        self._shapes = [s.shape for s in layout]
        self._sizes = [s.size for s in layout]
        owners = list(dict.fromkeys(s.name.rsplit(".", 1)[0] if "." in s.name else "" for s in layout))
        group_names = [owner or "module" for owner in owners]
        half = _half_widths(self.name, box, module, owners, group_names)
        self._attach(module, self._vmapped_outputs, group_names, half, compile, chunk_points)
        self._check_targets()
        self._check_pure(device)

    def __call__(self, device: torch.device) -> ModuleTask:
        """The same task on `device` (a ModuleTask is its own factory: rewl.run calls it per rank)."""
        return ModuleTask(**self._args, device=device)

    # -- the batched evaluation ----------------------------------------------------------------
    def _parameters(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """One walker's flat vector (n_params,) as the module's named parameters."""
        return {n: t.view(shape) for n, t, shape in zip(self._names, flat.split(self._sizes), self._shapes)}

    def _vmapped_outputs(self, walkers: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """walkers (B, n_params), inputs (P, ...) -> outputs (B, P, ...)."""
        return vmap(lambda flat: functional_call(self.module, self._parameters(flat), (inputs,)))(walkers)

    def _model_totals(self, outputs: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
        """One model's outputs (P, ...) of points whose first k are training points -> (2,): the loss
        summed over those k and y's per-point values summed over the rest."""
        zero = outputs.new_zeros(())
        train = self.loss_points(outputs[:k], targets[:k]).sum() if k > 0 else zero
        test = self.y_points(outputs[k:], targets[k:]).sum() if k < len(outputs) else zero
        return torch.stack([train, test])

    def _part_totals(self, walkers: torch.Tensor, part: slice) -> torch.Tensor:
        k = max(0, min(part.stop, self.n_train) - part.start)
        targets = self.targets[part]
        outputs = self.forward(walkers, self.inputs[part])                              # (B, p, ...)
        return vmap(lambda out: self._model_totals(out, targets, k))(outputs)           # (B, 2)

    def _grad_columns(self, train: bool) -> tuple[int, ...]:
        return (0,) if train else () if self.y_kind == "accuracy" else (1,)

    def _cvs_from_totals(self, totals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x = torch.log(totals[:, 0] / self.n_train)
        y = totals[:, 1] / self.n_test
        return x, torch.log(y) if self.y_kind == "test_loss" else y, None

    def y_of(self, walkers: torch.Tensor) -> torch.Tensor | None:
        if self.y_kind == "accuracy":
            return None
        return self._cvs_from_totals(self._totals(walkers, 0, self.n_points))[1]

    def hard_test_accuracy(self, walkers: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        return y if self.y_kind == "accuracy" else None

    def train_point_losses(self, walkers: torch.Tensor) -> torch.Tensor:
        targets = self.targets[:self.n_train]
        outputs = self.forward(walkers, self.inputs[:self.n_train])                   # (B, P_train, ...)
        return vmap(lambda out: self.loss_points(out, targets))(outputs)              # (B, P_train)

    def plain_cvs(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        totals = self._model_totals(module(self.inputs), self.targets, self.n_train).unsqueeze(0)
        x, y, _ = self._cvs_from_totals(totals)
        return x[0], y[0]

    def initial_weights(self, count: int, seed: int) -> torch.Tensor:
        """`count` weight vectors from the module's own initialisation (``reset_parameters`` of every
        layer, torch's generator seeded with `seed`): (count, n_params)."""
        module = copy.deepcopy(self.module)
        rows = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(count):
                for layer in module.modules():
                    if hasattr(layer, "reset_parameters"):
                        layer.reset_parameters()
                rows.append(torch.cat([p.detach().reshape(-1) for p in module.parameters()]))
        return torch.stack(rows).to(dtype=self.dtype)

    # -- text -------------------------------------------------------------------------------------
    def network_text(self) -> str:
        boxes = ", ".join(f"{g} +-{h:.4g}" for g, h in zip(self.group_names, self.group_half_width.tolist()))
        return f"{type(self.module).__name__} ({self.n_params} parameters), box {boxes}"

    def describe(self) -> str:
        y = {"accuracy": "hard test accuracy", "test_loss": f"ln mean {self.loss_name} on test"}.get(self.y_kind, "y")
        return (f"{self.name}: {self.network_text()}; {self.n_train} train / {self.n_test} test points; "
                f"x = ln mean {self.loss_name} on train, y = {y}; batched by torch.func.vmap")

    # -- checks -----------------------------------------------------------------------------------
    def _check_targets(self) -> None:
        """The module's outputs on two points against what the loss and y need of the targets."""
        with torch.no_grad():
            out = self.module(self.inputs[:2])
        per_point = tuple(out.shape[1:])
        target_shape = tuple(self.targets.shape[1:])
        if self.targets.dtype == torch.long:
            if out.ndim != 2 or target_shape:
                raise TaskError(f"task {self.name!r}: class targets need logits (P, C) and one class index per "
                                f"point; the module gives {per_point} per point, the targets {target_shape or '()'}")
            bad = (self.targets < 0) | (self.targets >= out.shape[1])
            if bool(bad.any()):
                raise TaskError(f"task {self.name!r}: class index {int(self.targets[bad][0])} outside the module's "
                                f"{out.shape[1]} logits")
        elif self.loss_name == "mse" and math.prod(per_point) != math.prod(target_shape):
            raise TaskError(f"task {self.name!r}: mse compares each point's outputs {per_point} with its targets "
                            f"{target_shape or '()'}: they must hold as many values")

    def _check_pure(self, device: torch.device) -> None:
        """Evaluate two walkers: the module must run under vmap and leave its buffers as they were."""
        before = {n: b.clone() for n, b in self.module.named_buffers()}
        walkers = self.sample_uniform(2, torch.Generator(device=device).manual_seed(0))
        try:
            with torch.no_grad():
                self._cvs_eager(walkers)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise TaskError(f"task {self.name!r}: the module cannot be evaluated for many parameter sets at once "
                            f"(torch.func.vmap over functional_call, on the {self.n_points} points): {exc}. Its "
                            "forward must be a function of its parameters and inputs alone: no in-place changes "
                            "of buffers or attributes, no .item() or data-dependent Python branches") from exc
        for n, b in self.module.named_buffers():
            if not torch.equal(before[n], b):
                raise TaskError(f"task {self.name!r}: the forward changes buffer {n!r}; a sampled network must "
                                "not keep state between evaluations (call model.eval(), or remove that state)")


def _refuse_impure_layers(name: str, model: nn.Module) -> None:
    """TaskError naming the first layer whose output depends on more than parameters and inputs."""
    for path, layer in model.named_modules():
        what = f"task {name!r}: layer {path or '(the module itself)'!r} ({type(layer).__name__})"
        if isinstance(layer, nn.modules.dropout._DropoutNd) and layer.training and layer.p > 0:
            raise TaskError(f"{what} is in training mode and draws a new dropout mask at every evaluation, so the "
                            "loss of a walker would be random: call model.eval() before giving it to rewl")
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            if layer.training:
                raise TaskError(f"{what} is in training mode: it normalises by the statistics of the points "
                                "evaluated together and updates its running statistics. Call model.eval() (the "
                                "running statistics stay fixed) or use GroupNorm / LayerNorm")
            if layer.running_mean is None:
                raise TaskError(f"{what} keeps no running statistics (track_running_stats=False), so it normalises "
                                "by the points evaluated together; use GroupNorm / LayerNorm")


def _points(name: str, part: str, data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) tensors with the points first from a pair of tensors/arrays or a Dataset."""
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, tuple):
        try:
            pairs = [data[i] for i in range(len(data))]
            inputs = torch.stack([torch.as_tensor(p[0]) for p in pairs])
            targets = torch.stack([torch.as_tensor(p[1]) for p in pairs])
        except (TypeError, IndexError, RuntimeError) as exc:
            raise TaskError(f"task {name!r}: {part} must be a Dataset of (input, target) pairs of equal shapes: {exc}") from exc
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        inputs, targets = (torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v) for v in data)
    else:
        raise TaskError(f"task {name!r}: {part} must be (inputs, targets) or a torch Dataset, got {type(data).__name__}")
    if inputs.ndim == 0 or len(inputs) == 0 or targets.ndim == 0 or len(inputs) != len(targets):
        raise TaskError(f"task {name!r}: {part} needs as many targets as inputs, points first: got inputs "
                        f"{tuple(inputs.shape)} and targets {tuple(targets.shape)}")
    return inputs.detach(), targets.detach()


def _fan_out(layer: nn.Module) -> int:
    """The reference's fan_out of a layer's box: a linear layer's outputs, a convolution's output
    channels x kernel size, 1 for a norm (gain and shift), else the largest parameter's torch fan_out."""
    if isinstance(layer, nn.Linear):
        return layer.out_features
    if isinstance(layer, nn.modules.conv._ConvNd):
        return layer.out_channels * math.prod(layer.kernel_size)
    if isinstance(layer, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
        return 1
    weight = max(layer.parameters(recurse=False), key=lambda p: p.numel())
    return weight.shape[0] * math.prod(weight.shape[2:]) if weight.ndim >= 2 else 1


def _half_widths(name: str, box: float | Sequence[float] | dict[str, float] | None, module: nn.Module,
                 owners: list[str], group_names: list[str]) -> list[float]:
    """The box's half-width per group (owners: the submodule paths holding each group)."""
    if box is None:
        return [2.0 / math.sqrt(_fan_out(module.get_submodule(owner))) for owner in owners]
    if isinstance(box, dict):
        unknown = sorted(set(box) - set(group_names))
        missing = [g for g in group_names if g not in box]
        if unknown or missing:
            raise TaskError(f"task {name!r}: box names the groups {group_names}; "
                            + (f"unknown {unknown}" if unknown else f"missing {missing}"))
        half = [box[g] for g in group_names]
    elif isinstance(box, (int, float)):
        half = [float(box)] * len(group_names)
    else:
        half = list(box)
        if len(half) != len(group_names):
            raise TaskError(f"task {name!r}: box gives {len(half)} half-widths for the {len(group_names)} groups "
                            f"{group_names}")
    if not all(isinstance(h, (int, float)) and math.isfinite(h) and h > 0 for h in half):
        raise TaskError(f"task {name!r}: every box half-width must be a positive number, got {half}")
    return [float(h) for h in half]
