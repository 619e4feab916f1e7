"""Wang-Landau molecular dynamics end to end: exact entropy of box_quadratic through mpiexec with
two windows, bit-exact resume with velocities, and the spiral tasks under wlmd."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, assert_same_run, env, run_rewl
from exact import box_entropy, max_error_after_constant
from rewl.storage import RunStore

BOX_MD = """
[run]
seed = {seed}
max_steps = {steps}
[task]
kind = "box_quadratic"
n = 4
m = 2
[sampler]
kind = "wlmd"
walkers_per_rank = 64
dt = {dt}
gamma = 0.1
kernel_width = 2.0
wall_strength = 20.0
sync_interval = 100
[grid.x]
min = -3.0
max = 0.0
width = 0.15
[grid.y]
min = -3.0
max = 0.0
width = 0.15
[windows]
count = 2
overlap = 0.75
[schedule]
kind = "1/t"
[init]
equilibration_steps = 200
[output]
dir = "{out}"
checkpoint_interval = {checkpoint}
log_interval = 5.0
"""


def test_wlmd_box_quadratic_recovers_exact_entropy(tmp_path):
    # the grid lies where the sphere fits in the box (E <= a^2): S = ln E1 + ln E2 + const, and its
    # edges are artificial (soft walls, mirrored kernel), so any bias would show
    deck = tmp_path / "box_md.toml"
    deck.write_text(BOX_MD.format(seed=7, steps=40_000, dt=0.01, out=tmp_path / "run", checkpoint=20_000))
    proc = run_rewl(["run", str(deck)], ranks=2, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    rec = RunStore(tmp_path / "run").read_run()
    assert rec.sampler == "wlmd" and rec.swap_accepted.sum() > 0
    exact = box_entropy(rec.x_edges, rec.y_edges, 4, 2, 1.0)
    errors = []
    for w in rec.windows:
        lo, hi = w.x_bins
        mask = w.visits > 0
        assert mask.all()
        errors.append(max_error_after_constant(w.ln_g, exact[lo:hi], mask))
    print(f"wlmd box n=4 m=2: max |S_est - S_exact| per window after its constant: {np.round(errors, 3)}")
    assert max(errors) <= 0.2, errors


SPIRAL_MD = """
[run]
seed = 3
max_steps = {steps}
[task]
kind = "spiral"
train_per_class = 20
test_per_class = 20
accuracy_k = 5.0
[model]
hidden = [6, 6, 6]
[sampler]
kind = "wlmd"
walkers_per_rank = 32
dt = 0.01
gamma = 0.1
kernel_width = 1.0
wall_strength = 20.0
sync_interval = 50
[grid.x]
min = -1.5
max = 1.0
width = 0.1
[grid.y]
min = 0.0
max = 1.0
width = 0.05
[windows]
count = 2
overlap = 0.75
[schedule]
kind = "{schedule}"
{schedule_keys}
check_interval = 500
[exchange]
interval = 50
[init]
equilibration_steps = 100
[output]
dir = "{out}"
checkpoint_interval = 1000
log_interval = 1.0
"""


def _spiral_md(tmp_path, name: str, steps: int, schedule: str = "1/t", schedule_keys: str = ""):
    deck = tmp_path / f"{name}.toml"
    deck.write_text(SPIRAL_MD.format(steps=steps, out=tmp_path / name, schedule=schedule,
                                     schedule_keys=schedule_keys))
    return deck


def test_wlmd_resume_is_bit_identical_with_velocities(tmp_path):
    """2 ranks, 2 windows: stop at 1500 steps, resume to 3000; equal to a straight 3000-step run
    (velocities, smoothed-accuracy estimate, hard-accuracy sums, exchanges, RNG states)."""
    straight = _spiral_md(tmp_path, "straight", 3000)
    proc = run_rewl(["run", str(straight)], ranks=2, timeout=600)
    assert proc.returncode == 0, proc.stderr
    first = _spiral_md(tmp_path, "stopped", 1500)
    assert run_rewl(["run", str(first)], ranks=2, timeout=600).returncode == 0
    longer = tmp_path / "longer.toml"
    longer.write_text(first.read_text().replace("max_steps = 1500", "max_steps = 3000"))
    proc = run_rewl(["run", str(longer), "--resume", "--out", str(tmp_path / "stopped")], ranks=2, timeout=600)
    assert proc.returncode == 0, proc.stderr
    a, b = RunStore(tmp_path / "straight"), RunStore(tmp_path / "stopped")
    assert_same_run(a, b, 2, 3000)
    rec = a.read_run()
    assert rec.sampler == "wlmd" and rec.y_label == "A_smooth" and rec.swap_accepted.sum() > 0
    ck = a.read_checkpoint(3000, 0)
    assert ck.velocities.shape == ck.params.shape == (32, 116)
    for w in rec.windows:
        seen = w.visits > 0
        mean = w.accuracy_sum[seen] / w.visits[seen]
        assert ((mean >= 0) & (mean <= 1)).all()
    # walkers inside the window most of the time; the progress line reports the kinetic temperature
    assert (rec.move_accepted / rec.move_attempted).min() > 0.5
    assert re.search(r"T=\d\.\d\d", proc.stdout)


def test_wlmd_ramp_schedule_runs_and_follows_the_factor(tmp_path):
    deck = _spiral_md(tmp_path, "ramp", 1000, "ramp", "ln_f_initial = 0.5\nramp_steps = 200\nplateau_end = 600\n"
                      "decay_time = 100")
    proc = run_rewl(["run", str(deck)], ranks=2, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / "ramp").read_run()
    # at step 1000: 0.5 * 100 / (1000 - 600 + 100), set before the last step (999)
    expected = 0.5 * 100 / (999 - 600 + 100)
    for w in rec.windows:
        assert w.ln_f == pytest.approx(expected)
    np.testing.assert_allclose(rec.history_ln_f[0], 0.5)      # step 500: on the plateau


REGRESSION = """
[run]
seed = 2
max_steps = 1000
[task]
kind = "spiral_regression"
points = 100
[model]
hidden = [8, 8]
[sampler]
kind = "wlmd"
walkers_per_rank = 16
dt = 0.001
wall_strength = 3000.0
[grid.x]
min = -3.0
max = 1.0
width = 0.1
[grid.y]
min = -4.0
max = 4.0
width = 0.1
[windows]
count = 2
[schedule]
kind = "halving"
[init]
equilibration_steps = 100
[output]
dir = "{out}"
checkpoint_interval = 1000
[baseline]
optimizer = "adam"
learning_rate = 0.01
batch_size = 10
steps = 300
runs = 8
"""


def test_spiral_regression_runs_trains_baselines_and_is_analysed(tmp_path):
    deck = tmp_path / "regression.toml"
    deck.write_text(REGRESSION.format(out=tmp_path / "run"))
    proc = run_rewl(["run", str(deck)], ranks=2, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / "run").read_run()
    assert (rec.task, rec.n_params, rec.y_label) == ("spiral_regression", 2 * 8 + 8 + 8 * 8 + 8 + 8 + 1, "ln L_test")
    assert all(w.accuracy_sum is None for w in rec.windows)        # no classes: nothing recorded beside y
    assert all((w.visits > 0).sum() > 10 for w in rec.windows)
    proc = run_rewl(["sgd", str(deck)], timeout=300)
    assert proc.returncode == 0, proc.stderr
    base = RunStore.read_baseline(tmp_path / "run" / "baseline.h5")
    assert base.y_label == "ln L_test" and base.x[:, -1].mean() < base.x[:, 0].mean()   # Adam lowers the loss
    assert np.isnan(base.accuracy).all()
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", str(tmp_path / "run"), "--max-residual", "100"],
                          capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "y = ln L_test" in proc.stdout and "<A> eq" not in proc.stdout
