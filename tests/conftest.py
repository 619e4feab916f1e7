"""Shared helpers: decks written into tmp_path, and rewl run as a real (mpiexec) subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
