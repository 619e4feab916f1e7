"""Your own network on your own tensors: an nn.Sequential classifying two interleaved half-moons.

    mpiexec -n 2 python examples/mlp_classification.py            # the run (2 windows, 2 ranks)
    python examples/mlp_classification.py check                   # what it would run
    python examples/mlp_classification.py scout                   # where its loss lives: a [grid.x]
    rewl analyse report runs/mlp_classification                   # the landscape's numbers

Replace the data and the model with yours; the deck (mlp_classification.toml) holds the grid,
the windows and the schedule. The script takes `rewl run`'s options (--set, --resume, --force ...).
"""
from pathlib import Path

import numpy as np
from torch import nn

import rewl


def two_moons(points: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles: inputs (points, 2) float32, labels (points,) 0 or 1."""
    labels = rng.integers(0, 2, points)
    angle = rng.uniform(0.0, np.pi, points)
    xy = np.stack([np.cos(angle) + labels, np.sin(angle) * (1 - 2 * labels) + 0.5 * labels], axis=1)
    return (xy + noise * rng.standard_normal(xy.shape)).astype(np.float32), labels


rng = np.random.default_rng(0)
train = two_moons(40, 0.2, rng)
test = two_moons(200, 0.2, rng)
model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))     # 42 parameters
task = rewl.ModuleTask(model, train=train, test=test, loss="cross_entropy", y="accuracy")

deck = Path(__file__).with_suffix(".toml")
raise SystemExit(rewl.run(deck, task=task))     # on every rank
