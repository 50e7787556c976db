"""The trainer as a person at node0 of a cluster runs it: preflight --write-env, then a launcher."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.helpers import DATA_CACHE, REPO, VENV_BIN, child_env, ds_config
from tests.multinode.cluster import SWITCH_ADDRESS, Cluster
from tests.s3_server import ACCESS_KEY, SECRET_KEY

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


def train_args(cluster: Cluster, cfg: Path, *extra: str, run: str = "run") -> list[str]:
    """The trainer's flags, with its run directory on each node's own disk (`<local>/<run>`)."""
    return [
        "--deepspeed", str(cfg), "--model", "tiny", "--data-cache", str(DATA_CACHE), "--no-progress",
        "--sample-tokens", "0", "--run-dir", str(cluster.local / run), *extra,
    ]  # fmt: skip


def launch_pdsh(
    cluster: Cluster, args: list[str], *, log: Path, launcher: list[str] | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """`deepspeed --hostfile hostfile launch/train.py ...` started at node0 (pdsh over ssh to every node,
    or the `launcher` flags' MPI)."""
    command = " ".join(
        [f"{VENV_BIN}/deepspeed", *(launcher or []), "--hostfile", str(cluster.hostfile()), "--master_port",
         str(MASTER_PORT), "launch/train.py", *args]
    )  # fmt: skip
    return cluster.popen(0, command, env=node_env(cluster, **env), log=log, cwd=REPO)


def finish(proc: subprocess.Popen[bytes], log: Path, *, timeout: float = 600) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        tail = log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"no exit within {timeout} s: {tail}") from None
    return code, log.read_text(errors="replace")


def run_json(cluster: Cluster, node: int = 0, run: str = "run") -> dict[str, Any]:
    return dict(json.loads((cluster.disk(node) / run / "run.json").read_text()))


def records(cluster: Cluster, kind: str, node: int = 0, run: str = "run") -> list[dict[str, Any]]:
    path = cluster.disk(node) / run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def wait_for_step(
    cluster: Cluster, step: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 300
) -> None:
    done = lambda: any(r["step"] >= step for r in records(cluster, "train"))  # noqa: E731
    _wait(done, f"step {step}", proc, log, timeout)


@dataclass(frozen=True)
class SwitchS3:
    """A moto server on the cluster's switch (reachable from every node, not from this namespace) with
    one bucket; `env` is what a node's shell needs: endpoint, region, and a credentials *file* (the
    chain's way on a real node; the key itself never travels in .deepspeed_env)."""

    url: str
    bucket: str
    env: dict[str, str]

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


@contextmanager
def switch_s3(cluster: Cluster) -> Iterator[SwitchS3]:
    credentials = cluster.root / "aws-credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    with cluster.serve(
        [str(VENV_BIN / "moto_server"), "-H", SWITCH_ADDRESS, "-p", "5000"], port=5000,
        log=cluster.logs / "moto.log",
    ) as url:  # fmt: skip
        env = {
            "LLM_S3_ENDPOINT_URL": url, "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        }  # fmt: skip
        create = f"import boto3; boto3.client('s3', endpoint_url='{url}').create_bucket(Bucket='runs')"
        cluster.sh(0, f"{VENV_BIN}/python -c {shlex.quote(create)}", env=node_env(cluster, **env))
        yield SwitchS3(url=url, bucket="runs", env=env)


def rank_processes(cluster: Cluster, node: int) -> list[psutil.Process]:
    """The trainer's rank processes alive on `node`: `python [-flags] launch/train.py ...`, not the
    launchers that start them (DeepSpeed's per-node launch, torchrun's or accelerate's agent)."""
    ranks = []
    for proc in cluster.processes(node, "launch/train.py"):
        with suppress(psutil.Error):
            cmd = proc.cmdline()
            before = cmd[: cmd.index("launch/train.py")] if "launch/train.py" in cmd else []
            if before and all(arg.startswith("-") for arg in before[1:]):
                ranks.append(proc)
    return ranks


def uploaded_steps(log: str) -> list[int]:
    """Steps whose checkpoint rank 0 committed at the checkpoint URI (its 'uploaded to' lines)."""
    return [int(m) for m in re.findall(r"node0: checkpoint step_(\d+) uploaded to", log)]


def wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    _wait(lambda: text in log.read_text(errors="replace"), repr(text), proc, log, timeout)


def _wait(
    done: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"the job ended (exit {proc.returncode}) before {what}: {tail}")
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout} s: {log.read_text(errors='replace')[-4000:]}")


def per_node_command(kind: str, cfg: Path, args: list[str], hostfile: Path) -> Callable[[int], list[str]]:
    """Node i's launch line for the launchers that run one per node: `no_ssh`, `torchrun`, `accelerate`."""
    master = ["node0", str(MASTER_PORT)]

    def command(i: int) -> list[str]:
        if kind == "no_ssh":  # --no_ssh ignores .deepspeed_env: each node's shell environment is used
            return [
                f"{VENV_BIN}/deepspeed", "--no_ssh", f"--node_rank={i}", f"--master_addr={master[0]}",
                f"--master_port={master[1]}", "--hostfile", str(hostfile), "launch/train.py", *args,
            ]  # fmt: skip
        if kind == "torchrun":
            return [
                f"{VENV_BIN}/torchrun", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={i}",
                f"--master-addr={master[0]}", f"--master-port={master[1]}", "launch/train.py", *args,
            ]  # fmt: skip
        # accelerate launch with its DeepSpeed plugin on the same JSON, which then names --deepspeed
        at = args.index("--deepspeed")
        return [
            f"{VENV_BIN}/accelerate", "launch", "--num_machines=2", "--num_processes=2",
            f"--machine_rank={i}", f"--main_process_ip={master[0]}", f"--main_process_port={master[1]}",
            "--use_deepspeed", f"--deepspeed_config_file={cfg}", "--deepspeed_multinode_launcher=standard",
            "launch/train.py", *args[:at], *args[at + 2 :],
        ]  # fmt: skip

    return command


def launch_each_node(
    cluster: Cluster, command: Callable[[int], list[str]], *, logs: Path, **env: str
) -> list[subprocess.Popen[bytes]]:
    """One launcher per node (--no_ssh, torchrun, accelerate launch): `command(i)` started in node i."""
    logs.mkdir(parents=True, exist_ok=True)
    return [
        cluster.popen(i, " ".join(command(i)), env=node_env(cluster, **env), log=logs / f"node{i}", cwd=REPO)
        for i in range(cluster.count)
    ]


def finish_all(
    procs: list[subprocess.Popen[bytes]], logs: Path, *, timeout: float = 600
) -> tuple[list[int], str]:
    """Every node's launcher's exit code, and their logs together (node0's first)."""
    codes = [finish(proc, logs / f"node{i}", timeout=timeout)[0] for i, proc in enumerate(procs)]
    return codes, "".join(
        f"[node{i}]\n{(logs / f'node{i}').read_text(errors='replace')}" for i in range(len(procs))
    )
