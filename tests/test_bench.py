"""The bench command runs and reports both rates and their ratio (timings are not asserted)."""
import re

import pytest

from conftest import ROOT, run_rewl

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("deck,sampler", [("quick.toml", "wlmc"), ("spiral_md.toml", "wlmd")])
def test_bench_reports_batched_and_plain_rates(deck, sampler):
    proc = run_rewl(["bench", str(ROOT / "inputs" / deck), "--seconds", "0.3", "--walkers", "64"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"batched {sampler}\s+64 walkers:\s+[\d,.]+ walker-steps/s", proc.stdout), proc.stdout
    assert re.search(r"plain loop\s+1 walker :\s+[\d,.]+ walker-steps/s", proc.stdout), proc.stdout
    assert re.search(r"ratio batched / plain: \d+x", proc.stdout), proc.stdout


def test_bench_on_a_task_without_network():
    proc = run_rewl(["bench", str(ROOT / "inputs" / "box_quadratic.toml"), "--seconds", "0.2"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no nn.Module" in proc.stdout
