"""Regression on tables: a feature matrix of your own (or RDKit fingerprints) and Kaggle's house
prices, each with an FNN d -> hidden -> 1."""
from __future__ import annotations

import numpy as np
import torch

from ..config import Config
from ..data import (
    MORGAN_RADIUS,
    DataError,
    house_prices_features,
    load_features,
    rdkit_tpsa,
    resolve,
    split,
    standardise,
)
from .base import RegressionTask


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
                            f"the deck's [task] features says {t.features} (docs/tasks.md: house_prices)")
        self._build(cfg, device, t.features, 1, inputs)
        self.targets = torch.tensor(targets, dtype=self.dtype, device=device)

    def describe(self) -> str:
        return (f"house_prices: {self.network_text()}; {self.n_train} train / {len(self.targets) - self.n_train} test "
                f"houses of {self.data_path}; MSE of standardised ln(SalePrice)")
