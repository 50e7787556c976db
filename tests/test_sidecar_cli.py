"""`python -m llm.sidecar` as a process: it imports no torch, refuses an open address without a token,
prints its URL with the token and writes its port, and serves with that token."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def env_without_token() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "LLM_DASHBOARD_TOKEN"}


def test_the_sidecar_imports_neither_torch_nor_deepspeed() -> None:
    code = (
        "import sys, llm.sidecar.__main__, llm.sidecar.app, llm.sidecar.api, llm.sidecar.sockets\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'deepspeed')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_a_non_loopback_host_without_a_token_is_refused(host: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llm.sidecar", "--host", host, "--port", "0"],
        cwd=REPO,
        env=env_without_token(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "LLM_DASHBOARD_TOKEN" in lines[0]


def start(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], int, str]:
    port_file = tmp_path / "port"
    args = ["--port", "0", "--runs-dir", str(tmp_path / "runs"), "--port-file", str(port_file)]
    process = subprocess.Popen(
        [sys.executable, "-m", "llm.sidecar", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    found = re.fullmatch(r"dashboard: http://127\.0\.0\.1:(\d+)/#token=(\S+)\n", first)
    assert found, first
    port = int(found.group(1))
    assert port_file.read_text().strip() == str(port)
    return process, port, found.group(2)


def post_control(port: int, token: str | None) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/runs/absent/control",
        data=json.dumps({"action": "pause"}).encode(),
        headers={"Authorization": f"Bearer {token}"} if token else {},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.parametrize("given", [None, "secret-from-the-environment"])
def test_it_prints_its_url_with_the_token_writes_its_port_and_uses_that_token(
    tmp_path: Path, given: str | None
) -> None:
    env = env_without_token() | ({"LLM_DASHBOARD_TOKEN": given} if given else {})
    process, port, token = start(tmp_path, env)
    try:
        if given:
            assert token == given
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            health = json.load(answer)
        assert health["ok"] is True and health["runs"] == 0
        assert post_control(port, None) == 401
        assert post_control(port, token + "x") == 401
        assert post_control(port, token) == 404  # past the token check: no such run
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
