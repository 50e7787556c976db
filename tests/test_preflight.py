"""`python -m llm.preflight`: the checks before a multi-node launch that run on the launching host."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llm.errors import UsageError
from llm.preflight import DEEPSPEED_ENV, deepspeed_env, read_hostfile
from tests.helpers import REPO, child_env, ds_config, free_port
from tests.s3_server import SECRET_KEY, Bucket


def _hostfile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hostfile"
    path.write_text(text)
    return path


def test_hostfile_lines_are_read_and_bad_ones_named_by_line(tmp_path: Path) -> None:
    hosts = read_hostfile(_hostfile(tmp_path, "# two nodes\nnode0 slots=8\n\nnode1  slots = 4  # spare\n"))
    assert [(h.name, h.slots) for h in hosts] == [("node0", 8), ("node1", 4)]
    for text, words in [
        ("node0 slots=8\nnode1 8\n", r"hostfile:2: 'node1 8' is not `HOST slots=N`"),
        ("node0 slots=8\nnode0 slots=8\n", "node0 is listed twice"),
        ("node0 slots=0\n", "slots=0; give 1 or more"),
        ("# nothing\n", "no hosts"),
    ]:
        with pytest.raises(UsageError, match=words):
            read_hostfile(_hostfile(tmp_path, text))


def _preflight(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm.preflight", *args], cwd=cwd,
        env=child_env(**(env or {}), PYTHONPATH=str(REPO)),  # this checkout's llm, from any folder
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_batch_arithmetic_port_and_disk_each_get_their_line(tmp_path: Path) -> None:
    config = ds_config(
        tmp_path, train_batch_size=16, train_micro_batch_size_per_gpu=4, gradient_accumulation_steps=2
    )
    port = free_port()
    common = [
        "--deepspeed",
        str(config),
        "--master-port",
        str(port),
        "--run-dir",
        str(tmp_path / "runs"),
        "--no-ssh",
    ]
    good = _preflight("--hostfile", str(_hostfile(tmp_path, "node0 slots=1\nnode1 slots=1\n")), *common)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok    batch: 2 ranks (2 nodes): micro-batch 4 x accumulation 2 x 2 = 16" in good.stdout
    assert f"ok    master port: {port} is free here" in good.stdout

    three = _hostfile(tmp_path, "node0 slots=2\nnode1 slots=1\n")  # 3 ranks cannot make 16 = 4 x 2 x world
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", port))
        bad = _preflight("--hostfile", str(three), *common, "--min-free-gb", "1e9")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    lines = {line.split(":", 1)[0]: line for line in bad.stdout.splitlines() if line.startswith("FAIL")}
    assert set(lines) == {"FAIL  batch", "FAIL  master port", "FAIL  disk"}, bad.stdout
    assert "train_batch_size" in lines["FAIL  batch"] and "3" in lines["FAIL  batch"]
    assert f"port {port} is taken here" in lines["FAIL  master port"]
    assert "less than --min-free-gb" in lines["FAIL  disk"]
    assert "1 of 4 checks passed" in bad.stdout

    missing = _preflight("--hostfile", str(tmp_path / "nope"), *common)
    assert missing.returncode == 2 and missing.stderr.startswith("error: --hostfile") and missing.stdout == ""


def test_checkpoint_uri_is_written_read_and_cleaned(s3: Bucket, tmp_path: Path) -> None:
    hostfile = _hostfile(tmp_path, "node0 slots=1\n")
    args = [
        "--hostfile",
        str(hostfile),
        "--deepspeed",
        "ds_configs/cpu.json",
        "--master-port",
        str(free_port()),
    ]
    good = _preflight(*args, "--checkpoint-uri", s3.uri("runs/r1"), env=s3.env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok    checkpoint uri: s3://" in good.stdout and "written, read and deleted a probe" in good.stdout
    assert s3.client().list_objects_v2(Bucket=s3.name).get("KeyCount") == 0  # the probe is gone
    bad = _preflight(*args, "--checkpoint-uri", "s3://no-such-bucket-here/r", env=s3.env)
    assert bad.returncode == 1 and "FAIL  checkpoint uri:" in bad.stdout and "does not exist" in bad.stdout


def test_deepspeed_env_carries_settings_and_no_secret(s3: Bucket, tmp_path: Path) -> None:
    env = {
        **s3.env,
        "LLM_DIST_TIMEOUT": "60",
        "LLM_DASHBOARD_TOKEN": "dashboard-secret-0001",
        "DS_ACCELERATOR": "cpu",
        "FI_PROVIDER": "efa",
        "NCCL_DEBUG": "INFO",
        "DS_ENV_FILE": "cluster.env",  # DeepSpeed's own variable: where its launcher reads the file
    }
    hostfile = _hostfile(tmp_path, "node0 slots=1\n")
    done = _preflight(
        "--hostfile", str(hostfile), "--deepspeed", str(REPO / "ds_configs" / "cpu.json"), "--master-port",
        str(free_port()), "--write-env", "--socket-ifname", "veth0", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / DEEPSPEED_ENV).exists()
    text = (tmp_path / "cluster.env").read_text()
    pairs = dict(line.split("=", 1) for line in text.splitlines())
    assert all(line and "=" in line and not line.startswith("#") for line in text.splitlines())
    assert pairs["PATH"].split(":")[0] == str(Path(sys.executable).parent)  # this venv first
    assert pairs["LLM_DIST_TIMEOUT"] == "60" and pairs["LLM_S3_ENDPOINT_URL"] == s3.endpoint
    assert pairs["GLOO_SOCKET_IFNAME"] == pairs["NCCL_SOCKET_IFNAME"] == "veth0"
    assert (
        pairs["DS_ACCELERATOR"] == "cpu" and pairs["FI_PROVIDER"] == "efa" and pairs["NCCL_DEBUG"] == "INFO"
    )
    assert (
        pairs["MASTER_ADDR"] == "node0"
        and pairs["AWS_SHARED_CREDENTIALS_FILE"] == s3.env["AWS_SHARED_CREDENTIALS_FILE"]
    )
    for secret in (SECRET_KEY, "dashboard-secret-0001", "AWS_ACCESS_KEY_ID"):
        assert secret not in text
    with pytest.raises(UsageError, match="newline"):
        deepspeed_env(socket_ifname=None, environ={"LLM_DATA": "a\nb"})
