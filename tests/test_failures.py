"""Errors reach the user whichever rank meets them, and no rank is left waiting: set-up errors
(deck, layout, data, task, a custom task, a window out of reach) on rank 0 or another rank only,
with the other rank held back, end every rank with exit 2 and one message from rank 0; an
exception inside a step aborts the job with its traceback on stderr and in the run's log; a
checkpoint or run-file write that fails (injected, and a real full disk) ends the run with one
line, leaves no partial files, and the run resumes to the bits of an uninterrupted one.

Failures are injected by tests/helpers/inject.py under real mpiexec. Nothing here measures time:
the subprocess timeouts only keep a hang from blocking the suite.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MPIEXEC, ROOT, assert_same_run, env, rewl_here, run_rewl
from rewl.storage import RunStore

pytestmark = pytest.mark.mpi

INJECT = str(ROOT / "tests" / "helpers" / "inject.py")
HANG = 300          # seconds: only a hung job gets near this


def run_injected(kind: str, fail_rank: int, delay_rank: int, deck: Path, *args: str, ranks: int = 2) -> subprocess.CompletedProcess:
    cmd = [MPIEXEC, "-n", str(ranks), sys.executable, INJECT, kind, str(fail_rank), str(delay_rank), str(deck), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=HANG)


def _leftovers(directory: Path) -> list[str]:
    """Temporary files a write left behind."""
    return [str(p) for p in directory.rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize("kind", ["deck", "layout", "data", "task"])
@pytest.mark.parametrize("fail_rank, delay_rank", [(1, 0), (0, 1)], ids=["rank1-fails-rank0-late", "rank0-fails-rank1-late"])
def test_set_up_error_on_one_rank_ends_every_rank_with_its_message(spiral_deck, tmp_path, kind, fail_rank, delay_rank):
    deck = spiral_deck(windows=2)
    proc = run_injected(kind, fail_rank, delay_rank, deck)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rewl: error: [rank {fail_rank}] "), proc.stderr
    assert "injected" in lines[0] and f"rank {fail_rank}" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "run.h5").exists()          # nothing written


def test_custom_task_that_fails_on_one_rank_under_rewl_run(tmp_path):
    deck = tmp_path / "custom.toml"
    deck.write_text('[task]\nkind = "custom"\n[grid.x]\nmin = -3.0\nmax = 0.5\nwidth = 0.25\n'
                    '[grid.y]\nmin = -4.0\nmax = 1.0\nwidth = 0.25\n[windows]\ncount = 2\n[run]\nmax_steps = 200\n'
                    f'[output]\ndir = "{tmp_path / "out"}"\n')
    proc = run_injected("custom", 1, 0, deck)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"rewl: error: [rank 1] {deck}: injected: this custom task cannot start on rank 1"]


def test_unreachable_window_fails_with_clear_message(make_deck, tmp_path):
    deck = make_deck("box", run={"max_steps": 1000}, grid__x={"min": -1.0, "max": 4.0, "width": 0.1},
                     grid__y={"min": -4.0, "max": 0.7, "width": 0.1}, windows={"count": 2},
                     init={"max_iterations": 300})
    proc = run_rewl(["run", str(deck)], ranks=2)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rewl: error: [rank 1] window 1: after 300 gradient iterations"), proc.stderr
    assert "unreachable" in lines[0] and not (tmp_path / "deck" / "run.h5").exists()


def test_exception_in_a_step_aborts_the_job_with_its_traceback_also_in_the_log(spiral_deck, tmp_path):
    deck = spiral_deck(max_steps=200_000, windows=2)
    proc = run_injected("step", 1, 0, deck)
    assert proc.returncode != 0
    assert "[rank 1] rewl failed:" in proc.stderr and "RuntimeError: injected failure on rank 1" in proc.stderr, proc.stderr
    assert "rewl: at step 200, window 1, rank 1" in proc.stderr          # exchange round 3, the fourth (every 50 steps)
    store = RunStore(tmp_path / "run")
    log = store.log_path.read_text()
    assert "[rank 1] rewl failed:" in log and "RuntimeError: injected failure on rank 1" in log
    assert store.read_run().status == "running"                        # the last checkpoint stays readable
    store.read_checkpoint(store.latest_step(), 0)
    info = rewl_here(["info", str(store.dir)])
    assert info.returncode == 0 and f"FAILED after this checkpoint ({store.log_path}): [rank 1] rewl failed: / " \
        "RuntimeError: injected failure on rank 1 / rewl: at step 200, window 1, rank 1" in info.stdout, info.stdout


def test_a_failed_checkpoint_write_stops_cleanly_and_resumes_to_the_same_bits(spiral_deck, tmp_path):
    """Rank 1 cannot write its checkpoint of step 1000 (a full disk, injected; it leaves a partial
    file): every rank stops with exit 1 and one line naming the directory, the step, the cause and
    the command that continues; the partial set is removed, step 0 and the run file are intact,
    and the resume equals an uninterrupted run bit for bit."""
    steps = 2000
    straight = spiral_deck("straight.toml", max_steps=steps, windows=2, out=str(tmp_path / "straight"))
    assert run_rewl(["run", str(straight)], ranks=2).returncode == 0
    deck = spiral_deck(max_steps=steps, windows=2)
    proc = run_injected("checkpoint", 1, 0, deck)
    assert proc.returncode == 1, proc.stderr
    store = RunStore(tmp_path / "run")
    assert proc.stderr.splitlines() == [
        f"rewl: error: cannot write the checkpoint of step 1000 in {store.dir} (rank 1: No space left on device); the run "
        "stopped; its run file and the complete checkpoint of step 0 are intact: free space (or fix the filesystem), then "
        f"continue with `rewl run {deck} --resume`"]
    assert [p.name for p in store.ckpt_dir.iterdir() if p.is_dir()] == ["step_000000000000"]
    assert not _leftovers(store.dir)
    assert store.read_run().steps == 0 and store.latest_step() == 0
    assert "error: cannot write the checkpoint of step 1000" in store.log_path.read_text()
    assert "FAILED after this checkpoint" in rewl_here(["info", str(store.dir)]).stdout
    proc = run_rewl(["run", str(deck), "--resume"], ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert_same_run(RunStore(tmp_path / "straight"), store, 2, steps)
    assert "FAILED" not in rewl_here(["info", str(store.dir)]).stdout           # the resume ended well


def test_a_failed_run_file_write_stops_cleanly(spiral_deck, tmp_path):
    deck = spiral_deck(max_steps=2000, windows=2)
    proc = run_injected("runfile", 0, 1, deck)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rewl: error: cannot write the run file of step 1000 in "), proc.stderr
    assert "(rank 0: Input/output error)" in lines[0] and "checkpoint of step 0 are intact" in lines[0]
    store = RunStore(tmp_path / "run")
    assert store.read_run().steps == 0 and store.latest_step() == 0 and not _leftovers(store.dir)
    assert [p.name for p in store.ckpt_dir.iterdir() if p.is_dir()] == ["step_000000000000"]


def _tmpfs_unavailable() -> str | None:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "mounting a small tmpfs needs root on Linux (CI runs as root); the injected write failures above still run"
    return None


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a tmpfs of `size` bytes at tmp_path/disk, unmounted afterwards."""
    why = _tmpfs_unavailable()
    if why:
        pytest.skip(why)
    mounted = []

    def mount(size: int) -> Path:
        point = tmp_path / "disk"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], check=True)
        mounted.append(point)
        return point
    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def _bytes_used(path: Path) -> int:
    """What the files under `path` take on a tmpfs: whole 4 KiB pages."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in path.rglob("*") if p.is_file())


def test_a_full_disk_ends_the_run_with_one_line_and_the_run_resumes_elsewhere(spiral_deck, tmp_path, small_disk):
    """A real full disk: a tmpfs with room for the run file and one checkpoint set but not two.
    Checkpoint 0 fits; the set of step 1000 does not (the previous set is kept until the new one
    is complete). One line, no temporary files, the run file and step 0 readable, and a copy of
    the directory resumes to the bits of an uninterrupted run."""
    steps = 2000
    straight = spiral_deck("straight.toml", max_steps=steps, walkers=256, windows=2, out=str(tmp_path / "straight"))
    assert run_rewl(["run", str(straight)], ranks=2).returncode == 0
    one_set = _bytes_used(RunStore(tmp_path / "straight")._ckpt_path(steps, 0).parent)
    run_file = _bytes_used(RunStore(tmp_path / "straight").run_path)
    disk = small_disk(2 * run_file + one_set + one_set // 2 + 16 * 4096)
    deck = spiral_deck(max_steps=steps, walkers=256, windows=2, out=str(disk / "run"))
    proc = run_rewl(["run", str(deck)], ranks=2)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"rewl: error: cannot write the checkpoint of step 1000 in {disk / 'run'} (rank ")
    assert "No space left on device" in lines[0] and f"`rewl run {deck} --resume`" in lines[0]
    store = RunStore(disk / "run")
    assert not _leftovers(store.dir)
    assert store.read_run().steps == 0 and store.latest_step() == 0
    shutil.copytree(store.dir, tmp_path / "freed", ignore=shutil.ignore_patterns(".lock"))
    proc = run_rewl(["run", str(deck), "--resume", "--out", str(tmp_path / "freed")], ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert_same_run(RunStore(tmp_path / "straight"), RunStore(tmp_path / "freed"), 2, steps)
