"""Your own task from Python (rewl.Task, rewl.run): a task defined in this file runs through
``mpiexec -n 2 python tests/test_custom_task.py DECK``, gives the bits of the built-in task it
re-implements and its exact entropy, is stopped and resumed to the same bits, and is analysed;
the contract checks name what is wrong.

Run as a script, this file is the user's study script: python test_custom_task.py DECK [--resume]
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rewl


class QuadraticBlocks(rewl.Task):
    """n coordinates in [-1, 1]; x = ln of the sum of squares of the first m, y = of the rest.
    box_quadratic, written as a user would write a task: its entropy is known exactly
    (rewl.testsystems.box_entropy), and a run must give the built-in task's bits."""

    x_label, y_label = "ln E1", "ln E2"
    n, m = 4, 2

    def __init__(self, device: torch.device):
        ones = torch.ones(self.n, dtype=torch.float64, device=device)
        self.set_box("quadratic_blocks", -ones, ones)

    def cvs(self, walkers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_of(walkers), self.y_of(walkers)

    def x_of(self, walkers: torch.Tensor) -> torch.Tensor:
        return torch.log((walkers[:, : self.m] ** 2).sum(dim=1))

    def y_of(self, walkers: torch.Tensor) -> torch.Tensor:
        return torch.log((walkers[:, self.m:] ** 2).sum(dim=1))


if __name__ == "__main__":
    raise SystemExit(rewl.run(sys.argv[1], task=QuadraticBlocks, argv=sys.argv[2:]))   # rewl run's options


# ----------------------------------------------------------------------------------------------
# the tests

from conftest import HANG, MPIEXEC, ROOT, env, rewl_here, run_analysis, run_rewl, wait_for_checkpoint  # noqa: E402
from rewl.storage import RunStore  # noqa: E402
from rewl.tasks import TaskError, validate_task  # noqa: E402
from rewl.testsystems import box_entropy, max_error_after_constant  # noqa: E402

SCRIPT = str(Path(__file__).resolve())
STEPS = 40_000
CUSTOM = {
    "run": {"seed": 5, "max_steps": STEPS},
    "task": {"kind": "custom"},
    "sampler": {"walkers_per_rank": 64, "sigma_initial": 0.3},
    "grid.x": {"min": -3.0, "max": 0.6, "width": 0.15},
    "grid.y": {"min": -3.0, "max": 0.6, "width": 0.15, "mode": "flattened"},   # as box_quadratic's, for equal bits
    "windows": {"count": 2, "overlap": 0.75},
    "schedule": {"kind": "1/t", "ln_f_final": 1e-6},
    "output": {"checkpoint_interval": 5000},
}


def _deck(tmp_path: Path, name: str, task: dict | None = None) -> Path:
    from conftest import _toml_value
    lines = []
    tables = {**CUSTOM, "task": task or CUSTOM["task"], "output": {**CUSTOM["output"], "dir": str(tmp_path / name)}}
    for table, keys in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in keys.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _script(deck: Path, *args: str) -> list[str]:
    return [MPIEXEC, "-n", "2", sys.executable, SCRIPT, str(deck), *args]


@pytest.mark.mpi
def test_custom_task_runs_exactly_resumes_bit_for_bit_and_is_analysed(tmp_path):
    # the custom task stopped by SIGTERM and resumed gives the bits of the built-in task run straight
    # (40,000 steps: any difference in the task or a state the resume lost would part the estimates)
    builtin = _deck(tmp_path, "builtin", task={"kind": "box_quadratic", "n": 4, "m": 2})
    assert run_rewl(["run", str(builtin)], ranks=2).returncode == 0
    stopped = _deck(tmp_path, "stopped")
    store = RunStore(tmp_path / "stopped")
    run = subprocess.Popen(_script(stopped), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    wait_for_checkpoint(store, run)
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=HANG)
    assert run.returncode == 0, err
    assert "quadratic_blocks: 4 parameters" in out
    assert store.read_run().status == "interrupted"
    proc = subprocess.run(_script(stopped, "--resume"), capture_output=True, text=True, env=env(), cwd=ROOT, timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    rec = store.read_run()
    assert rec.status == "budget-exhausted" and rec.steps == STEPS
    assert rec.task == "quadratic_blocks" and rec.n_params == 4 and rec.x_label == "ln E1"
    for mine, theirs in zip(rec.windows, RunStore(tmp_path / "builtin").read_run().windows):
        for name in ("ln_g", "hist", "visits"):
            np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name), err_msg=name)
    for w in rec.windows:
        lo, hi = w.x_bins
        exact = box_entropy(rec.x_edges[lo: hi + 1], rec.y_edges, n=4, m=2, a=1.0)
        error = max_error_after_constant(w.ln_g, exact, w.visits > 0)
        assert error <= 0.2, (w.x_bins, error)       # 40,000 steps end at ln f = 1.6e-2: measured 0.149, 0.121

    report = run_analysis(["report", str(tmp_path / "stopped"), "--json"])
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["x_label"] == "ln E1" and len(data["joins"]) == 1
    assert np.isfinite([v for v in data["equilibrium_mean"] if v is not None]).all()
    info = rewl_here(["info", str(tmp_path / "stopped")])
    assert info.returncode == 0 and "task quadratic_blocks (4 parameters)" in info.stdout


@pytest.mark.mpi
def test_custom_deck_from_the_command_line_says_how_to_run_it(tmp_path):
    deck = _deck(tmp_path, "cli")
    proc = run_rewl(["run", str(deck)])
    assert proc.returncode == 2 and "rewl.run(deck, task=MyTask)" in proc.stderr
    assert not (tmp_path / "cli").exists()
    check = rewl_here(["check", str(deck)])
    assert check.returncode == 0 and "custom: given from Python" in check.stdout


def test_contract_violations_are_named():
    cpu = torch.device("cpu")

    class NoBox(rewl.Task):
        def __init__(self, device):
            pass

    class WrongShape(QuadraticBlocks):
        def cvs(self, walkers):
            return self.x_of(walkers)[:, None], self.y_of(walkers)

    class NotDifferentiable(QuadraticBlocks):
        def x_of(self, walkers):
            return super().x_of(walkers).detach()

    class HardY(QuadraticBlocks):          # a y without gradient (a hard accuracy) cannot drive WLMD
        def md_cvs(self, walkers):
            return self.x_of(walkers), self.y_of(walkers).detach(), None

    cases = [(NoBox, False, "has no lo: call self.set_box"),
             (WrongShape, False, r"cvs\(\)\[0\] \(x\) must be a tensor of shape \(B,\) = \(3,\).*got \(3, 1\)"),
             (NotDifferentiable, False, r"x_of\(\) must be differentiable"),
             (HardY, True, r"WLMD needs x and y of md_cvs\(\) differentiable")]
    for cls, md, message in cases:
        with pytest.raises(TaskError, match=message):
            validate_task(cls(cpu), cpu, md=md)
    validate_task(QuadraticBlocks(cpu), cpu, md=True)
    with pytest.raises(TaskError, match="group sizes"):
        rewl.Task().set_box("t", -torch.ones(3), torch.ones(3), groups={"a": 1, "b": 1})
    with pytest.raises(TaskError, match="hi > lo"):
        rewl.Task().set_box("t", torch.ones(3), torch.ones(3))


def test_set_box_groups():
    task = rewl.Task()
    lo = -torch.tensor([1.0, 1.0, 3.0, 3.0, 3.0])
    task.set_box("t", lo, -lo, groups={"w": 2, "b": 3})
    assert task.n_params == 5 and task.group_names == ["w", "b"] and task.dtype == torch.float32
    assert task.group.tolist() == [0, 0, 1, 1, 1] and task.group_half_width.tolist() == [1.0, 3.0]
