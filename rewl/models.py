"""Networks and their batched forward over many weight vectors ("walkers") at once.

A walker is one flat parameter vector in the order of ``module.parameters()``. The batched
forward maps walkers (B, n_params) and shared inputs, transposed to (d_in, P), to outputs
(B, C, P): points last, so per-walker weights act on contiguous rows of points.
A new kind of network plugs in with its own batched forward of the same signature (see
``batched_forward``) and a test against the plain module.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu, "tanh": torch.tanh, "silu": nn.functional.silu,
}


class FNN(nn.Module):
    """Fully connected network d_in -> hidden... -> d_out with one activation between layers."""

    def __init__(self, d_in: int, hidden: tuple[int, ...], d_out: int, activation: str = "relu"):
        super().__init__()
        widths = (d_in, *hidden, d_out)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activation = activation

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (P, d_in) -> outputs (P, d_out)."""
        act = ACTIVATIONS[self.activation]
        h = inputs
        for k, layer in enumerate(self.layers):
            h = layer(h)
            if k < len(self.layers) - 1:
                h = act(h)
        return h


@dataclass(frozen=True)
class ParamSlice:
    """Where one named parameter tensor lives inside a flat walker vector."""

    name: str
    shape: tuple[int, ...]
    offset: int
    group: int            # layer index: move sizes and weight boxes are set per group

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def param_layout(module: nn.Module) -> list[ParamSlice]:
    """Flat layout of ``module.named_parameters()``; the group is the index of the owning
    submodule among modules that hold parameters directly (for FNN: the layer)."""
    owners: dict[str, int] = {}
    out, offset = [], 0
    for name, p in module.named_parameters():
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        group = owners.setdefault(owner, len(owners))
        out.append(ParamSlice(name, tuple(p.shape), offset, group))
        offset += p.numel()
    return out


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class MLPForward:
    """Fast batched forward of an FNN: h_{k+1} = act(W_k h_k + b_k) with h of shape (B, width, P).

    Two formulations of the same arithmetic: one ``baddbmm`` per layer (fastest eagerly), and
    broadcast multiply-adds over the input width (``broadcast=True``), which torch.compile fuses
    into a few loops and which then runs about 1.3x faster than the eager bmm on one core. The
    multiply-adds unroll over the input width, so layers wider than BROADCAST_MAX_IN keep the bmm:
    the house-prices net (331 inputs) compiled with every layer unrolled ran 5.6x slower than eager.
    """

    BROADCAST_MAX_IN = 32

    def __init__(self, module: FNN, broadcast: bool = False):
        self.act = ACTIVATIONS[module.activation]
        self.broadcast = broadcast
        self.slices = []      # (w_offset, out, in, b_offset) per layer
        layout = {s.name: s for s in param_layout(module)}
        for k, layer in enumerate(module.layers):
            w, b = layout[f"layers.{k}.weight"], layout[f"layers.{k}.bias"]
            self.slices.append((w.offset, layer.out_features, layer.in_features, b.offset))
        # weight, bias, weight, bias ... back to back in a walker: one split gives every block, and
        # its backward is one concatenation (slicing each block would zero-fill a full-size
        # gradient per block)
        self.sizes = [s.size for s in param_layout(module)]
        assert all(b_off == w_off + o * i for w_off, o, i, b_off in self.slices)

    def __call__(self, walkers: torch.Tensor, inputs_t: torch.Tensor) -> torch.Tensor:
        """walkers (B, n_params), inputs_t (d_in, P) (inputs transposed) -> outputs (B, d_out, P)."""
        batch = walkers.shape[0]
        h = inputs_t.unsqueeze(0)
        last = len(self.slices) - 1
        blocks = walkers.split(self.sizes, dim=1)
        for k, (_, d_out, d_in, _) in enumerate(self.slices):
            weight = blocks[2 * k].reshape(batch, d_out, d_in)
            bias = blocks[2 * k + 1].unsqueeze(-1)
            if self.broadcast and d_in <= self.BROADCAST_MAX_IN:
                z = bias
                for j in range(d_in):
                    z = z + weight[:, :, j:j + 1] * h[:, j:j + 1, :]
                h = z
            elif k == 0:
                # the inputs are shared by all walkers: one GEMM (B d_out, d_in) @ (d_in, P), whose
                # backward is one GEMM too, instead of B tiny matrix products
                h = torch.matmul(weight, h[0]) + bias
            else:
                h = torch.baddbmm(bias, weight, h.expand(batch, *h.shape[1:]))
            if k < last:
                h = self.act(h)
        return h


def batched_forward(module: FNN, for_compile: bool = False) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The batched forward of `module`; `for_compile` picks the formulation that is fastest once
    wrapped in torch.compile."""
    return MLPForward(module, broadcast=for_compile)


# (stride, padding) of the five 3x3 convolutions of the MNIST net: 28 -> 26 -> 12 -> 5 -> 3 -> 3,
# so 2 channels x 3 x 3 = 18 features reach the linear layer (the reference's 18 -> 10)
CNN_CONVS = ((1, 0), (2, 0), (2, 0), (1, 0), (1, 1))


class SmallCNN(nn.Module):
    """The reference's MNIST net: five 3x3 convolutions with `channels` channels (1 input channel),
    each followed by the activation, then a linear layer to 10 classes. channels = 2: 362 parameters."""

    def __init__(self, channels: int = 2, activation: str = "relu", side: int = 28):
        super().__init__()
        c = channels
        self.convs = nn.ModuleList(nn.Conv2d(1 if k == 0 else c, c, 3, stride=s, padding=p)
                                   for k, (s, p) in enumerate(CNN_CONVS))
        for s, p in CNN_CONVS:
            side = (side + 2 * p - 3) // s + 1
        self.linear = nn.Linear(c * side * side, 10)
        self.activation = activation

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (P, 1, H, W) -> logits (P, 10)."""
        act = ACTIVATIONS[self.activation]
        h = images
        for conv in self.convs:
            h = act(conv(h))
        return self.linear(h.flatten(1))


class CNNForward:
    """Batched forward of SmallCNN: all walkers of a rank in one grouped convolution per layer.

    The walkers are the groups: after the first layer (shared images, one ordinary convolution with
    B x C output channels) the activations are (P, B x C, H, W) and layer k is ``conv2d(...,
    groups=B)`` with the walkers' kernels stacked as (B x C, C, 3, 3). The linear layer is one
    batched product. Output (B, 10, P), points last like the FNN's.
    """

    def __init__(self, module: SmallCNN):
        self.act = ACTIVATIONS[module.activation]
        self.channels = module.convs[0].out_channels
        self.sizes = [s.size for s in param_layout(module)]
        self.features = module.linear.in_features

    def __call__(self, walkers: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """walkers (B, n_params), images (P, 1, H, W) -> logits (B, 10, P)."""
        batch, c = walkers.shape[0], self.channels
        blocks = walkers.split(self.sizes, dim=1)
        h = images
        for k, (stride, padding) in enumerate(CNN_CONVS):
            c_in = 1 if k == 0 else c
            weight = blocks[2 * k].reshape(batch * c, c_in, 3, 3)
            bias = blocks[2 * k + 1].reshape(batch * c)
            h = nn.functional.conv2d(h, weight, bias, stride=stride, padding=padding, groups=1 if k == 0 else batch)
            h = self.act(h)
        h = h.reshape(h.shape[0], batch, self.features)                      # (P, B, C x H x W)
        weight = blocks[-2].reshape(batch, 10, self.features)
        bias = blocks[-1].reshape(batch, 10, 1)
        return torch.einsum("bof,pbf->bop", weight, h) + bias


# strides of the stem and of the four residual blocks of the CIFAR-10 net: 32 -> 16 -> 16 -> 8 -> 4 -> 2
RESNET_STRIDES = (2, 1, 2, 2, 2)


class ResNet10(nn.Module):
    """The CIFAR-10 ResNet: 10 layers with weights (a 3x3 stem convolution, four basic residual
    blocks of two 3x3 convolutions, a linear layer), all `width` channels wide, each convolution
    followed by a LayerNorm over (channels, height, width) with one gain and shift per channel
    (``GroupNorm(1, width)``). A block is conv - norm - act - conv - norm, plus its input (taken at
    every `stride`-th pixel where the block strides: a shortcut without parameters), then act. Global
    average pooling feeds the linear layer. width = 24: 43,018 parameters (the reference's 43,604 is
    not reached by any uniform-width design of this kind; docs/tasks.md).

    ``layers`` holds the parameter-carrying modules in forward order (conv, norm, conv, norm, ...,
    linear): that order is the walker layout."""

    def __init__(self, width: int = 24, activation: str = "relu", in_channels: int = 3, classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        for k in range(1 + 2 * (len(RESNET_STRIDES) - 1)):
            # convolution 0 is the stem; block b = 1..4 holds convolutions 2b - 1 (which strides) and 2b
            stride = RESNET_STRIDES[(k + 1) // 2] if k == 0 or k % 2 == 1 else 1
            layers += [nn.Conv2d(in_channels if k == 0 else width, width, 3, stride=stride, padding=1),
                       nn.GroupNorm(1, width)]
        layers.append(nn.Linear(width, classes))
        self.layers = nn.ModuleList(layers)
        self.activation = activation

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (P, C, H, W) -> logits (P, classes)."""
        act = ACTIVATIONS[self.activation]
        convs, norms = self.layers[0:-1:2], self.layers[1:-1:2]
        h = act(norms[0](convs[0](images)))
        for k in range(1, len(convs), 2):
            shortcut = h[:, :, ::convs[k].stride[0], ::convs[k].stride[1]]
            z = act(norms[k](convs[k](h)))
            h = act(norms[k + 1](convs[k + 1](z)) + shortcut)
        return self.layers[-1](h.mean(dim=(2, 3)))


class ResNetForward:
    """Batched forward of ResNet10, walkers as the groups of grouped convolutions (as CNNForward):
    activations (P, B x C, H, W). The LayerNorm of walker b and image p normalises its own C x H x W
    block; the linear layer is one batched product. Output (B, classes, P)."""

    def __init__(self, module: ResNet10):
        self.act = ACTIVATIONS[module.activation]
        self.width = module.layers[0].out_channels
        self.in_channels = module.layers[0].in_channels
        self.strides = [layer.stride[0] for layer in module.layers[0:-1:2]]
        self.eps = module.layers[1].eps
        self.classes = module.layers[-1].out_features
        self.sizes = [s.size for s in param_layout(module)]

    def _norm(self, h: torch.Tensor, gain: torch.Tensor, shift: torch.Tensor, batch: int) -> torch.Tensor:
        """h (P, B x C, H, W); gain, shift (B, C). Walker b's LayerNorm is group b of a GroupNorm with
        B groups: one native kernel for all walkers."""
        return nn.functional.group_norm(h, batch, gain.reshape(-1), shift.reshape(-1), self.eps)

    def __call__(self, walkers: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """walkers (B, n_params), images (P, C_in, H, W) -> logits (B, classes, P)."""
        batch, c = walkers.shape[0], self.width
        blocks = walkers.split(self.sizes, dim=1)     # conv w, conv b, norm gain, norm shift per layer, then linear

        def conv_norm(h: torch.Tensor, k: int) -> torch.Tensor:
            c_in = self.in_channels if k == 0 else c
            weight = blocks[4 * k].reshape(batch * c, c_in, 3, 3)
            bias = blocks[4 * k + 1].reshape(batch * c)
            h = nn.functional.conv2d(h, weight, bias, stride=self.strides[k], padding=1, groups=1 if k == 0 else batch)
            return self._norm(h, blocks[4 * k + 2].reshape(batch, c), blocks[4 * k + 3].reshape(batch, c), batch)

        h = self.act(conv_norm(images, 0))
        for k in range(1, len(self.strides), 2):
            shortcut = h[:, :, ::self.strides[k], ::self.strides[k]]
            z = self.act(conv_norm(h, k))
            h = self.act(conv_norm(z, k + 1) + shortcut)
        pooled = h.mean(dim=(2, 3)).reshape(h.shape[0], batch, c)          # (P, B, C)
        weight = blocks[-2].reshape(batch, self.classes, c)
        bias = blocks[-1].reshape(batch, self.classes, 1)
        return torch.einsum("boc,pbc->bop", weight, pooled) + bias
