"""A one-node SLURM (munged, slurmctld, slurmd) in a temporary directory, for the batch-script tests.

Needs root and Debian's ``slurmctld slurmd slurm-client munge`` (``.ci/run`` installs them when it
runs as root). ``LocalCluster.unavailable()`` says why a cluster cannot be started here, or None.
Also runnable by hand: ``python tests/helpers/cluster.py DIR`` boots one and prints its SLURM_CONF.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "srun", "sacct")


def _which(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).exists()), None)


class LocalCluster:
    """Start with ``start()``, stop with ``stop()``; ``env`` is the environment the clients need."""

    def __init__(self, root: Path, cpus: int = 2):
        self.root, self.cpus = Path(root), cpus
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge.socket"
        self.munged_pid: int | None = None

    @staticmethod
    def unavailable() -> str | None:
        if os.name != "posix" or os.geteuid() != 0:
            return "the local SLURM needs root (slurmd runs jobs as their user); run the tests as root, as CI does"
        missing = [n for n in DAEMONS + ("sbatch", "scontrol", "srun") if _which(n) is None]
        if missing:
            return (f"SLURM is not installed ({', '.join(missing)} missing): "
                    "apt-get install slurmctld slurmd slurm-client munge (.ci/run does this as root)")
        return None

    @property
    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e["SLURM_CONF"] = str(self.conf)
        for var in [v for v in e if v.startswith(("SLURM_", "SBATCH_", "SRUN_")) and v != "SLURM_CONF"]:
            del e[var]           # a test run inside a SLURM job must not leak its job into ours
        return e

    def _write_conf(self) -> None:
        r = self.root
        for d in ("state", "spool"):
            (r / d).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""\
ClusterName=rewltest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket},cred_expire=10
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=30
MailProg=/bin/true
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def start(self, timeout: float = 30) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        pidfile = self.root / "munged.pid"
        subprocess.run([_which("munged"), "--force", "-S", str(self.socket), "--key-file", str(key),
                        "--pid-file", str(pidfile), "--log-file", str(self.root / "munged.log"),
                        "--seed-file", str(self.root / "munged.seed")], check=True, capture_output=True)
        self.munged_pid = int(pidfile.read_text().strip())
        env = self.env
        subprocess.run([_which("slurmctld"), "-i"], env=env, check=True, capture_output=True)
        subprocess.run([_which("slurmd")], env=env, check=True, capture_output=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the local SLURM did not come up in {timeout:.0f} s; logs in {self.root}")

    def stop(self) -> None:
        env = self.env
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True)
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True)
        for pidfile in ("slurmd.pid", "slurmctld.pid"):
            _wait_gone(self.root / pidfile)
        if self.munged_pid:
            try:
                os.kill(self.munged_pid, 15)
            except ProcessLookupError:
                pass
            self.munged_pid = None

    # -- the clients ---------------------------------------------------------------------------

    def run(self, *args: str, cwd: Path | None = None, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env={**self.env, **(extra_env or {})}, cwd=cwd, capture_output=True,
                              text=True, timeout=120)

    def job_state(self, job_id: str) -> str:
        """The job's state from the controller (e.g. PENDING, RUNNING, COMPLETED, FAILED)."""
        out = self.run("scontrol", "-o", "show", "job", job_id).stdout
        for field in out.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return "UNKNOWN"

    def job_field(self, job_id: str, name: str) -> str:
        out = self.run("scontrol", "-o", "show", "job", job_id).stdout
        for field in out.split():
            if field.startswith(f"{name}="):
                return field.split("=", 1)[1]
        return ""

    def wait_ended(self, job_ids: list[str], timeout: float) -> dict[str, str]:
        """Wait until no job of `job_ids` is pending, running, requeued or completing; their final states."""
        t0 = time.monotonic()
        live = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED",
                "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT"}
        while True:
            states = {j: self.job_state(j) for j in job_ids}
            if not any(s in live for s in states.values()):
                return states
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"jobs still live after {timeout:.0f} s: {states}")
            time.sleep(1)


def _wait_gone(pidfile: Path, timeout: float = 15) -> None:
    t0 = time.monotonic()
    while pidfile.exists() and time.monotonic() - t0 < timeout:
        try:
            os.kill(int(pidfile.read_text().strip() or 0), 0)
        except (ProcessLookupError, ValueError):
            return
        time.sleep(0.2)


if __name__ == "__main__":
    why = LocalCluster.unavailable()
    if why:
        sys.exit(why)
    cluster = LocalCluster(Path(sys.argv[1]).resolve())
    cluster.start()
    print(f"export SLURM_CONF={cluster.conf}")
