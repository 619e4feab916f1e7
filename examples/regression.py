"""Regression with your own module and a loss of your own: an MLP 1 -> 16 -> 1 fitting a noisy sine,
x = ln of the mean squared error on the training points, y = ln of it on the test points, sampled
by Wang-Landau Hamiltonian Monte Carlo (gradients through torch.func).

    mpiexec -n 2 python examples/regression.py
    rewl analyse report runs/regression
"""
from pathlib import Path

import torch
from torch import nn

import rewl

gen = torch.Generator().manual_seed(0)


def noisy_sine(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (points, 1) in [-3, 3] and targets (points,) = sin(input) + noise."""
    inputs = 6 * torch.rand(points, 1, generator=gen) - 3
    return inputs, torch.sin(inputs[:, 0]) + 0.1 * torch.randn(points, generator=gen)


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One model's outputs (P, 1) and targets (P,) -> the loss of each point (P,). Any per-point
    function of PyTorch operations works here (it is batched over walkers by torch.func.vmap)."""
    return (outputs[:, 0] - targets).square()


model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))   # 49 parameters
task = rewl.ModuleTask(model, train=noisy_sine(30), test=noisy_sine(200), loss=squared_error, y="test_loss")

raise SystemExit(rewl.run(Path(__file__).with_suffix(".toml"), task=task))
