"""The batch scripts against a live one-node SLURM (tests/helpers/cluster.py): the launch gives one
world of the deck's size (and the 1-rank guard fires when it does not), a chain of time-limited
pieces finishes by itself and equals an uninterrupted run bit for bit, a failing piece ends the
chain, and a 2-seed array with baselines and a dependent analysis job ends in a report.

Skipped, with the reason, where SLURM cannot run (not root, packages missing); CI runs as root and
installs them (.ci/run).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import HANG, REWL, ROOT, assert_same_run, deck_text, env, run_rewl

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from cluster import LocalCluster  # noqa: E402

from rewl.storage import RunStore  # noqa: E402

pytestmark = [pytest.mark.mpi, pytest.mark.slurm]

SLURM = ROOT / "slurm"
VENV = str(Path(sys.executable).parent.parent)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = LocalCluster.unavailable()
    if why:
        pytest.skip(why)
    c = LocalCluster(tmp_path_factory.mktemp("slurm"))
    c.start()
    yield c
    c.stop()


def _write(path: Path, base: str, **tables) -> Path:
    path.write_text(deck_text(base, **tables))
    return path


def _submit(cluster: LocalCluster, cwd: Path, *args: str, **extra_env: str) -> str:
    proc = cluster.run("sbatch", "--parsable", *args, cwd=cwd, extra_env={**env(), "REWL_VENV": VENV, **extra_env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def test_srun_without_mpi_plugin_is_refused_and_pmi2_gives_one_world(cluster, tmp_path):
    deck = _write(tmp_path / "two.toml", "spiral", windows={"count": 2, "overlap": 0.75},
                  run={"seed": 1, "max_steps": 200}, output={"dir": str(tmp_path / "two")})
    cmd = [REWL, "run", str(deck)]
    wrong = cluster.run("srun", "-n", "2", *cmd, cwd=tmp_path, extra_env=env())
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    assert "srun started 2 tasks but MPI sees a world of 1 rank" in wrong.stderr
    assert "--mpi=pmi2" in wrong.stderr and not (tmp_path / "two" / "run.h5").exists()

    right = cluster.run("srun", "--mpi=pmi2", "-n", "2", *cmd, cwd=tmp_path, extra_env=env())
    assert right.returncode == 0, right.stderr
    rec = RunStore(tmp_path / "two").read_run()
    assert rec.status == "budget-exhausted" and rec.n_windows == 2


def test_batch_script_with_mpiexec_inside_the_allocation(cluster, tmp_path):
    deck = _write(tmp_path / "two.toml", "spiral", windows={"count": 2, "overlap": 0.75},
                  run={"seed": 1, "max_steps": 200}, output={"dir": str(tmp_path / "two")})
    job = _submit(cluster, tmp_path, "-n", "2", "-o", str(tmp_path / "log"), str(SLURM / "rewl.sbatch"), str(deck),
                  REWL_LAUNCHER="mpiexec")
    states = cluster.wait_ended([job], timeout=HANG)
    log = (tmp_path / "log").read_text()
    assert states[job] == "COMPLETED", log
    assert "finished: budget-exhausted after 1 piece(s)" in log
    assert RunStore(tmp_path / "two").read_run().n_windows == 2


@pytest.mark.timeout(2 * HANG)
def test_chain_of_pieces_equals_an_uninterrupted_run(cluster, tmp_path):
    """A chain forced to requeue: once the first piece has written its first checkpoint (step 0),
    the test touches the piece's stop file (what the script's trap does when SLURM signals it before
    the time limit); the piece checkpoints and stops, the script requeues the job, and the next
    piece resumes and finishes. The chained run equals an uninterrupted one bit for bit. Nothing
    depends on speed: a slow machine may need more pieces (the deadline of each piece also stops
    it), and the counts are checked against the log."""
    steps, windows = 20_000, {"count": 2, "overlap": 0.75}
    chained, straight = (_write(tmp_path / f"{name}.toml", "spiral", run={"seed": 1, "max_steps": steps}, windows=windows,
                                output={"checkpoint_interval": 1000, "dir": str(tmp_path / name)})
                         for name in ("chained", "straight"))
    job = _submit(cluster, tmp_path, "-n", "2", "--time=10", "-o", str(tmp_path / "log"), str(SLURM / "rewl.sbatch"),
                  str(chained), REWL_STOP_MARGIN="120")
    store = RunStore(tmp_path / "chained")
    while not store.ckpt_dir.joinpath("LATEST").exists():
        assert cluster.job_state(job) in ("PENDING", "CONFIGURING", "RUNNING"), (tmp_path / "log").read_text()
        time.sleep(0.2)
    (tmp_path / f".rewl-stop-{job}").touch()
    reference = run_rewl(["run", str(straight)], ranks=2)
    assert reference.returncode == 0, reference.stderr
    states = cluster.wait_ended([job], timeout=HANG)
    log = (tmp_path / "log").read_text()
    restarts = int(cluster.job_field(job, "Restarts"))
    assert states[job] == "COMPLETED", log
    assert restarts >= 1 and log.count("requeueing") == restarts, log
    assert f"finished: budget-exhausted after {restarts + 1} piece(s)" in log
    assert log.count("resuming") == restarts
    assert_same_run(RunStore(tmp_path / "straight"), store, ranks=2, steps=steps)
    assert not list(tmp_path.glob(".rewl-stop-*"))


def test_a_failing_piece_ends_the_chain(cluster, tmp_path):
    deck = _write(tmp_path / "bad.toml", "spiral", run={"seed": 1, "max_steps": 200}, output={"dir": str(tmp_path / "bad")})
    # a run that exists already: rewl refuses to overwrite it (exit 2) and the chain must not requeue
    assert run_rewl(["run", str(deck)]).returncode == 0
    job = _submit(cluster, tmp_path, "-n", "1", "-o", str(tmp_path / "log"), str(SLURM / "rewl.sbatch"), str(deck))
    states = cluster.wait_ended([job], timeout=HANG)
    log = (tmp_path / "log").read_text()
    assert states[job] == "FAILED" and cluster.job_field(job, "Restarts") == "0", log
    assert "rewl failed (exit 2)" in log and "the chain stops here" in log and "--force" in log


def test_seed_array_baselines_and_dependent_analysis(cluster, tmp_path):
    out = tmp_path / "study"
    deck = _write(tmp_path / "study.toml", "spiral", run={"seed": 1, "max_steps": 4000},
                  output={"dir": str(out), "checkpoint_interval": 2000},
                  baseline={"runs": 4, "steps": 200})
    proc = subprocess.run([str(SLURM / "study.sh"), str(deck), "2", "-o", str(tmp_path / "rewl-%a.log")],
                          env={**cluster.env, **env(), "REWL_VENV": VENV}, cwd=tmp_path, capture_output=True, text=True,
                          timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"rewl array (\d+) .* baselines (\d+), analysis (\d+)", proc.stdout)
    assert found, proc.stdout
    rewl_job, sgd_job, analysis_job = found.groups()
    states = cluster.wait_ended([rewl_job, sgd_job, analysis_job], timeout=HANG)
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("*.log")) + sorted(tmp_path.glob("rewl-*.out")))
    assert states[analysis_job] == "COMPLETED", (states, logs)
    seeds = []
    for k in (0, 1):
        rec = RunStore(out / f"seed-{k}").read_run()
        assert rec.status == "budget-exhausted" and rec.overrides == (f"run.seed={1 + k}",)
        seeds.append(rec.windows[0].ln_g)
    assert (seeds[0] != seeds[1]).any()            # independent seeds
    report = json.loads((out / "report.json").read_text())
    assert report["runs"] == [str(out / "seed-0"), str(out / "seed-1")]
    assert report["sgd_endpoint"]["runs"] == 4
    assert (out / "report.txt").read_text().strip() and (out / "landscape.png").exists()
    assert (out / "baseline.h5").exists() and (out / "seed-0" / "diagnostics.png").exists()
