"""Launch and placement, in-process: the srun guard, the GPU of each rank under the environment
variables of one- and multi-node allocations, the refusal to share a GPU, stop requests, deck
overrides (--set) and the scripts' helpers (check --print, status); and, as subprocesses, the
installed `rewl` command."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from conftest import HANG, ROOT, env, run_rewl
from rewl import __version__, stop
from rewl.cli import main
from rewl.comm import launch_problem
from rewl.config import DeckError, parse
from rewl.devices import describe_mapping, gpu_for_rank, gpu_sharing_problem, local_rank

# -- srun without an MPI plugin ----------------------------------------------------------------


def test_guard_fires_for_srun_tasks_in_one_rank_worlds():
    srun_no_pmi = {"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "2", "SLURM_NTASKS": "4"}
    problem = launch_problem(1, srun_no_pmi)
    assert problem and "srun started 4 tasks" in problem and "--mpi=pmi2 -n 4" in problem and "mpiexec -n 4" in problem


@pytest.mark.parametrize("world, environ", [
    (4, {"SLURM_STEP_NUM_TASKS": "4", "PMI_RANK": "0"}),          # srun --mpi=pmi2
    (4, {"SLURM_STEP_NUM_TASKS": "1", "MPI_LOCALRANKID": "3"}),   # mpiexec inside an allocation: one proxy task
    (8, {"SLURM_STEP_NUM_TASKS": "2"}),                           # mpiexec over two nodes
    (1, {"SLURM_NTASKS": "4"}),                                   # the batch shell itself: no step
    (1, {"SLURM_STEP_NUM_TASKS": "1"}),                           # srun -n 1
    (1, {}),                                                      # no scheduler
])
def test_guard_is_quiet_for_right_launches(world, environ):
    assert launch_problem(world, environ) is None


# -- one GPU per node-local rank -----------------------------------------------------------------


def _ranks(envs: list[dict[str, str]], n_visible: int) -> list[int]:
    return [gpu_for_rank(e, n_visible) for e in envs]


def test_one_node_srun_four_tasks_four_gpus():
    envs = [{"SLURM_PROCID": str(r), "SLURM_LOCALID": str(r), "CUDA_VISIBLE_DEVICES": "0,1,2,3"} for r in range(4)]
    assert _ranks(envs, 4) == [0, 1, 2, 3]
    assert local_rank(envs[2]) == (2, "SLURM_LOCALID")


def test_mpiexec_inside_allocation_uses_mpis_local_rank_not_slurms():
    # MPICH's proxy is the node's only SLURM task: SLURM_LOCALID is 0 for every rank (measured)
    envs = [{"SLURM_LOCALID": "0", "SLURM_PROCID": "0", "MPI_LOCALRANKID": str(r), "MPI_LOCALNRANKS": "4"} for r in range(4)]
    assert _ranks(envs, 4) == [0, 1, 2, 3]


def test_two_nodes_three_ranks_each_use_the_local_rank_not_the_global_one():
    envs = [{"SLURM_PROCID": str(r), "SLURM_LOCALID": str(r % 3), "SLURM_NODEID": str(r // 3)} for r in range(6)]
    assert _ranks(envs, 4) == [0, 1, 2, 0, 1, 2]          # global rank mod 4 would give 3, 0, 1 on node 1
    openmpi = [{"OMPI_COMM_WORLD_RANK": str(r), "OMPI_COMM_WORLD_LOCAL_RANK": str(r % 3)} for r in range(6)]
    assert _ranks(openmpi, 4) == [0, 1, 2, 0, 1, 2]


def test_gpu_per_task_binding_gives_each_rank_its_own_visible_gpu():
    # --gpus-per-task=1: SLURM sets CUDA_VISIBLE_DEVICES to the task's one GPU; it is cuda:0 there
    envs = [{"SLURM_LOCALID": str(r), "CUDA_VISIBLE_DEVICES": str(r)} for r in range(4)]
    assert _ranks(envs, 1) == [0, 0, 0, 0]
    identities = [("n1", f"GPU-uuid-{r}", "cuda:0") for r in range(4)]
    assert gpu_sharing_problem(identities, allowed=False) is None


def test_more_ranks_than_gpus_is_refused_unless_allowed():
    envs = [{"SLURM_LOCALID": str(r)} for r in range(6)]
    indices = _ranks(envs, 4)
    assert indices == [0, 1, 2, 3, 0, 1]
    identities = [("n1", f"GPU-{i}", f"cuda:{i}") for i in indices]
    problem = gpu_sharing_problem(identities, allowed=False)
    assert problem and "ranks 0, 4 on n1 cuda:0" in problem and "ranks 1, 5" in problem and "share_gpus" in problem
    assert gpu_sharing_problem(identities, allowed=True) is None


def test_same_index_on_two_nodes_is_not_sharing():
    identities = [("n1", "GPU-a", "cuda:0"), ("n2", "GPU-a", "cuda:0")]   # same id string, different hosts
    assert gpu_sharing_problem(identities, allowed=False) is None
    assert describe_mapping(identities) == "n1: rank 0 cuda:0; n2: rank 1 cuda:0"
    assert describe_mapping([("n1", "", "cpu")] * 3) == "cpu"


def test_no_launcher_means_local_rank_zero():
    assert local_rank({}) == (0, "")
    assert local_rank({"SLURM_LOCALID": "x", "MPI_LOCALRANKID": "1"}) == (1, "MPI_LOCALRANKID")


# -- stop requests ----------------------------------------------------------------------------


@pytest.fixture
def no_signals_received():
    """No signal recorded before or after, and pytest's own handlers back in place afterwards."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    stop._received.clear()
    yield
    stop._received.clear()
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def test_stop_file_deadline_and_signal(tmp_path, no_signals_received):
    flag = tmp_path / "stop"
    req = stop.StopRequest(str(flag), deadline=time.time() + 3600)
    assert req.reason() is None
    flag.touch()
    assert req.reason() == f"stop file {flag}"
    assert "deadline" in stop.StopRequest(None, deadline=time.time() - 1).reason()
    req = stop.StopRequest()
    signal.raise_signal(signal.SIGUSR1)           # recorded (the handler has run on return), not fatal
    assert req.reason() == "signal SIGUSR1"


# -- --set, check --print, status -------------------------------------------------------------


def test_overrides_apply_with_the_usual_checks(spiral_deck):
    text = spiral_deck().read_text()
    cfg = parse(text, "d.toml", ("run.seed=7", "grid.x.min=-2", 'run.device="cpu"'))
    assert cfg.run.seed == 7 and cfg.grid.x.min == -2 and cfg.run.device == "cpu"
    assert cfg.overrides == ("run.seed=7", "grid.x.min=-2", 'run.device="cpu"')
    cases = {"run.seed=-1": "[run] seed: must be >= 0", "run.seed": "expected TABLE.KEY=VALUE",
             "run.device=cpu": "is not a TOML value", "run.sed=3": "did you mean 'seed'",
             "seed=3": "expected TABLE.KEY=VALUE", "rn.seed=3": "did you mean [run]"}
    for item, message in cases.items():
        with pytest.raises(DeckError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse(text, "d.toml", (item,))


def test_check_print_and_status(spiral_deck, tmp_path, capsys):
    deck = str(spiral_deck(windows=2))
    assert main(["check", deck, "--print", "ranks"]) == 0
    assert main(["check", deck, "--print", "output_dir"]) == 0
    assert main(["check", deck, "--out", "elsewhere", "--print", "output_dir"]) == 0
    assert main(["status", deck]) == 0
    assert capsys.readouterr().out.split() == ["2", str(tmp_path / "run"), "elsewhere", "none"]


@pytest.mark.mpi
def test_the_rewl_command_and_its_module_forms():
    """The installed `rewl` command: --version, the analysis as `rewl analyse`; `python -m rewl` and
    `python -m analysis` are the same programs."""
    version = run_rewl(["--version"])
    assert version.returncode == 0 and version.stdout.strip() == f"rewl {__version__}"
    helped = run_rewl(["--help"])
    assert helped.returncode == 0 and "analyse" in helped.stdout and "sgd" in helped.stdout
    analyse = run_rewl(["analyse", "--help"])
    assert analyse.returncode == 0 and analyse.stdout.startswith("usage: rewl analyse")
    assert "windows" in analyse.stdout and "landscape" in analyse.stdout
    for module, args, first in (("rewl", ["--version"], f"rewl {__version__}"),
                                ("analysis", ["--help"], "usage: python -m analysis")):
        proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env(),
                              cwd=ROOT, timeout=HANG)
        assert proc.returncode == 0 and proc.stdout.startswith(first), proc.stderr
