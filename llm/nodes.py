"""What each node runs, asked over ssh before a launch (llm.preflight) and by every rank at start.

`facts()` is cheap (no torch import): the interpreter, the versions of torch, DeepSpeed and this
code, the first entry of PATH, free disk where the run writes, and the GPUs nvidia-smi lists.
`python -m llm.preflight --facts` prints them as JSON; the preflight runs that on every host over
ssh, the way DeepSpeed's launcher will (the same python, in the same folder, with .deepspeed_env's
PATH), and compares them with this host's.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from llm.errors import UsageError
from llm.version import code_version

# what must be the same on every node for ranks to agree (and for their JIT-built ops to match)
SAME_EVERYWHERE = ("python", "torch", "deepspeed", "llm")
SAME_FIX = "install the same versions on every node (the same commit, then make setup)"


def facts(run_dir: Path) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in ("torch", "deepspeed"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    code = code_version()
    where = next((p for p in [run_dir, *run_dir.parents] if p.exists()), Path("/"))
    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "path_first": os.environ.get("PATH", "").split(os.pathsep)[0],
        **versions,
        "llm": (code["git_sha"] or "unknown")[:12] + ("+changes" if code["dirty"] else ""),
        "disk_free_gb": round(shutil.disk_usage(where).free / 1e9, 1),
        "disk_at": str(where),
        "gpus": gpu_names(),
    }


def gpu_names() -> list[str]:
    """The GPUs nvidia-smi lists ([] without one)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def differences(here: dict[str, Any], there: dict[str, Any]) -> list[str]:
    """'torch 2.13.0 there, 2.12.0 here' for each of SAME_EVERYWHERE that differs."""
    return [
        f"{key} {there.get(key)} there, {here.get(key)} here"
        for key in SAME_EVERYWHERE
        if there.get(key) != here.get(key)
    ]


def gpu_problem(gpus: list[str], slots: int, env: dict[str, str]) -> str | None:
    """A node's GPUs against its hostfile slots, and GeForce cards that need NCCL_P2P_DISABLE=1."""
    if not gpus:
        return None  # a CPU node (DS_ACCELERATOR=cpu): slots are processes
    if len(gpus) < slots:
        return f"{len(gpus)} GPU(s) but slots={slots}; lower slots to {len(gpus)}"
    if slots > 1 and any("geforce" in g.lower() for g in gpus) and env.get("NCCL_P2P_DISABLE") != "1":
        return (
            f"{gpus[0]}: consumer cards hang NCCL's peer-to-peer transfers; export NCCL_P2P_DISABLE=1 before "
            "python -m llm.preflight --write-env (it carries NCCL_* to every node)"
        )
    return None


def probe(
    host: str, *, cwd: Path, path: str | None, run_dir: Path, ssh_port: int | None = None
) -> dict[str, Any]:
    """Run `python -m llm.preflight --facts` on `host` over ssh; its facts, or UsageError saying why not."""
    env = f"PATH={shlex.quote(path)} " if path else ""
    remote = (
        f"cd {shlex.quote(str(cwd))} && {env}{shlex.quote(sys.executable)} -m llm.preflight --facts "
        f"--run-dir {shlex.quote(str(run_dir))}"
    )
    port = ["-p", str(ssh_port)] if ssh_port else []
    command = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *port, host, remote]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise UsageError(f"{host}: no answer over ssh within 120 s") from None
    err = (done.stderr.strip().splitlines() or [""])[-1]
    if done.returncode == 255:  # ssh's own failure: the host was not reached
        raise UsageError(
            f"{host}: unreachable over ssh ({err or 'no message'}); check the name, that sshd runs there, "
            "and that this user's key is authorised (ssh-copy-id) with no password prompt"
        )
    if done.returncode == 127 or "No such file or directory" in err:
        raise UsageError(
            f"{host}: {sys.executable} or {cwd} is missing there ({err}); set up the same checkout and venv "
            "at the same paths on every node (git clone, then make setup)"
        )
    if done.returncode != 0:
        raise UsageError(f"{host}: the probe failed there (exit {done.returncode}: {err})")
    try:
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (json.JSONDecodeError, IndexError):
        raise UsageError(f"{host}: the probe printed no facts ({done.stdout[-200:]!r})") from None


def keepalive_problem(host: str, *, ssh_port: int | None = None) -> str | None:
    """pdsh waits for ever on a node that vanished unless ssh sends keep-alives (ServerAliveInterval)."""
    port = ["-p", str(ssh_port)] if ssh_port else []
    try:
        done = subprocess.run(["ssh", "-G", *port, host], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"ssh -G {host} failed ({err})"
    options = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    if int(options.get("serveraliveinterval", "0") or 0) <= 0:
        return (
            "ssh sends no keep-alives: a node that vanishes leaves the launcher waiting for ever; add "
            "`ServerAliveInterval 5` and `ServerAliveCountMax 3` under `Host *` in ~/.ssh/config"
        )
    return None


def mismatch(every: list[dict[str, Any] | None]) -> str | None:
    """Rank 0, at start: the first node whose software differs from the first node's (cheap facts)."""
    known = [f for f in every if f is not None]
    for there in known[1:]:
        differ = differences(known[0], there)
        if differ:
            return f"{there['host']} runs other software than {known[0]['host']}: " + (
                ", ".join(differ).replace(" here", f" on {known[0]['host']}") + f"; {SAME_FIX}"
            )
    return None


def print_facts(run_dir: Path) -> None:
    print(json.dumps(facts(run_dir)))
