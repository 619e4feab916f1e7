"""The CIFAR-10 task: the binary files (written here in CIFAR-10's record format), the random
selection, the 10-layer ResNet with LayerNorm, and its grouped-convolution forward and gradients
against a plain nn.Module per walker."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_batched_equals_plain, assert_chunked_equals_whole, deck_text, rewl_here, run_rewl
from rewl.config import DeckError, parse
from rewl.data import DataError, read_cifar_binary
from rewl.models import ResNet10
from rewl.tasks import Cifar10Task


def write_cifar(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """CIFAR-10's binary format: per image 1 label byte, then 3 x 1024 pixel bytes (R, G, B planes)."""
    records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(labels), -1).astype(np.uint8)], axis=1)
    path.write_bytes(records.tobytes())
    return path


def _batches(folder: Path, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Two data_batch files of n images each; returns all images and labels in file order."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2 * n, 3, 32, 32)).astype(np.uint8)
    labels = rng.integers(0, 10, 2 * n)
    folder.mkdir(exist_ok=True)
    write_cifar(folder / "data_batch_2.bin", images[n:], labels[n:])
    write_cifar(folder / "data_batch_1.bin", images[:n], labels[:n])
    (folder / "test_batch.bin").write_bytes(b"")          # not a training batch: never read
    return images, labels


def _deck(tmp_path: Path, **task) -> str:
    return deck_text("cifar10", task={"data": "batches", "train_points": 16, "test_points": 16, **task},
                     grid__y={"min": 0.0, "max": 1.0, "width": 0.05}, output={"dir": str(tmp_path / "run")})


def test_binary_records_and_errors(tmp_path):
    images, labels = _batches(tmp_path / "batches")
    got_images, got_labels = read_cifar_binary(tmp_path / "batches")
    np.testing.assert_array_equal(got_images, images)              # batches in order, R G B planes
    np.testing.assert_array_equal(got_labels, labels)
    one, _ = read_cifar_binary(tmp_path / "batches" / "data_batch_2.bin")
    np.testing.assert_array_equal(one, images[30:])
    with pytest.raises(DataError, match="no such file or folder.*binary version"):
        read_cifar_binary(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no data_batch_"):
        read_cifar_binary(tmp_path / "empty")
    (tmp_path / "short.bin").write_bytes(b"\x01" * 3072)
    with pytest.raises(DataError, match="3072 bytes is not a whole number of 3073-byte"):
        read_cifar_binary(tmp_path / "short.bin")
    write_cifar(tmp_path / "label.bin", images[:2], np.array([3, 12]))
    with pytest.raises(DataError, match="label byte 12 > 9"):
        read_cifar_binary(tmp_path / "label.bin")


def test_resnet_forward_and_gradients_equal_a_plain_module(tmp_path):
    _batches(tmp_path / "batches")
    path = tmp_path / "cifar.toml"
    path.write_text(_deck(tmp_path))
    flattened = ('grid.y.mode="flattened"',)        # WLMD pushes along y: the smoothed accuracy, beside the hard one
    task = Cifar10Task(parse(path.read_text(), str(path), flattened), torch.device("cpu"))
    assert task.n_params == 43_018 and len(task.group_names) == 19 and task.group_names[:3] == ["conv0", "norm0", "conv1"]
    assert task.inputs_t.shape == (32, 3, 32, 32) and task.smooth_k == 7.0
    half = dict(zip(task.group_names, task.group_half_width.tolist()))
    assert half["norm3"] == 2.0 and half["conv1"] == pytest.approx(2 / np.sqrt(24 * 9)) and half["linear"] == pytest.approx(2 / np.sqrt(10))
    x, y, hard = assert_batched_equals_plain(task)
    assert ((hard >= 0) & (hard <= 1)).all()
    # the baselines start from PyTorch's own initialisation: norms gain 1 and shift 0
    start = task.initial_weights(2, seed=0)
    torch.nn.utils.vector_to_parameters(start[0].float(), task.module.parameters())
    norm = task.module.layers[1]
    assert (norm.weight == 1).all() and (norm.bias == 0).all()
    assert task.module.layers[2].weight.abs().max() <= 1 / np.sqrt(24 * 9)


def test_resnet_in_chunks_of_points_equals_all_at_once_in_less_memory(tmp_path):
    _batches(tmp_path / "batches")
    path = tmp_path / "cifar.toml"
    path.write_text(_deck(tmp_path))
    task = Cifar10Task(parse(path.read_text(), str(path)), torch.device("cpu"))
    assert_chunked_equals_whole(task, 5)          # 16 + 16 images: a chunk straddles the train/test boundary


def test_cifar_deck_checks(tmp_path):
    text = _deck(tmp_path)
    cfg = parse(text.replace("train_points = 16\ntest_points = 16\n", ""), "c.toml")
    assert (cfg.task.train_points, cfg.task.test_points, cfg.task.accuracy_k) == (2500, 2500, 7.0)
    with pytest.raises(DeckError, match=r"\[model\] box: the cifar10 network is fixed \(a 10-layer ResNet, 43,018"):
        parse(text.replace("[model]\n", "[model]\nbox = [1.0]\n"), "c.toml")
    with pytest.raises(DeckError, match=r"\[task\] source: applies only to kind = 'mnist'"):
        parse(text.replace("[task]\n", '[task]\nsource = "idx"\n'), "c.toml")
    assert sum(p.numel() for p in ResNet10(24).parameters()) == 43_018


@pytest.mark.mpi
def test_cifar_checks_without_data_then_runs(tmp_path):
    shipped = rewl_here(["check", str(ROOT / "inputs" / "cifar10.toml")])
    assert shipped.returncode == 0, shipped.stderr
    assert "linear 24 -> 10 (43018 parameters); NOT READY" in shipped.stdout and "binary version" in shipped.stdout
    from rewl.storage import RunStore
    _batches(tmp_path / "batches")
    deck = tmp_path / "cifar.toml"
    deck.write_text(deck_text("cifar10", task={"data": "batches", "train_points": 10, "test_points": 8},
                              run={"max_steps": 100}, sampler={"walkers_per_rank": 4}, init={"equilibration_steps": 20},
                              grid__y={"min": 0.0, "max": 1.0, "width": 0.05}, output={"dir": str(tmp_path / "run")}))
    proc = run_rewl(["run", str(deck)], ranks=2)        # 2 windows, exchanges included
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / "run").read_run()
    assert rec.task == "cifar10" and rec.n_params == 43_018 and rec.y_recorded and rec.y_label == "A_test"
    assert all(w.accuracy_sum is None for w in rec.windows)        # the hard accuracy is y itself, recorded
    assert sum(w.y_hist.sum() for w in rec.windows) > 0            # (in 100 steps window 0's walkers sit in its walls)
