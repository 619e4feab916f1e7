"""On a CUDA device (skipped with the reason where torch sees none; counted in pytest's summary):
the batched forwards equal plain modules, chunked evaluation equals one pass in less memory, and a
2-rank run on the GPU resumes bit for bit. The bench on the GPU is in test_bench.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_cifar import _batches
from test_cifar import _deck as cifar_deck
from test_mnist import _deck as mnist_deck
from test_mnist import _idx_pair

from conftest import assert_batched_equals_plain, assert_chunked_equals_whole, assert_same_run, run_rewl
from rewl.config import parse
from rewl.storage import RunStore
from rewl.tasks import Cifar10Task, MnistTask, make_task

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")]
CUDA = torch.device("cuda")


def _task(kind: str, tmp_path: Path):
    if kind == "mnist":
        _idx_pair(tmp_path)
        path = tmp_path / "mnist.toml"
        path.write_text(mnist_deck(tmp_path, y_transform="logit"))
        return MnistTask(parse(path.read_text(), str(path)), CUDA)
    if kind == "cifar10":
        _batches(tmp_path / "batches")
        path = tmp_path / "cifar.toml"
        path.write_text(cifar_deck(tmp_path))
        return Cifar10Task(parse(path.read_text(), str(path)), CUDA)
    from conftest import ROOT
    deck = {"spiral": "spiral_md.toml", "regression": "spiral_regression_w30.toml"}[kind]
    path = ROOT / "inputs" / deck
    return make_task(parse(path.read_text(), str(path)), CUDA)


@pytest.mark.parametrize("kind,chunk", [("spiral", 30), ("regression", 70), ("mnist", 7), ("cifar10", 5)])
def test_batched_forwards_and_chunks_on_the_gpu(kind, chunk, tmp_path):
    """Grouped convolutions and batched products on the GPU against one nn.Module per walker; the
    chunked evaluation against one pass, with a lower peak of the GPU allocator."""
    task = _task(kind, tmp_path)
    assert task.lo.device.type == "cuda"
    assert_batched_equals_plain(task)
    assert_chunked_equals_whole(task, chunk)


@pytest.mark.mpi
def test_two_rank_cuda_run_resumes_bit_for_bit(make_deck, tmp_path):
    """2 ranks sharing the GPU, WLMD with tuned walls: stopped at 1,250 steps and resumed to 3,000,
    equal to a straight 3,000-step run (walkers, velocities, estimates, RNG states)."""
    on_gpu = {"device": "cuda", "share_gpus": True}
    sampler = {"wall_strength": "auto"}
    straight = make_deck("spiral_md", "straight", run={"max_steps": 3000, **on_gpu}, sampler=sampler)
    proc = run_rewl(["run", str(straight)], ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert "rank 0 cuda:0" in proc.stdout and "rank 1 cuda:0" in proc.stdout, proc.stdout
    first = make_deck("spiral_md", "stopped", run={"max_steps": 1250, **on_gpu}, sampler=sampler)
    assert run_rewl(["run", str(first)], ranks=2).returncode == 0
    longer = make_deck("spiral_md", "longer", run={"max_steps": 3000, **on_gpu}, sampler=sampler,
                       output={"dir": str(tmp_path / "stopped")})
    proc = run_rewl(["run", str(longer), "--resume"], ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert_same_run(RunStore(tmp_path / "straight"), RunStore(tmp_path / "stopped"), 2, 3000)
