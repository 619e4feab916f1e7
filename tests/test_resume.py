"""Resume: a run stopped by SIGTERM and resumed equals the uninterrupted run bit for bit."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest

from conftest import HANG, ROOT, assert_same_run, env, rewl_cmd, rewl_here, run_rewl, wait_for_checkpoint, wait_for_signal_handler
from rewl.storage import RunStore

pytestmark = pytest.mark.mpi

STEPS = 8_000      # the signal is sent once checkpoint 1,000 is complete: thousands of steps before the end


def _start(deck, ranks: int | None = None) -> subprocess.Popen:
    """`rewl run DECK` in the background (under mpiexec when ranks is given)."""
    return subprocess.Popen(rewl_cmd(["run", str(deck)], ranks), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env(), cwd=ROOT)


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_sigterm_then_resume_is_bit_identical(spiral_deck, tmp_path, sig):
    ranks = 4
    straight = spiral_deck("straight.toml", max_steps=STEPS, windows=4, checkpoint_interval=1000,
                           out=str(tmp_path / "straight"))
    stopped = spiral_deck("stopped.toml", max_steps=STEPS, windows=4, checkpoint_interval=1000,
                          out=str(tmp_path / "stopped"))
    proc = run_rewl(["run", str(straight)], ranks=ranks)
    assert proc.returncode == 0, proc.stderr

    store = RunStore(tmp_path / "stopped")
    proc = _start(stopped, ranks)
    wait_for_checkpoint(store, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 0, err
    rec = store.read_run()
    assert rec.status == "interrupted" and 0 < rec.steps < STEPS, (rec.status, rec.steps)
    assert store.latest_step() == rec.steps

    proc = run_rewl(["run", str(stopped), "--resume"], ranks=ranks)
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stdout
    assert_same_run(RunStore(tmp_path / "straight"), store, ranks, STEPS)


def test_resume_refuses_a_changed_deck(spiral_deck, tmp_path):
    deck = spiral_deck(max_steps=500)
    assert run_rewl(["run", str(deck)]).returncode == 0
    changed = spiral_deck("changed.toml", max_steps=500, walkers=16)
    proc = run_rewl(["run", str(changed), "--resume"])
    assert proc.returncode == 2 and "[sampler]" in proc.stderr


def test_resume_extends_the_budget(spiral_deck, tmp_path):
    deck = spiral_deck(max_steps=500)
    assert run_rewl(["run", str(deck)]).returncode == 0
    longer = spiral_deck("longer.toml", max_steps=1000)
    proc = run_rewl(["run", str(longer), "--resume"])
    assert proc.returncode == 0, proc.stderr
    assert RunStore(tmp_path / "run").read_run().steps == 1000


def test_resume_without_a_run_is_a_clear_error(spiral_deck, tmp_path):
    proc = run_rewl(["run", str(spiral_deck()), "--resume"])
    assert proc.returncode == 2 and "no run file" in proc.stderr


def test_sigusr1_checkpoints_and_stops(spiral_deck, tmp_path):
    deck = spiral_deck(max_steps=2_000_000, checkpoint_interval=500)
    store = RunStore(tmp_path / "run")
    proc = _start(deck)
    wait_for_checkpoint(store, proc)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 0, err
    rec = store.read_run()
    assert rec.status == "interrupted" and store.latest_step() == rec.steps
    assert "interrupted" in out


def test_stop_during_start_up_ends_resumable_and_bit_identical(spiral_deck, tmp_path):
    """SIGUSR1 as soon as the run catches it (its first act, before torch is imported), and a stop
    file that exists before the start: both end as interrupted runs that resume to the straight run's bits."""
    steps = 3000
    straight = spiral_deck("straight.toml", max_steps=steps, out=str(tmp_path / "straight"))
    assert run_rewl(["run", str(straight)]).returncode == 0
    early = spiral_deck("early.toml", max_steps=steps, out=str(tmp_path / "early"))
    proc = _start(early)
    wait_for_signal_handler(proc, signal.SIGUSR1)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 0, err
    assert "interrupted (signal SIGUSR1)" in out
    flag = tmp_path / "stop"
    flag.touch()
    filed = spiral_deck("filed.toml", max_steps=steps, out=str(tmp_path / "filed"))
    proc = run_rewl(["run", str(filed), "--stop-file", str(flag)])
    assert proc.returncode == 0 and f"interrupted (stop file {flag})" in proc.stdout, proc.stderr
    for name in ("early", "filed"):
        store = RunStore(tmp_path / name)
        rec = store.read_run()
        assert rec.status == "interrupted" and rec.steps < steps and store.latest_step() == rec.steps
        proc = run_rewl(["run", str(tmp_path / f"{name}.toml"), "--resume"])
        assert proc.returncode == 0, proc.stderr
        assert_same_run(RunStore(tmp_path / "straight"), store, 1, steps)


def test_deadline_stops_and_set_is_kept_for_resume(spiral_deck, tmp_path):
    deck = spiral_deck(max_steps=2000)
    proc = run_rewl(["run", str(deck), "--set", "run.seed=5", "--deadline", str(time.time() - 1)])
    assert proc.returncode == 0 and "interrupted (deadline" in proc.stdout, proc.stderr
    store = RunStore(tmp_path / "run")
    assert store.read_run().overrides == ("run.seed=5",)
    proc = run_rewl(["run", str(deck), "--resume"])
    assert proc.returncode == 2 and "[run]" in proc.stderr and "started with --set run.seed=5" in proc.stderr
    proc = run_rewl(["run", str(deck), "--resume", "--set", "run.seed=5"])
    assert proc.returncode == 0, proc.stderr
    rec = store.read_run()
    assert rec.status == "budget-exhausted" and rec.overrides == ("run.seed=5",)
    info = rewl_here(["info", str(tmp_path / "run")])
    assert "--set run.seed=5" in info.stdout


def test_a_second_run_into_a_live_run_directory_is_refused(spiral_deck, tmp_path):
    """While a run writes its directory, `run --force` and `run --resume` into it stop at once with
    exit 2 naming the writer; once it has ended the directory is free again."""
    deck = spiral_deck(max_steps=STEPS, checkpoint_interval=500)
    store = RunStore(tmp_path / "run")
    first = _start(deck)
    wait_for_checkpoint(store, first)
    for flag in ("--force", "--resume"):
        second = run_rewl(["run", str(deck), flag])
        assert second.returncode == 2, second.stderr
        assert f"is being written by another rewl run (process {first.pid} on " in second.stderr, second.stderr
    assert first.poll() is None                       # the first run went on untouched
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=HANG)
    assert first.returncode == 0, err
    proc = run_rewl(["run", str(deck), "--force", "--set", "run.max_steps=200"])
    assert proc.returncode == 0, proc.stderr
    assert store.read_run().status == "budget-exhausted"


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(spiral_deck, tmp_path):
    """A truncated rank file of the latest checkpoint: resume warns, naming it, continues from the
    set before (kept for this) to the same bits as a straight run; with both sets damaged it exits
    2 with one line naming the files and what to do."""
    ranks = 2
    straight = spiral_deck("straight.toml", max_steps=1500, windows=ranks, checkpoint_interval=500,
                           out=str(tmp_path / "straight"))
    assert run_rewl(["run", str(straight)], ranks=ranks).returncode == 0
    first = spiral_deck("first.toml", max_steps=1000, windows=ranks, checkpoint_interval=500, out=str(tmp_path / "run"))
    assert run_rewl(["run", str(first)], ranks=ranks).returncode == 0
    store = RunStore(tmp_path / "run")
    assert sorted(p.name for p in store.ckpt_dir.glob("step_*")) == ["step_000000000500", "step_000000001000"]
    shutil.copytree(tmp_path / "run", tmp_path / "both")
    damaged = store._ckpt_path(1000, 1)
    _truncate(damaged)

    longer = spiral_deck("longer.toml", max_steps=1500, windows=ranks, checkpoint_interval=500, out=str(tmp_path / "run"))
    proc = run_rewl(["run", str(longer), "--resume"], ranks=ranks)
    assert proc.returncode == 0, proc.stderr
    assert f"rewl: warning: {damaged}: not an HDF5 file" in proc.stderr
    assert "resuming from the previous complete checkpoint, step 500" in proc.stderr
    assert "resuming from step 500" in proc.stdout
    assert_same_run(RunStore(tmp_path / "straight"), store, ranks, 1500)
    assert sorted(p.name for p in store.ckpt_dir.glob("step_*")) == ["step_000000001000", "step_000000001500"]

    both = RunStore(tmp_path / "both")
    _truncate(both._ckpt_path(1000, 0))
    _truncate(both._ckpt_path(500, 1))
    proc = run_rewl(["run", str(longer), "--resume", "--out", str(tmp_path / "both")], ranks=ranks)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("rewl: error: ") and "no usable checkpoint" in lines[0]
    assert str(both._ckpt_path(1000, 0)) in lines[0] and str(both._ckpt_path(500, 1)) in lines[0]
    assert "--force" in lines[0]
