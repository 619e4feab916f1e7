"""A small CNN on images: horizontal against vertical bars in noisy 8 x 8 images (made here; put
your own image tensors (N, C, H, W) and labels in their place).

    mpiexec -n 2 python examples/cnn_classification.py
    rewl analyse report runs/cnn_classification
"""
from pathlib import Path

import numpy as np
from torch import nn

import rewl


def bars(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images (count, 1, 8, 8) float32 with one bright row (label 0) or column (label 1) in noise."""
    labels = rng.integers(0, 2, count)
    images = 0.3 * rng.standard_normal((count, 1, 8, 8))
    where = rng.integers(0, 8, count)
    for k in range(count):
        if labels[k] == 0:
            images[k, 0, where[k], :] += 1.0
        else:
            images[k, 0, :, where[k]] += 1.0
    return images.astype(np.float32), labels


rng = np.random.default_rng(0)
train, test = bars(40, rng), bars(200, rng)
model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(),       # 8 x 8 -> 2 x 3 x 3
                      nn.Flatten(), nn.Linear(18, 2))                  # 58 parameters
task = rewl.ModuleTask(model, train=train, test=test)                  # cross-entropy, y = test accuracy

raise SystemExit(rewl.run(Path(__file__).with_suffix(".toml"), task=task))
