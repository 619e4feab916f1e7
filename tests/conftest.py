"""Shared helpers: one deck builder, rewl run as a real (mpiexec) subprocess, run comparison.

Tiers (markers, see setup.cfg): ``mpi`` tests start rewl as subprocesses (under mpiexec or
alone), ``slow`` in-process tests take more than a few seconds. ``make test-fast`` runs the rest.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rewl.storage import RunStore

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MPIEXEC = str(BIN / "mpiexec")
REWL = str(BIN / "rewl")            # the console script the package installs
DATA = Path(__file__).resolve().parent / "data"
# seconds: the guard that keeps a hung subprocess from blocking the suite, never a measure of
# speed (a busy 2-core machine may take minutes where a quiet one takes seconds); every wait in
# the tests ends as soon as what it waits for is there
HANG = 900


def rewl_cmd(args: list[str], ranks: int | None = None) -> list[str]:
    """The command line for `rewl ARGS`, under `mpiexec -n ranks` when ranks is given."""
    cmd = [REWL, *args]
    return [MPIEXEC, "-n", str(ranks), *cmd] if ranks else cmd


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["PYTHONUNBUFFERED"] = "1"
    return e


def run_rewl(args: list[str], ranks: int | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(rewl_cmd(args, ranks), capture_output=True, text=True, timeout=HANG,
                          env=env(), cwd=cwd or ROOT)


def rewl_here(args: list[str]) -> subprocess.CompletedProcess:
    """`rewl ARGS` in this process, its output captured: for the commands that only read a deck
    or a run and print or draw (check, status, info, analyse), which need no subprocess of their
    own (each costs a Python start and a torch import). Not for `run`, which initialises MPI."""
    assert args[0] != "run", "rewl run starts MPI: use run_rewl"
    from rewl.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:              # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(["rewl", *args], code, out.getvalue(), err.getvalue())


def run_analysis(args: list[str]) -> subprocess.CompletedProcess:
    """`rewl analyse ARGS`, in this process."""
    return rewl_here(["analyse", *args])


def wait_until(ready, proc: subprocess.Popen, what: str):
    """Poll `ready()` until it returns something true (returned), while `proc` runs."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < HANG:
        assert proc.poll() is None, f"the process ended before {what}"
        found = ready()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"hung: no {what} in {HANG} s")


def wait_for_checkpoint(store: RunStore, proc: subprocess.Popen) -> int:
    """Wait until the running `proc` has completed a checkpoint after step 0; returns its step."""
    def step() -> int:
        try:
            return store.latest_step()
        except Exception:  # noqa: BLE001 - not written yet
            return 0
    return wait_until(step, proc, "checkpoint after step 0")


def wait_for_signal_handler(proc: subprocess.Popen, sig: int) -> None:
    """Wait until the process `proc` catches signal `sig` (Linux: its SigCgt mask in /proc), so a
    signal sent now is handled, never fatal."""
    def caught() -> bool:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            return False
        mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool(mask >> (sig - 1) & 1)
    wait_until(caught, proc, f"handler of signal {sig}")


# ----------------------------------------------------------------------------------------------
# decks: base decks as nested dicts, overridden table by table

_SPIRAL_NET = {"task": {"kind": "spiral", "train_per_class": 20, "test_per_class": 20},
               "model": {"hidden": [6, 6, 6]}}

BASES: dict[str, dict[str, dict[str, Any]]] = {
    # WLMC on the 116-parameter spiral net (y = hard test accuracy, default grid)
    "spiral": {
        "run": {"seed": 1, "max_steps": 2000}, **_SPIRAL_NET,
        "sampler": {"walkers_per_rank": 32, "sync_interval": 50, "adapt_interval": 500},
        "grid.x": {"min": -1.5, "max": 1.5, "width": 0.1},
        "windows": {"count": 1, "overlap": 0.75, "ranks_per_window": 1},
        "schedule": {"kind": "1/t", "check_interval": 500},
        "exchange": {"interval": 50},
        "init": {"equilibration_steps": 100},
        "output": {"checkpoint_interval": 1000, "log_interval": 1.0},
    },
    # WLMD on the same net, y = smoothed accuracy
    "spiral_md": {
        "run": {"seed": 3, "max_steps": 1000},
        "task": {**_SPIRAL_NET["task"], "accuracy_k": 5.0}, "model": _SPIRAL_NET["model"],
        "sampler": {"kind": "wlmd", "walkers_per_rank": 32, "dt": 0.01, "gamma": 0.1, "kernel_width": 1.0,
                    "wall_strength": 20.0, "sync_interval": 50},
        "grid.x": {"min": -1.5, "max": 1.0, "width": 0.1},
        "grid.y": {"min": 0.0, "max": 1.0, "width": 0.05},
        "windows": {"count": 2, "overlap": 0.75},
        "schedule": {"kind": "1/t", "check_interval": 500, "ln_f_initial": 1 / 32},   # per visit: 1 per step of 32 walkers
        "exchange": {"interval": 50},
        "init": {"equilibration_steps": 100},
        "output": {"checkpoint_interval": 1000, "log_interval": 1.0},
    },
    # WLMC on box_quadratic (exact entropy known); the grid is set by each test
    "box": {
        "run": {"seed": 11, "max_steps": 60_000},
        "task": {"kind": "box_quadratic", "n": 4, "m": 2, "half_width": 1.0},
        "sampler": {"walkers_per_rank": 64, "sigma_initial": 0.3},
        "windows": {"count": 4, "overlap": 0.75},
        "schedule": {"kind": "1/t", "ln_f_final": 1e-6},
        "output": {"checkpoint_interval": 10_000},
    },
    # WLMD on box_quadratic where S = ln E1 + ln E2 + const on the whole grid
    "box_md": {
        "run": {"seed": 7, "max_steps": 40_000},
        "task": {"kind": "box_quadratic", "n": 4, "m": 2},
        "sampler": {"kind": "wlmd", "walkers_per_rank": 64, "dt": 0.01, "gamma": 0.1, "kernel_width": 2.0,
                    "wall_strength": 20.0, "sync_interval": 100},
        "grid.x": {"min": -3.0, "max": 0.0, "width": 0.15},
        "grid.y": {"min": -3.0, "max": 0.0, "width": 0.15},
        "windows": {"count": 2, "overlap": 0.75},
        "schedule": {"kind": "1/t", "ln_f_initial": 1 / 64},   # per visit: 1 per step of the 64 walkers
        "init": {"equilibration_steps": 200},
        "output": {"checkpoint_interval": 20_000, "log_interval": 5.0},
    },
    # WLMD on spiral regression (FNN 2 -> 8 -> 8 -> 1), with Adam baselines
    "regression": {
        "run": {"seed": 2, "max_steps": 1000},
        "task": {"kind": "spiral_regression", "points": 100},
        "model": {"hidden": [8, 8]},
        "sampler": {"kind": "wlmd", "walkers_per_rank": 16, "dt": 0.001, "wall_strength": 3000.0},
        "grid.x": {"min": -3.0, "max": 1.0, "width": 0.1},
        "grid.y": {"min": -4.0, "max": 4.0, "width": 0.1},
        "windows": {"count": 2},
        "schedule": {"kind": "halving", "ln_f_initial": 1 / 16},
        "init": {"equilibration_steps": 100},
        "output": {"checkpoint_interval": 1000},
        "baseline": {"optimizer": "adam", "learning_rate": 0.01, "batch_size": 10, "steps": 300, "runs": 8},
    },
}
# WLMD regression on a feature matrix from a file (each test names the file and its width)
BASES["features"] = {**BASES["regression"], "task": {"kind": "features"}, "model": {"hidden": [4], "activation": "silu"}}
# WLMD on the MNIST CNN (each test names the image files)
BASES["mnist"] = {**BASES["spiral_md"], "task": {"kind": "mnist"}, "model": {"activation": "relu"}}
# WLMD on the CIFAR-10 ResNet (each test names the binary files)
BASES["cifar10"] = {**BASES["mnist"], "task": {"kind": "cifar10"}}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def deck_text(base: str, **tables: dict[str, Any] | None) -> str:
    """The TOML of base deck `base` with tables updated key by key; a table given as None is
    removed. Dotted tables are named with '__': grid__x={"width": 0.2}."""
    deck = copy.deepcopy(BASES[base])
    for name, values in tables.items():
        name = name.replace("__", ".")
        if values is None:
            deck.pop(name, None)
        else:
            deck.setdefault(name, {}).update(values)
    return "".join(f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items()) + "\n"
                   for name, values in deck.items())


@pytest.fixture
def make_deck(tmp_path: Path):
    """make_deck(base, name, **tables): write tmp_path/NAME.toml whose output goes to tmp_path/NAME
    (unless [output] dir is given); returns its path."""
    def make(base: str = "spiral", name: str = "deck", **tables: dict[str, Any] | None) -> Path:
        output = {"dir": str(tmp_path / name), **(tables.pop("output", None) or {})}
        path = tmp_path / f"{name}.toml"
        path.write_text(deck_text(base, output=output, **tables))
        return path
    return make


@pytest.fixture
def spiral_deck(make_deck, tmp_path: Path):
    """The WLMC spiral deck with the knobs most tests turn; output in tmp_path/run unless `out`."""
    def make(name: str = "spiral.toml", seed: int = 1, max_steps: int = 2000, walkers: int = 32, windows: int = 1,
             ranks_per_window: int = 1, checkpoint_interval: int = 1000, out: str | None = None,
             **tables: dict[str, Any]) -> Path:
        output = {"dir": out or str(tmp_path / "run"), "checkpoint_interval": checkpoint_interval}
        return make_deck("spiral", Path(name).stem, run={"seed": seed, "max_steps": max_steps},
                         sampler={"walkers_per_rank": walkers},
                         windows={"count": windows, "ranks_per_window": ranks_per_window}, output=output, **tables)
    return make


# ----------------------------------------------------------------------------------------------
# comparing runs


def flat_fields(record: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a record (dataclasses, dicts and lists of them, nested) by its dotted name."""
    if dataclasses.is_dataclass(record):
        record = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    if isinstance(record, dict):
        items = record.items()
    elif isinstance(record, list) and record and (dataclasses.is_dataclass(record[0]) or isinstance(record[0], dict)):
        items = ((str(k), item) for k, item in enumerate(record))
    else:
        return {prefix.rstrip("."): record}
    out = {}
    for name, value in items:
        out.update(flat_fields(value, f"{prefix}{name}."))
    return out


WALL_CLOCK = ("elapsed_seconds", "init_seconds")


def assert_same_records(a: Any, b: Any) -> None:
    """Two records are equal in every field (bit for bit), wall-clock times excepted."""
    fa, fb = flat_fields(a), flat_fields(b)
    assert fa.keys() == fb.keys()
    for name, va in fa.items():
        if name.rsplit(".", 1)[-1] in WALL_CLOCK or name in ("deck_text", "deck_path"):
            continue
        vb = fb[name]
        if isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb, err_msg=name)
        elif isinstance(va, float) and np.isnan(va):
            assert isinstance(vb, float) and np.isnan(vb), name
        else:
            assert va == vb, name


def assert_same_run(a: RunStore, b: RunStore, ranks: int, steps: int) -> None:
    """Two finished runs are equal bit for bit: run files and every field of every rank's last
    checkpoint (wall-clock times excepted)."""
    ra, rb = a.read_run(), b.read_run()
    assert ra.status == rb.status == "budget-exhausted" and ra.steps == rb.steps == steps
    assert_same_records(ra, rb)
    step = a.latest_step()
    assert step == b.latest_step() == steps
    for rank in range(ranks):
        assert_same_records(a.read_checkpoint(step, rank), b.read_checkpoint(step, rank))


def assert_batched_equals_plain(task, count: int = 3) -> tuple:
    """A network task's batched md_cvs on `count` walkers equals its plain nn.Module per walker,
    values (to 1e-5) and gradients (to 1e-4); returns the batched x, y, hard accuracy."""
    import torch
    walkers = task.sample_uniform(count, torch.Generator(task.lo.device).manual_seed(0)).requires_grad_(True)
    x, y, hard = task.md_cvs(walkers)
    (x.sum() + y.sum()).backward()
    for k in range(count):
        torch.nn.utils.vector_to_parameters(walkers[k].detach().clone(), task.module.parameters())
        task.module.zero_grad()
        x_plain, y_plain = task.plain_cvs(task.module)
        assert x_plain.item() == pytest.approx(x[k].item(), rel=1e-5, abs=1e-6)
        assert y_plain.item() == pytest.approx(y[k].item(), rel=1e-5, abs=1e-6)
        (x_plain + y_plain).backward()
        grad = torch.cat([p.grad.flatten() for p in task.module.parameters()])
        torch.testing.assert_close(grad, walkers.grad[k], rtol=1e-4, atol=1e-6)
    return x, y, hard


def assert_chunked_equals_whole(task, chunk: int, count: int = 3) -> None:
    """A network task evaluated `chunk` points at a time (``ChunkedTotals``) gives the CVs of all
    points at once and their gradients (to rtol 1e-4), for md_cvs, x_of, y_of and the hard test
    accuracy; and a step's peak memory (forward and backward, ``step_memory``) is smaller."""
    import torch

    from rewl.bench import step_memory
    walkers = task.sample_uniform(count, torch.Generator(task.lo.device).manual_seed(1))

    def evaluate(chunk_points: int) -> tuple[list[torch.Tensor], int]:
        task.chunk_points = chunk_points
        w = walkers.clone().requires_grad_(True)
        results: list[torch.Tensor] = []

        def step() -> None:
            x, y, hard = task.md_cvs(w)
            grad, = torch.autograd.grad(x.sum() + 0.5 * y.sum(), w)
            results[:] = [x, y, grad] + ([] if hard is None else [hard])
        peak, _ = step_memory(step, task.lo.device)
        w_x = walkers.clone().requires_grad_(True)
        grad_x, = torch.autograd.grad(task.x_of(w_x).sum(), w_x)
        y_of = task.y_of(walkers)
        results += [task.x_of(walkers), grad_x, task.hard_test_accuracy(walkers, results[1]) if task.has_accuracy else
                    torch.zeros(()), torch.zeros(()) if y_of is None else y_of]
        return [r.detach() for r in results], peak
    whole, whole_peak = evaluate(0)
    chunked, chunked_peak = evaluate(chunk)
    task.chunk_points = 0
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert chunked_peak < whole_peak, (chunked_peak, whole_peak)
