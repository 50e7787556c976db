"""The trainer as a person at node0 of a cluster runs it: preflight --write-env, then a launcher."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.helpers import DATA_CACHE, REPO, VENV_BIN, child_env, ds_config
from tests.multinode.cluster import Cluster

MASTER_PORT = 29500
# the shipped multi-node JSON (ZeRO-2, overlapped communication) without bf16, which this CPU runs ~30x
# slower than fp32, and with the short warm-up and higher rate of a tiny model's tens of steps
MULTINODE_CONFIG = REPO / "ds_configs" / "multinode.json"


def config(tmp_path: Path, **overrides: Any) -> Path:
    shipped = json.loads(MULTINODE_CONFIG.read_text())
    optimizer = {**shipped["optimizer"], "params": {**shipped["optimizer"]["params"], "lr": 0.002}}
    scheduler = {**shipped["scheduler"], "params": {**shipped["scheduler"]["params"], "warmup_num_steps": 5}}
    return ds_config(
        tmp_path, "multinode-cpu.json", base=MULTINODE_CONFIG, bf16=None, optimizer=optimizer,
        scheduler=scheduler, **overrides,
    )  # fmt: skip


def node_env(cluster: Cluster, **extra: str) -> dict[str, str]:
    """The environment of a shell on a node: this venv first, the CPU accelerator, the env file."""
    return child_env(DS_ENV_FILE=str(cluster.root / "deepspeed_env"), **extra)


def write_env(cluster: Cluster, **extra: str) -> str:
    """`python -m llm.preflight --write-env` on node0, as docs/multinode.md says; its output."""
    hostfile = cluster.hostfile()
    return cluster.sh(
        0,
        f"cd {REPO} && {VENV_BIN}/python -m llm.preflight --hostfile {hostfile} --deepspeed "
        f"{MULTINODE_CONFIG} --master-port {MASTER_PORT} --run-dir {cluster.local} --min-free-gb 0 "
        "--write-env --socket-ifname eth0",
        env=node_env(cluster, **extra),
    )


def train_args(cluster: Cluster, cfg: Path, *extra: str) -> list[str]:
    return [
        "--deepspeed", str(cfg), "--model", "tiny", "--data-cache", str(DATA_CACHE), "--no-progress",
        "--sample-tokens", "0", "--run-dir", str(cluster.local / "run"), *extra,
    ]  # fmt: skip


def launch_pdsh(cluster: Cluster, args: list[str], *, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """`deepspeed --hostfile hostfile launch/train.py ...` started at node0 (ssh to every node)."""
    command = " ".join(
        [f"{VENV_BIN}/deepspeed", "--hostfile", str(cluster.hostfile()), "--master_port", str(MASTER_PORT),
         "launch/train.py", *args]
    )  # fmt: skip
    return cluster.popen(0, command, env=node_env(cluster, **env), log=log, cwd=REPO)


def finish(proc: subprocess.Popen[bytes], log: Path, *, timeout: float = 600) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"no exit within {timeout} s: {log.read_text(errors='replace')[-4000:]}") from None
    return code, log.read_text(errors="replace")


def run_json(cluster: Cluster, node: int = 0) -> dict[str, Any]:
    return dict(json.loads((cluster.disk(node) / "run" / "run.json").read_text()))


def records(cluster: Cluster, kind: str, node: int = 0) -> list[dict[str, Any]]:
    path = cluster.disk(node) / "run" / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def wait_for_step(cluster: Cluster, step: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r["step"] >= step for r in records(cluster, "train")):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the job ended (exit {proc.returncode}) before step {step}: {log.read_text()[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no step {step} within {timeout} s: {log.read_text()[-4000:]}")
