"""Shared helpers: decks written into tmp_path, and rewl run as a real (mpiexec) subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rewl.storage import Checkpoint, RunStore

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MPIEXEC = str(BIN / "mpiexec")


def rewl_cmd(args: list[str], ranks: int | None = None) -> list[str]:
    """The command line for `python -m rewl ARGS`, under `mpiexec -n ranks` when ranks is given."""
    cmd = [sys.executable, "-m", "rewl", *args]
    return [MPIEXEC, "-n", str(ranks), *cmd] if ranks else cmd


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["PYTHONUNBUFFERED"] = "1"
    return e


def run_rewl(args: list[str], ranks: int | None = None, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(rewl_cmd(args, ranks), capture_output=True, text=True, timeout=timeout,
                          env=env(), cwd=cwd or ROOT)


SPIRAL_DECK = """
[run]
seed = {seed}
max_steps = {max_steps}

[task]
kind = "spiral"
train_per_class = 20
test_per_class = 20

[model]
hidden = [6, 6, 6]

[sampler]
walkers_per_rank = {walkers}
sync_interval = 50
adapt_interval = 500

[grid.x]
min = -1.5
max = 1.5
width = 0.1

[windows]
count = {windows}
overlap = 0.75
ranks_per_window = {ranks_per_window}

[schedule]
kind = "1/t"
check_interval = 500

[exchange]
interval = 50

[init]
equilibration_steps = 100

[output]
dir = "{out}"
checkpoint_interval = {checkpoint_interval}
log_interval = 1.0
"""


@pytest.fixture
def spiral_deck(tmp_path: Path):
    """Write a small spiral deck; returns its path. Keyword arguments fill the template."""
    def make(name: str = "spiral.toml", **kw) -> Path:
        values = dict(seed=1, max_steps=2000, walkers=32, windows=1, ranks_per_window=1,
                      checkpoint_interval=1000, out=str(tmp_path / "run"))
        values.update(kw)
        path = tmp_path / name
        path.write_text(textwrap.dedent(SPIRAL_DECK.format(**values)))
        return path
    return make


def assert_same_run(a: RunStore, b: RunStore, ranks: int, steps: int) -> None:
    """Two finished runs are equal bit for bit: run files and every field of every rank's last
    checkpoint (wall-clock times excepted)."""
    ra, rb = a.read_run(), b.read_run()
    assert ra.status == rb.status == "budget-exhausted" and ra.steps == rb.steps == steps
    for wa, wb in zip(ra.windows, rb.windows):
        for name in ("ln_g", "hist", "visits", "accuracy_sum"):
            np.testing.assert_array_equal(getattr(wa, name), getattr(wb, name))
        assert (wa.ln_f, wa.stage, wa.converged, wa.flatness) == (wb.ln_f, wb.stage, wb.converged, wb.flatness)
    for name in ("move_attempted", "move_accepted", "swap_attempted", "swap_accepted",
                 "history_step", "history_ln_f", "history_flatness"):
        np.testing.assert_array_equal(getattr(ra, name), getattr(rb, name))
    step = a.latest_step()
    assert step == b.latest_step() == steps
    for rank in range(ranks):
        ca, cb = a.read_checkpoint(step, rank), b.read_checkpoint(step, rank)
        for field in Checkpoint.__dataclass_fields__:
            if field in ("elapsed_seconds", "init_seconds"):
                continue
            va, vb = getattr(ca, field), getattr(cb, field)
            if isinstance(va, np.ndarray):
                np.testing.assert_array_equal(va, vb, err_msg=field)
            else:
                assert va == vb, field
