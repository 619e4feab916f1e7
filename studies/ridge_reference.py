"""A linear model's test loss on a house-prices deck's split: the reference line a practitioner
would draw first. Ridge regression on the deck's features (rewl's pipeline: the same one-hot
encoding, split and standardisation), its penalty chosen by 5-fold cross-validation on the
training rows alone; prints ln L_train and ln L_test in the deck's units (MSE of the standardised
ln SalePrice), and the penalty.

Usage (from the repository root):
    python studies/ridge_reference.py DECK [--set 'task.data="/path/to/train.csv"' ...] [--ln-test-only]
"""
from __future__ import annotations

import argparse

import numpy as np

from rewl.config import DeckError, load
from rewl.data import DataError, house_prices_features, resolve


def ridge_fit(x: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, float]:
    """Weights (d,) and intercept minimising |y - x w - b|^2 + penalty |w|^2 (the intercept free)."""
    mean_x, mean_y = x.mean(axis=0), y.mean()
    xc = x - mean_x
    w = np.linalg.solve(xc.T @ xc + penalty * np.eye(x.shape[1]), xc.T @ (y - mean_y))
    return w, float(mean_y - mean_x @ w)


def cv_error(x: np.ndarray, y: np.ndarray, penalty: float, folds: int = 5, seed: int = 0) -> float:
    """Mean squared error of 5-fold cross-validation on (x, y)."""
    order = np.random.default_rng(seed).permutation(len(y))
    errors = []
    for part in np.array_split(order, folds):
        keep = np.setdiff1d(order, part)
        w, b = ridge_fit(x[keep], y[keep], penalty)
        errors.append(np.mean((x[part] @ w + b - y[part]) ** 2))
    return float(np.mean(errors))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("deck")
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--ln-test-only", action="store_true", help="print only ln L_test (for scripts)")
    args = p.parse_args()
    try:
        cfg = load(args.deck, tuple(args.overrides))
        t = cfg.task
        x, y, n_train, _ = house_prices_features(resolve(cfg.path, t.data), t.train_fraction, t.data_seed)
    except (DeckError, DataError) as exc:
        raise SystemExit(f"ridge_reference: error: {exc}") from None
    penalties = np.logspace(-2, 4, 25)
    errors = [cv_error(x[:n_train], y[:n_train], a) for a in penalties]
    best = float(penalties[int(np.argmin(errors))])
    w, b = ridge_fit(x[:n_train], y[:n_train], best)
    train = float(np.mean((x[:n_train] @ w + b - y[:n_train]) ** 2))
    test = float(np.mean((x[n_train:] @ w + b - y[n_train:]) ** 2))
    if args.ln_test_only:
        print(f"{np.log(test):.4f}")
        return
    print(f"ridge on {n_train} train / {len(y) - n_train} test rows, {x.shape[1]} features: penalty {best:.3g} "
          f"(5-fold CV on the training rows); ln L_train {np.log(train):.3f}, ln L_test {np.log(test):.3f} "
          f"(MSE {train:.4f} / {test:.4f})")


if __name__ == "__main__":
    main()
