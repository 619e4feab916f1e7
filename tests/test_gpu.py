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


def test_module_task_on_cuda_equals_cpu():
    """rewl.ModuleTask called with a CUDA device (as rewl.run does per rank): the copy on the GPU
    gives the CPU's x, y and gradients for a small CNN (float64), chunked or not."""
    import rewl
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(30, 1, 8, 8, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 2, (30,), generator=gen)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(18, 2)).double()
    cpu = rewl.ModuleTask(model, (images[:20], labels[:20]), (images[20:], labels[20:]))
    gpu = cpu(CUDA)
    assert gpu.lo.device.type == "cuda" and gpu.inputs.device.type == "cuda"
    walkers = cpu.sample_uniform(5, torch.Generator().manual_seed(1)).requires_grad_(True)
    on_gpu = walkers.detach().to(CUDA).requires_grad_(True)
    x_c, x_g = cpu.x_of(walkers), gpu.x_of(on_gpu)
    torch.testing.assert_close(x_g.cpu(), x_c.detach())
    torch.testing.assert_close(gpu.cvs(on_gpu.detach())[1].cpu(), cpu.cvs(walkers.detach())[1])
    g_c, = torch.autograd.grad(x_c.sum(), walkers)
    g_g, = torch.autograd.grad(x_g.sum(), on_gpu)
    torch.testing.assert_close(g_g.cpu(), g_c)
    assert_chunked_equals_whole(gpu, chunk=7)
