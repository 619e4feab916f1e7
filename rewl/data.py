"""Data files named in decks: a feature matrix and its targets, read offline in their own formats.

Nothing here downloads. A missing or malformed file raises DataError naming the file, the deck key
and what is wrong.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A data file named in a deck is missing or not in the expected format."""


def resolve(deck_path: str, name: str) -> Path:
    """A path from a deck: absolute, or relative to the deck file's directory."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else (Path(deck_path).resolve().parent / path).resolve()


def load_features(path: Path, target: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Features X (N, d) and targets y (N,), float64, from

    - ``.npz``: arrays ``X`` (N, d) and ``y`` (N,) (``numpy.savez``; read without pickle);
    - ``.csv``: a header row, numbers only; the column named `target` is y, every other column a
      feature (in file order).
    """
    where = f"{path} ([task] data)"
    if not path.exists():
        raise DataError(f"{where}: no such file. rewl reads your data offline: name an .npz with arrays X (N, d) "
                        "and y (N,), or a .csv with a header and a target column")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = [k for k in ("X", "y") if k not in f.files]
                if missing:
                    raise DataError(f"{where}: no array {' or '.join(missing)} (has {', '.join(f.files) or 'none'})")
                features, targets = np.asarray(f["X"], dtype=np.float64), np.asarray(f["y"], dtype=np.float64)
        except (OSError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{where}: not a readable .npz of numbers: {exc}") from None
    elif path.suffix == ".csv":
        features, targets = _read_csv(path, target, where)
    else:
        raise DataError(f"{where}: expected a .npz or .csv file, got {path.suffix or 'no extension'!r}")
    if features.ndim != 2 or targets.shape != (features.shape[0],):
        raise DataError(f"{where}: X must be (N, d) and y (N,), got {features.shape} and {targets.shape}")
    if features.shape[0] < 4:
        raise DataError(f"{where}: {features.shape[0]} rows; at least 4 are needed (train and test)")
    bad = ~np.isfinite(features).all(axis=1) | ~np.isfinite(targets)
    if bad.any():
        raise DataError(f"{where}: rows {np.flatnonzero(bad)[:5].tolist()} hold non-finite values")
    return features, targets


def _read_csv(path: Path, target: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{where}: empty file")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise DataError(f"{where}: no column {target!r} ([task] target); columns: {', '.join(header[:20])}")
    values = np.empty((len(rows) - 1, len(header)))
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{where}: line {i} has {len(row)} fields, the header {len(header)}")
        for j, cell in enumerate(row):
            try:
                values[i - 2, j] = float(cell)
            except ValueError:
                raise DataError(f"{where}: line {i}, column {header[j]!r}: {cell!r} is not a number") from None
    t = header.index(target)
    return np.delete(values, t, axis=1), values[:, t]


def split(n_rows: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and the test set: a random permutation with `seed`, the first
    round(train_fraction * n_rows) rows (at least one of each) train."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_train = min(n_rows - 1, max(1, round(train_fraction * n_rows)))
    return order[:n_train], order[n_train:]


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets scaled by the training set's mean and standard deviation (per column; a constant
    column keeps scale 1), so no test statistic leaks into the training data."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std
