"""The features task: regression on a feature matrix the deck names (.npz or .csv, written here in
those formats), its split and standardisation, its batched forward against a plain nn.Module,
and its errors; a run, baselines and `check` before the data exists."""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, deck_text, rewl_here, run_rewl
from rewl.config import DeckError, parse
from rewl.data import DataError, load_features, split, standardise
from rewl.storage import RunStore
from rewl.tasks import FeaturesTask

ROWS, D = 40, 6
# Kaggle's own train.csv (House Prices - Advanced Regression Techniques), where the machine has it
KAGGLE_CSV = Path(os.environ.get("REWL_HOUSE_PRICES_CSV", ROOT.parent / "shared" / "data" / "house-prices" / "train.csv"))
needs_kaggle_csv = pytest.mark.skipif(not KAGGLE_CSV.exists(), reason=f"Kaggle's house-prices train.csv is not at "
                                      f"{KAGGLE_CSV} (set REWL_HOUSE_PRICES_CSV to its path)")


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((ROWS, D)) * np.arange(1, D + 1) + 3.0
    return features, features[:, :2].sum(axis=1) + 0.1 * rng.standard_normal(ROWS)


def _write_csv(path: Path, features: np.ndarray, targets: np.ndarray, target: str = "price") -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{j}" for j in range(2)] + [target] + [f"f{j}" for j in range(2, features.shape[1])])
        for row, t in zip(features, targets):
            w.writerow([repr(float(v)) for v in (*row[:2], t, *row[2:])])
    return path


def _deck(tmp_path: Path, data: str, **task) -> Path:
    path = tmp_path / "features.toml"
    path.write_text(deck_text(
        "features", task={"data": data, "features": D, **task}, run={"seed": 2, "max_steps": 300}, windows={"count": 1},
        output={"dir": str(tmp_path / "run"), "checkpoint_interval": 300},
        baseline={"optimizer": "adam", "learning_rate": 0.01, "batch_size": 8, "steps": 50, "runs": 4}))
    return path


def test_npz_and_csv_read_the_same_rows(tmp_path):
    features, targets = _data()
    np.savez(tmp_path / "d.npz", X=features, y=targets)
    for path, target in ((tmp_path / "d.npz", "y"), (_write_csv(tmp_path / "d.csv", features, targets), "price")):
        x, y = load_features(path, target)
        np.testing.assert_array_equal(x, features)
        np.testing.assert_array_equal(y, targets)


def test_bad_files_are_named(tmp_path):
    features, targets = _data()
    np.savez(tmp_path / "noy.npz", X=features)
    (tmp_path / "text.csv").write_text("a,y\n1,2\n3,x\n")
    (tmp_path / "d.txt").write_text("1")
    bad = features.copy()
    bad[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", X=bad, y=targets)
    cases = [(tmp_path / "missing.npz", "y", "no such file"), (tmp_path / "noy.npz", "y", "no array y"),
             (tmp_path / "text.csv", "y", "line 3, column 'y': 'x' is not a number"),
             (_write_csv(tmp_path / "d.csv", features, targets), "target", "no column 'target'"),
             (tmp_path / "d.txt", "y", "expected a .npz or .csv"), (tmp_path / "nan.npz", "y", r"rows \[3\] hold non-finite")]
    for path, target, message in cases:
        with pytest.raises(DataError, match=message):
            load_features(path, target)


def test_split_and_standardise_use_only_the_training_rows():
    train, test = split(10, 0.8, seed=3)
    assert len(train) == 8 and len(test) == 2 and sorted(np.concatenate([train, test]).tolist()) == list(range(10))
    assert split(10, 0.01, 0)[0].size == 1 and split(10, 0.99, 0)[1].size == 1
    a, b = np.array([[1.0, 5.0], [3.0, 5.0]]), np.array([[5.0, 7.0]])
    sa, sb = standardise(a, b)
    np.testing.assert_allclose(sa, [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(sb, [[3.0, 2.0]])                  # constant column: scale 1


def test_batched_forward_and_gradients_equal_a_plain_module(tmp_path):
    features, targets = _data()
    np.savez(tmp_path / "d.npz", X=features, y=targets)
    cfg = parse(_deck(tmp_path, "d.npz").read_text(), str(tmp_path / "features.toml"))
    task = FeaturesTask(cfg, torch.device("cpu"))
    assert task.n_params == D * 4 + 4 + 4 + 1 and task.n_train == 32
    walkers = task.sample_uniform(3, torch.Generator().manual_seed(0)).requires_grad_(True)
    x, y = task.cvs(walkers)
    x.sum().backward()
    for k in range(3):
        w = walkers[k].detach().clone().requires_grad_(True)
        torch.nn.utils.vector_to_parameters(w.detach(), task.module.parameters())
        task.module.zero_grad()
        x_plain, y_plain = task.plain_cvs(task.module)
        assert x_plain.item() == pytest.approx(x[k].item(), rel=1e-5) and y_plain.item() == pytest.approx(y[k].item(), rel=1e-5)
        x_plain.backward()
        grad = torch.cat([p.grad.flatten() for p in task.module.parameters()])
        torch.testing.assert_close(grad, walkers.grad[k], rtol=1e-5, atol=1e-6)
    # the targets were standardised with the training rows
    assert task.targets[: task.n_train].mean().abs() < 1e-5 and task.targets[task.n_train:].mean().abs() > 1e-3


def test_deck_checks(tmp_path):
    text = _deck(tmp_path, "d.npz").read_text()
    with pytest.raises(DeckError, match=r"\[task\] data: is required"):
        parse(text.replace('data = "d.npz"\n', ""), "f.toml")
    with pytest.raises(DeckError, match=r"\[task\] train_fraction: must lie strictly between 0 and 1"):
        parse(text, "f.toml", ("task.train_fraction=1.0",))
    with pytest.raises(DeckError, match=r"\[task\] data: applies only to kind = 'features'"):
        parse(text, "f.toml", ('task.kind="spiral_regression"',))


def test_rdkit_tpsa_source(tmp_path, monkeypatch):
    """Fingerprints of RDKit's shipped NCI molecules: the same draw for the same seed, each target
    the TPSA of its own molecule (RDKit recomputes the file's Daylight values), and the deck keys."""
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    from rewl.data import rdkit_tpsa
    features, targets, smiles = rdkit_tpsa(50, 128, seed=3)
    assert features.shape == (50, 128) and set(np.unique(features)) == {0.0, 1.0} and len(set(smiles)) == 50
    again, _, smiles_again = rdkit_tpsa(50, 128, seed=3)
    np.testing.assert_array_equal(again, features)
    assert smiles_again == smiles and rdkit_tpsa(50, 128, seed=4)[2] != smiles
    recomputed = np.array([Descriptors.TPSA(Chem.MolFromSmiles(s)) for s in smiles])
    assert np.mean(np.abs(recomputed - targets) < 0.01) >= 0.98
    text = _deck(tmp_path, "d.npz").read_text().replace('data = "d.npz"\n', 'source = "rdkit_tpsa"\nrows = 60\n')
    path = tmp_path / "tpsa.toml"
    path.write_text(text.replace(f"features = {D}", "features = 64"))
    task = FeaturesTask(parse(path.read_text(), str(path)), torch.device("cpu"))
    assert task.n_train == 48 and task.inputs_t.shape == (64, 60) and "60 NCI molecules shipped with RDKit" in task.describe()
    with pytest.raises(DeckError, match=r"\[task\] rows: applies only to source = \"rdkit_tpsa\""):
        parse(_deck(tmp_path, "d.npz").read_text(), "f.toml", ("task.rows=9",))
    with pytest.raises(DeckError, match=r"\[task\] target: applies only to source = \"file\""):
        parse(text, "f.toml", ('task.target="y"',))
    with pytest.raises(DeckError, match=r"\[task\] source: must be one of 'file', 'rdkit_tpsa' for kind = 'features'"):
        parse(text, "f.toml", ('task.source="mlxtend"',))
    with pytest.raises(DataError, match=r"\[task\] rows = 4999: only \d+ of RDKit's \d+ NCI molecules parse"):
        rdkit_tpsa(4999, 64, 0)            # 8 of them do not parse
    monkeypatch.setitem(sys.modules, "rdkit", None)         # as if the extra were not installed
    with pytest.raises(DataError, match=r'RDKit: pip install -e "\.\[data\]"'):
        rdkit_tpsa(5, 64, 0)


@pytest.mark.mpi
def test_check_before_the_data_then_run_and_baselines(tmp_path):
    deck = _deck(tmp_path, "data/emb.csv", target="price", data_seed=4)
    check = rewl_here(["check", str(deck)])
    assert check.returncode == 0 and f"FNN {D} -> 4 -> 1 ({D * 4 + 4 + 4 + 1} parameters); NOT READY" in check.stdout
    proc = run_rewl(["run", str(deck)])
    assert proc.returncode == 2 and "data/emb.csv ([task] data): no such file" in proc.stderr
    (tmp_path / "data").mkdir()
    features, targets = _data(1)
    _write_csv(tmp_path / "data" / "emb.csv", features[:, : D - 1], targets)
    proc = run_rewl(["run", str(deck)])
    assert proc.returncode == 2 and "5 feature columns, the deck's [task] features says 6" in proc.stderr
    _write_csv(tmp_path / "data" / "emb.csv", features, targets)
    proc = run_rewl(["run", str(deck)])                  # the failed starts wrote nothing
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / "run").read_run()
    assert rec.task == "features" and rec.y_label == "ln L_test" and rec.status == "budget-exhausted"
    sgd = run_rewl(["sgd", str(deck)])
    assert sgd.returncode == 0 and "4 runs of adam" in sgd.stdout


# -- house prices (Kaggle train.csv format) ---------------------------------------------------

KAGGLE_NUMERIC = ("MSSubClass LotFrontage LotArea OverallQual OverallCond YearBuilt YearRemodAdd MasVnrArea BsmtFinSF1 "
                  "BsmtFinSF2 BsmtUnfSF TotalBsmtSF 1stFlrSF 2ndFlrSF LowQualFinSF GrLivArea BsmtFullBath BsmtHalfBath "
                  "FullBath HalfBath BedroomAbvGr KitchenAbvGr TotRmsAbvGrd Fireplaces GarageYrBlt GarageCars GarageArea "
                  "WoodDeckSF OpenPorchSF EnclosedPorch 3SsnPorch ScreenPorch PoolArea MiscVal MoSold YrSold").split()
KAGGLE_TEXT = ("MSZoning Street Alley LotShape LandContour Utilities LotConfig LandSlope Neighborhood Condition1 Condition2 "
               "BldgType HouseStyle RoofStyle RoofMatl Exterior1st Exterior2nd MasVnrType ExterQual ExterCond Foundation "
               "BsmtQual BsmtCond BsmtExposure BsmtFinType1 BsmtFinType2 Heating HeatingQC CentralAir Electrical KitchenQual "
               "Functional FireplaceQu GarageType GarageFinish GarageQual GarageCond PavedDrive PoolQC Fence MiscFeature "
               "SaleType SaleCondition").split()


def _kaggle_csv(path: Path, rows: int = 40) -> tuple[Path, int]:
    """A train.csv with Kaggle's 81 columns and random values; returns it and the number of features
    the pipeline must give (36 numeric + per text column its categories + 1 for NA)."""
    rng = np.random.default_rng(7)
    columns = {"Id": [str(i + 1) for i in range(rows)]}
    for name in KAGGLE_NUMERIC:
        values = [str(v) for v in rng.integers(0, 2000, rows)]
        if name in ("LotFrontage", "GarageYrBlt"):
            values[1] = values[5] = "NA"                       # missing numbers, as in the real file
        columns[name] = values
    expected = len(KAGGLE_NUMERIC)
    for k, name in enumerate(KAGGLE_TEXT):
        options = ["None", "BrkFace", "Stone"] if name == "MasVnrType" else [f"c{j}" for j in range(1 + k % 3)]
        values = [options[i] for i in rng.integers(0, len(options), rows)]
        if k % 4 == 0:
            values[2] = "NA"
        columns[name] = values
        expected += len(set(values) - {"NA"}) + 1
    columns["SalePrice"] = [str(v) for v in rng.integers(50_000, 500_000, rows)]
    order = ["Id"] + [c for c in columns if c not in ("Id", "SalePrice")] + ["SalePrice"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(order)
        w.writerows(zip(*(columns[c] for c in order)))
    return path, expected


def test_house_prices_pipeline(tmp_path):
    from rewl.data import house_prices_features
    path, expected = _kaggle_csv(tmp_path / "train.csv")
    x, y, n_train, names = house_prices_features(path, 0.5, seed=3)
    assert x.shape == (40, expected) and len(names) == expected and n_train == 20
    assert "MasVnrType_None" in names and "MasVnrType_nan" in names and "MSZoning_nan" in names   # NA: own category
    assert "Id" not in names and "SalePrice" not in names
    numeric = [names.index(c) for c in KAGGLE_NUMERIC]
    np.testing.assert_allclose(x[:n_train][:, numeric].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(x[:n_train][:, numeric].std(axis=0), 1.0, atol=1e-12)
    onehot = np.setdiff1d(np.arange(expected), numeric)
    assert set(np.unique(x[:, onehot])) <= {0.0, 1.0} and np.isfinite(x).all()
    assert abs(y[:n_train].mean()) < 1e-12 and y[:n_train].std() == pytest.approx(1.0)
    _assert_rows_aligned(path, 3, x, y, names)


def _assert_rows_aligned(path: Path, seed: int, x: np.ndarray, y: np.ndarray, names: list[str]) -> None:
    """Row i of x and y is one house of the CSV: the split's training rows first, then its test rows
    (``data.split``, tested above), each target ln(SalePrice) and each complete numeric column
    standardised with the training rows' mean and deviation, computed here from the raw cells."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    train, test = split(len(rows), 0.5, seed)
    order = np.concatenate([train, test])

    def standardised(values: np.ndarray) -> np.ndarray:
        return (values[order] - values[train].mean()) / values[train].std()
    np.testing.assert_allclose(y, standardised(np.log([float(r["SalePrice"]) for r in rows])), rtol=0, atol=1e-12)
    complete = [c for c in KAGGLE_NUMERIC if all(r[c] != "NA" for r in rows) and len({r[c] for r in rows}) > 1]
    for column in complete[:5]:
        raw = np.array([float(r[column]) for r in rows])
        np.testing.assert_allclose(x[:, names.index(column)], standardised(raw), rtol=0, atol=1e-12, err_msg=column)


def test_house_prices_needs_pandas_and_says_which_extra(tmp_path, monkeypatch):
    from rewl.data import house_prices_features
    monkeypatch.setitem(sys.modules, "pandas", None)         # as if the extra were not installed
    with pytest.raises(DataError, match=r'pip install -e "\.\[data\]"'):
        house_prices_features(tmp_path / "train.csv", 0.5, 0)


@pytest.mark.mpi
def test_house_prices_deck_checks_then_runs(tmp_path):
    shipped = rewl_here(["check", str(ROOT / "inputs" / "house_prices.toml")])
    assert shipped.returncode == 0 and "FNN 331 -> 20 -> 1 (6661 parameters); NOT READY" in shipped.stdout
    # the walls' estimate needs only the parameter count, not the data: 6661 / (4 x 3000)
    assert "n_params / 2 = 3,330 per unit of x" in shipped.stdout and "settle about 0.555 past" in shipped.stdout
    path, expected = _kaggle_csv(tmp_path / "train.csv")
    deck = tmp_path / "house.toml"
    deck.write_text(deck_text("features", task={"kind": "house_prices", "data": "train.csv", "features": expected},
                              model={"hidden": [3], "activation": "relu"}, run={"seed": 2, "max_steps": 200},
                              windows={"count": 1}, grid__x={"min": -4.0, "max": 4.0, "width": 0.1},
                              output={"dir": str(tmp_path / "run"), "checkpoint_interval": 200}))
    proc = run_rewl(["run", str(deck), "--set", f"task.features={expected + 1}"])
    assert proc.returncode == 2 and f"the one-hot pipeline gives {expected} features" in proc.stderr
    proc = run_rewl(["run", str(deck)])
    assert proc.returncode == 0, proc.stderr
    assert "20 train / 20 test houses" in proc.stdout and RunStore(tmp_path / "run").read_run().n_params == expected * 3 + 7


@needs_kaggle_csv
def test_house_prices_real_file_gives_the_reference_features_and_split():
    """The real train.csv: 1,460 houses, the reference's 331 features (NA as its own category,
    `None` kept as a MasVnrType), half the houses for training with data_seed 0."""
    import pandas as pd

    from rewl.data import house_prices_features
    x, y, n_train, names = house_prices_features(KAGGLE_CSV, 0.5, seed=0)
    assert x.shape == (1460, 331) and n_train == 730 and len(names) == 331
    assert "MasVnrType_None" in names and "MasVnrType_nan" in names
    raw = pd.read_csv(KAGGLE_CSV, keep_default_na=False, na_values=["NA", ""])
    ln_price = np.log(raw["SalePrice"].to_numpy(float))
    # y is ln(SalePrice) standardised with the training rows, row by row with the features
    assert abs(y[:n_train].mean()) < 1e-9 and y[:n_train].std() == pytest.approx(1.0)
    assert raw.shape == (1460, 81) and len(ln_price) == 1460
    _assert_rows_aligned(KAGGLE_CSV, 0, x, y, names)
    again = house_prices_features(KAGGLE_CSV, 0.5, seed=0)
    np.testing.assert_array_equal(again[0], x)
    other = house_prices_features(KAGGLE_CSV, 0.5, seed=1)
    assert not np.array_equal(other[1][:n_train], y[:n_train])          # data_seed draws the split


@needs_kaggle_csv
@pytest.mark.mpi
def test_house_prices_real_file_short_run(tmp_path):
    """The shipped deck on the real file: check gives 6,661 parameters and 730 / 730 houses, and a
    short run on one window writes its run file."""
    deck = ROOT / "inputs" / "house_prices.toml"
    short = ["--set", f'task.data="{KAGGLE_CSV}"', "--set", "windows.count=1", "--set", "grid.x.min=-3.0", "--set", "grid.x.max=1.0",
             "--set", "sampler.walkers_per_rank=8", "--set", "run.max_steps=300", "--set", "init.equilibration_steps=100",
             "--set", "output.checkpoint_interval=300", "--out", str(tmp_path / "run")]
    check = rewl_here(["check", str(deck), *short])
    assert check.returncode == 0, check.stderr
    assert "FNN 331 -> 20 -> 1 (6661 parameters)" in check.stdout and "730 train / 730 test houses" in check.stdout
    proc = run_rewl(["run", str(deck), *short])
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / "run").read_run()
    assert rec.steps == 300 and rec.n_params == 6661 and rec.y_label == "ln L_test"
    assert rec.windows[0].visits.sum() > 0
