"""Shared helpers for tests that run the real trainer (single process or through the deepspeed launcher)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from llm.launchers import trainer_env

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# Prepared token files are reused across tests and test runs (keyed by content, see llm/data/prepare.py).
DATA_CACHE = REPO / ".cache" / "test-data"
# DeepSpeed's CPU ops (the shared-memory all-reduce, CPU Adam) are compiled on first use into one folder
# per op name, and a build command naming another venv's path (another checkout on the same machine)
# rebuilds them there: ~30 s per launch while two checkouts take turns. This checkout's own folder.
TORCH_EXTENSIONS = REPO / ".cache" / "torch_extensions"
CPU_CONFIG = REPO / "ds_configs" / "cpu.json"
# a second real corpus that every machine with our dependencies has: pydantic's own sources
SECOND_CORPUS = Path(__import__("pydantic").__file__).parent


CODE_WORDS = "def return class import self for while if else print value index count total name".split()


def write_code_corpus(root: Path, *, seed: int) -> Path:
    """20 Python-like files of ~4 KB: enough for a 300-token BPE and 32-token blocks. Each seed gives
    other text, so a test module that wants its own prepared dataset passes its own seed."""
    rng = random.Random(seed)
    for i in range(20):
        lines = [f"def f{i}_{j}(x):\n    return " + " ".join(rng.choices(CODE_WORDS, k=6)) for j in range(80)]
        (root / f"file{i:02d}.py").write_text("\n".join(lines) + "\n")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_args(run_dir: Path, *extra: str | Path) -> list[str]:
    """Flags for a fast run of the tiny preset with no progress bar and no sample."""
    return [
        "--model", "tiny", "--data-cache", str(DATA_CACHE), "--no-progress", "--sample-tokens", "0",
        "--run-dir", str(run_dir), *map(str, extra),
    ]  # fmt: skip


def train_cmd(args: list[str], *, nproc: int | None = None, master_port: int | None = None) -> list[str]:
    """The real command: `deepspeed --num_gpus N launch/train.py ...`, or `python launch/train.py ...`."""
    if nproc is None:
        return [sys.executable, "launch/train.py", *args]
    port = master_port or free_port()
    launcher = [str(VENV_BIN / "deepspeed"), "--num_gpus", str(nproc), "--master_port", str(port)]
    return [*launcher, "launch/train.py", *args]


def child_env(**extra: str) -> dict[str, str]:
    # the suite tests the CPU path on every machine: a GPU would change the default config and preset
    env = trainer_env(cpu=True)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(TORCH_EXTENSIONS))
    env.update(extra)
    return env


def run_train(
    args: list[str], *, nproc: int | None = None, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        train_cmd(args, nproc=nproc), cwd=REPO, env=env or child_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def start_train(
    args: list[str], *, nproc: int | None = None, log: Path, master_port: int | None = None, **env: str
) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        train_cmd(args, nproc=nproc, master_port=master_port), cwd=REPO, env=child_env(**env), stdout=handle,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def ds_config(tmp_path: Path, name: str = "ds.json", base: Path = CPU_CONFIG, **overrides: Any) -> Path:
    """A copy of a shipped config with top-level sections replaced or merged (dicts merge one level)."""
    config = json.loads(base.read_text())
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)
        elif isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = tmp_path / name
    path.write_text(json.dumps(config, indent=2))
    return path


def metrics(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r["type"] == kind]


def train_losses(run_dir: Path) -> dict[int, float]:
    """Loss by step; a step logged twice (e.g. redone after a resume) fails the calling test."""
    records = metrics(run_dir, "train")
    steps = [r["step"] for r in records]
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    assert not repeated, f"{run_dir / 'metrics.jsonl'}: steps logged more than once: {repeated}"
    return {r["step"]: r["loss"] for r in records}


def wait_for(
    predicate: Callable[[], bool], *, timeout: float, what: str, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def rank_processes(launcher: subprocess.Popen) -> list[psutil.Process]:
    """The training ranks started by a launcher (processes running launch/train.py, not the launcher)."""
    found = []
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if any(
            part.endswith("launch/train.py") for part in cmdline
        ) and "deepspeed.launcher.launch" not in " ".join(cmdline):
            found.append(child)
    return found


def rank_process(launcher: subprocess.Popen, rank: int) -> psutil.Process:
    for proc in rank_processes(launcher):
        try:
            if proc.environ().get("RANK") == str(rank):
                return proc
        except psutil.Error:
            continue
    raise AssertionError(f"rank {rank} not found under launcher {launcher.pid}")


def kill_tree(proc: subprocess.Popen) -> None:
    """Leave nothing behind, even a stopped rank: everything in the run's own session."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def start_sidecar(
    runs_dir: Path, *, token: str, log: Path, port: int = 0
) -> tuple[subprocess.Popen[bytes], int]:
    """`python -m llm.sidecar` on loopback (a free port unless given); returns it once it listens."""
    from llm.telemetry.dashboard_link import spawn_sidecar

    started = spawn_sidecar(runs_dir, token=token, log=log, port=port, env=child_env(), timeout_s=60)
    assert started is not None, f"the sidecar did not start: {log.read_text()[-2000:]}"
    return started
