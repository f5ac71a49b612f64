"""A private single-node Slurm cluster for tests, as tests/pg.py is a private PostgreSQL.

`TempSlurm` starts munged (as the `munge` user, with the key in /etc/munge and its socket in a
temporary folder), then slurmctld and slurmd in the foreground on free local ports, with every
state, spool, log and pid file in that folder. Settings for one machine without cgroups:
SlurmUser=root, ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, no accounting. It
stops what it started by pid (SIGTERM, then SIGKILL) and removes the folder. Clients reach it
through SLURM_CONF (`env()`).

Fixture: `slurm` (one cluster for the session; import it into the test module). Tests that
need it skip, saying why, where the
Slurm or munge binaries are missing (`apt-get install slurm-wlm munge`), where this is not root
(slurmd must run jobs as their users), or where there is no munge key.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.pg import free_port

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol")
MUNGE_KEY = Path("/etc/munge/munge.key")
START_S = 60.0  # assumption: daemons up and the node idle well within this on a busy machine


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    absent = [b for b in BINARIES if shutil.which(b) is None and
              not Path(f"/usr/sbin/{b}").exists()]
    if absent:
        return f"Slurm/munge not installed ({', '.join(absent)}; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the test cluster runs slurmd as root (SlurmUser=root); not root here"
    if not MUNGE_KEY.exists():
        return f"no munge key at {MUNGE_KEY}"
    return None


def _bin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class TempSlurm:
    """One throw-away single-node cluster: `start()`, `env()`, `sbatch(...)`, `stop()`."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="colossus-slurm-"))
        self.root.chmod(0o755)
        self.node = socket.gethostname().split(".")[0]
        self.procs: list[subprocess.Popen] = []
        self.conf = self.root / "slurm.conf"
        self.munge_dir = self.root / "munge"
        atexit.register(self.stop)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        return {**(os.environ if base is None else base), "SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        r = self.root
        for d in ("state", "spool", "log"):
            (r / d).mkdir()
        lines = [
            "ClusterName=colossustest", f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_dir / 'munge.socket'}",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "MpiDefault=none",
            "ReturnToService=2", "SlurmdTimeout=60", "KillWait=5",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} "
            "RealMemory=1000 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP "
            "OverSubscribe=YES",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, cmd: list[str], log: str) -> None:
        out = open(self.root / "log" / log, "w")
        self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                           env=self.env(), start_new_session=True))

    def start(self) -> TempSlurm:
        self._write_conf()
        self.munge_dir.mkdir()
        shutil.chown(self.munge_dir, user="munge", group="munge")
        self.munge_dir.chmod(0o711)  # munged refuses a socket folder others cannot enter
        m = self.munge_dir
        # setpriv execs munged itself (no forking wrapper): the pid we keep is munged's
        self._spawn(["setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
                     _bin("munged"), "--foreground", f"--socket={m / 'munge.socket'}",
                     f"--pid-file={m / 'munged.pid'}", f"--log-file={m / 'munged.log'}",
                     f"--seed-file={m / 'munged.seed'}"], "munged.out")
        self._wait(lambda: (m / "munge.socket").exists(), "munged")
        self._spawn([_bin("slurmctld"), "-D", "-i", "-f", str(self.conf)], "slurmctld.out")
        self._spawn([_bin("slurmd"), "-D", "-f", str(self.conf), "-N", self.node], "slurmd.out")
        self._wait(self._idle, "the node to be idle")
        return self

    def _idle(self) -> bool:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                           env=self.env(), timeout=30)
        return r.returncode == 0 and r.stdout.strip() in ("idle", "mixed", "allocated")

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0].args[0]} exited {dead[0].returncode} waiting for "
                                   f"{what}: {self.logs()}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}: {self.logs()}")

    def logs(self) -> str:
        return " | ".join(f"{p.name}: {p.read_text()[-400:]}"
                          for p in sorted((self.root / "log").glob("*")) if p.is_file())

    def sbatch(self, script: str | os.PathLike, *args: str, sbatch_args=(), env=None,
               cwd=None, timeout: float = 600) -> subprocess.CompletedProcess:
        """`sbatch --wait [sbatch_args] script [args]`: returns when the job has ended, with
        the job's exit code."""
        cmd = ["sbatch", "--wait", *sbatch_args, str(script), *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env(env),
                              cwd=cwd, timeout=timeout)

    def stop(self) -> None:
        for p in reversed(self.procs):  # slurmd, slurmctld, then munged
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm():
    why = missing()
    if why:
        pytest.skip(why)
    cluster = TempSlurm()
    try:
        cluster.start()  # installed but not starting is a failure, not a skip
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()
