"""A real SLURM cluster on the simulated nodes (tests/multinode/cluster.py): Debian's slurmctld in node0,
a slurmd and a munged in every node, one munge key shared by all, as on a cluster set up by hand.

Everything lives under the cluster's root: slurm.conf, the munge key, slurmctld's state and the logs
(`<root>/logs/slurm*.log`, `munged-<i>.log`); each node's slurmd spool and munge socket are on its own
disk (`<root>/local`). Commands (sbatch, sinfo, srun, scontrol) find the config through SLURM_CONF,
which `Slurm.env` carries. Nothing outside the cluster's root and namespaces changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import psutil

from tests.multinode.cluster import Cluster

TOOLS = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "sbatch", "sinfo", "srun")


def slurm_problem() -> str | None:
    """Why SLURM cannot run here (its Debian packages missing), or None."""
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test installs slurm-wlm and munge)"
    return None


@dataclass
class Slurm:
    """A running SLURM on `cluster`; `env` is what a node's shell needs for sbatch, sinfo and srun."""

    cluster: Cluster
    conf: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # by log name

    def sh(self, i: int, command: str, *, timeout: float = 60) -> str:
        return self.cluster.sh(i, command, timeout=timeout, env={**os.environ, **self.env})


def write_conf(cluster: Cluster) -> Path:
    """slurm.conf for `cluster`: node0 the controller, every node a one-CPU compute node, no accounting,
    process tracking through /proc (no cgroups needed), root as the SLURM user."""
    top = cluster.root / "slurm"
    (top / "state").mkdir(parents=True, exist_ok=True)
    last = cluster.count - 1
    lines = [
        "ClusterName=llmtest",
        "SlurmctldHost=node0",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={cluster.local / 'munge' / 'munge.socket.2'}",
        f"StateSaveLocation={top / 'state'}",
        f"SlurmctldPidFile={top / 'slurmctld.pid'}",
        f"SlurmctldLogFile={cluster.logs / 'slurmctld.log'}",
        f"SlurmdSpoolDir={cluster.local / 'slurmd'}",
        f"SlurmdPidFile={cluster.local / 'slurmd.pid'}",
        f"SlurmdLogFile={cluster.logs / 'slurmd-%n.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "ReturnToService=2",
        # `sbatch --wait` polls every 2, 8, 32, 32... s while the interval is under MinJobAge/2 (default
        # 300): 16 keeps it at 8 s, with a finished job's record kept twice that long for it to read
        "MinJobAge=16",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "SlurmdParameters=config_overrides",  # CPUs=1 whatever the machine has: no "differs from hardware"
        f"NodeName=node[0-{last}] CPUs=1 State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = top / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    # slurmd 22.05 loads a cgroup plugin even when nothing uses cgroups; inside a node (`ip netns exec`
    # remounts /sys) /sys/fs/cgroup is empty and autodetection fails, so name v1, whose start needs none
    (top / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\nCgroupAutomount=no\n")
    return conf


def _munge_key(cluster: Cluster) -> Path:
    key = cluster.root / "slurm" / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
    return key


@contextmanager
def slurm(cluster: Cluster, *, timeout: float = 60) -> Iterator[Slurm]:
    """Start munged and slurmd on every node and slurmctld on node0; yields once `sinfo` shows every
    node idle; stops them all."""
    conf = write_conf(cluster)
    key = _munge_key(cluster)
    running = Slurm(cluster, conf, env={"SLURM_CONF": str(conf)})
    socket = cluster.local / "munge" / "munge.socket.2"

    def start(i: int, name: str, command: str) -> None:
        log = cluster.logs / f"{name}.out"
        env = {**os.environ, **running.env}
        running.procs[name] = cluster.popen(i, command, env=env, log=log, cwd=cluster.root)

    try:
        for i in range(cluster.count):
            cluster.sh(i, f"mkdir -p -m 0700 {socket.parent} {cluster.local / 'slurmd'}")
            files = f"--pid-file={socket.parent}/pid --seed-file={socket.parent}/seed"
            log = f"--log-file={cluster.logs}/munged-{i}.log"
            start(
                i, f"munged-{i}", f"/usr/sbin/munged -F -f --key-file={key} --socket={socket} {files} {log}"
            )
        munge = f"munge -n -S {socket} | unmunge -S {socket}"  # a credential made and read back
        for i in range(cluster.count):
            _wait(partial(_ok, cluster, i, munge), running, timeout, f"munged answered on node{i}")
        start(0, "slurmctld", f"/usr/sbin/slurmctld -D -f {conf}")
        for i in range(cluster.count):
            start(i, f"slurmd-{i}", f"/usr/sbin/slurmd -D -N {cluster.name(i)} -f {conf}")
        _wait(lambda: _all_idle(running), running, timeout, "every node was idle in sinfo")
        yield running
    finally:
        _stop(list(running.procs.values()))


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every daemon (not only the nsenter that started it), then SIGKILL after 10 s."""
    daemons = []
    for proc in procs:
        with suppress(psutil.NoSuchProcess):
            daemons += [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for daemon in daemons:
        with suppress(psutil.NoSuchProcess):
            daemon.terminate()
    for daemon in psutil.wait_procs(daemons, timeout=10)[1]:
        with suppress(psutil.NoSuchProcess):
            daemon.kill()
    for proc in procs:
        proc.wait()


def _ok(cluster: Cluster, i: int, command: str) -> bool:
    try:
        cluster.sh(i, command, timeout=10)
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    return True


def _all_idle(running: Slurm) -> bool:
    try:
        out = running.sh(0, "sinfo -h -N -o '%N %t'", timeout=10)
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    states = dict(line.split() for line in out.splitlines() if line.strip())
    return len(states) == running.cluster.count and all(s == "idle" for s in states.values())


def _wait(ready: Callable[[], bool], running: Slurm, timeout: float, what: str) -> None:
    """Until `ready()`; a daemon's exit or the timeout raises, with the daemons' output."""
    deadline = time.monotonic() + timeout
    while not ready():
        exited = [name for name, proc in running.procs.items() if proc.poll() is not None]
        if exited or time.monotonic() > deadline:
            logs = running.cluster.logs
            tails = "\n".join(
                f"--- {name}\n{(logs / f'{name}.out').read_text(errors='replace')[-1500:]}"
                for name in exited or running.procs
            )
            why = f"{', '.join(exited)} exited" if exited else f"{timeout} s passed"
            raise RuntimeError(f"{why} before {what} (logs in {logs}):\n{tails}")
        time.sleep(0.5)
