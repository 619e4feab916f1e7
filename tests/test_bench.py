"""The bench command runs and reports both rates and their ratio (timings are not asserted)."""
import re

import pytest

from conftest import ROOT, run_rewl

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("deck,sampler", [("quick_wlmc.toml", "wlmc"), ("quick.toml", "wlmd")])
def test_bench_reports_batched_and_plain_rates(deck, sampler):
    proc = run_rewl(["bench", str(ROOT / "inputs" / deck), "--seconds", "0.3", "--walkers", "64"])
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"batched {sampler}\s+64 walkers:\s+[\d,.]+ walker-steps/s", proc.stdout), proc.stdout
    assert re.search(r"plain loop\s+1 walker :\s+[\d,.]+ walker-steps/s", proc.stdout), proc.stdout
    assert re.search(r"ratio batched / plain: \d+x", proc.stdout), proc.stdout


def test_bench_reports_hmc_passes_per_step():
    """hmc: no plain loop; the forward and backward passes per step, and the batched rate against
    one walker's forward+backward."""
    proc = run_rewl(["bench", str(ROOT / "inputs" / "quick_wlmc.toml"), "--seconds", "0.3", "--walkers", "64",
                     "--set", 'sampler.kind="hmc"', "--set", "model.compile=false"])
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"batched hmc\s+64 walkers:\s+[\d,.]+ walker-steps/s", proc.stdout), proc.stdout
    assert re.search(r"10 forward and backward passes per walker-step: [\d,.]+ walker-passes/s", proc.stdout), proc.stdout
    assert re.search(r"ratio batched / forward\+backward: \d+x", proc.stdout) and "plain loop" not in proc.stdout


def test_bench_on_a_task_without_network():
    proc = run_rewl(["bench", str(ROOT / "inputs" / "box_quadratic.toml"), "--seconds", "0.2"])
    assert proc.returncode == 0, proc.stderr
    assert "no nn.Module" in proc.stdout


def test_bench_sweep_prints_rate_and_memory_per_walker_count():
    """--sweep: one row per walker count with walker-steps/s and the step's memory (on the CPU the
    profiler's peak of torch's allocations, growing with the count)."""
    proc = run_rewl(["bench", str(ROOT / "inputs" / "spiral_md.toml"), "--sweep", "8,32", "--seconds", "0.2"])
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.split() and line.split()[0] in ("8", "32")]
    assert [r[0] for r in rows] == ["8", "32"], proc.stdout
    size = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    kept = [float(r[2]) * size[r[3]] for r in rows]
    assert all(float(r[1].replace(",", "")) > 0 for r in rows) and 2 < kept[1] / kept[0] < 6, proc.stdout
    assert "peak allocated during one step, between operators" in proc.stdout
    bad = run_rewl(["bench", str(ROOT / "inputs" / "spiral_md.toml"), "--sweep", "0,x"])
    assert bad.returncode == 2 and "expected walker counts" in bad.stderr


CUDA = pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device here")


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("deck", ["quick_wlmc.toml", "quick.toml", "spiral_regression_w30_short.toml",
                                  "mnist_short.toml", "box_quadratic.toml"])
def test_bench_and_sweep_on_the_gpu(deck):
    """Every draw on the rank's device: bench (the plain loops included) and --sweep with CUDA's
    allocator statistics, for each built-in task kind that needs no data file."""
    proc = run_rewl(["bench", str(ROOT / "inputs" / deck), "--device", "cuda", "--seconds", "0.3", "--walkers", "64"])
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"batched \w+\s+64 walkers:\s+[\d,.]+ walker-steps/s", proc.stdout), proc.stdout
    sweep = run_rewl(["bench", str(ROOT / "inputs" / deck), "--device", "cuda", "--seconds", "0.2", "--sweep", "16,64"])
    assert sweep.returncode == 0, sweep.stderr
    assert "peak allocated during one step" in sweep.stdout, sweep.stdout
