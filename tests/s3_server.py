"""A real S3 endpoint for the tests: moto's server in its own process on loopback, reached over HTTP.

Session-wide, started once; each test gets its own bucket (`s3` fixture) and the environment a trainer
subprocess needs to reach it. The secret key is a distinctive string, so a test can scan a run's
files for it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import VENV_BIN, free_port

ACCESS_KEY = "LLMTESTACCESSKEY0001"
SECRET_KEY = "llm-test-secret-3f9c2a7e51b84d06a1c0"


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not listen on 127.0.0.1:{port} within {timeout} s")


class MotoServer:
    """`moto_server -H 127.0.0.1 -p PORT` as a child process; freeze() and thaw() stop it mid-request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc)

    def freeze(self) -> None:
        """The server stops answering (SIGSTOP): connections hang, as with a server that died mid-upload."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.thaw()
        self.proc.terminate()
        self.proc.wait(timeout=10)


@dataclass
class Bucket:
    """A fresh bucket on the server and the environment that reaches it."""

    endpoint: str
    name: str
    env: dict[str, str] = field(default_factory=dict)

    def uri(self, prefix: str) -> str:
        return f"s3://{self.name}/{prefix}"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )


def bucket_env(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "LLM_S3_ENDPOINT_URL": endpoint,
        # no ~/.aws of the machine's user leaks into a test
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        **extra,
    }


def new_bucket(endpoint: str, *, versioning: bool = False) -> Bucket:
    bucket = Bucket(endpoint=endpoint, name=f"llm-test-{uuid.uuid4().hex[:12]}", env=bucket_env(endpoint))
    client = bucket.client()
    client.create_bucket(Bucket=bucket.name)
    if versioning:
        client.put_bucket_versioning(Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"})
    return bucket


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


def use_new_bucket(url: str, monkeypatch: pytest.MonkeyPatch, *, versioning: bool = False) -> Bucket:
    """A fresh bucket at `url` that this process's environment reaches too (for in-process calls)."""
    bucket = new_bucket(url, versioning=versioning)
    for key, value in bucket.env.items():
        monkeypatch.setenv(key, value)
    return bucket


@pytest.fixture
def s3(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A fresh bucket on the suite's server; this process's environment reaches it too."""
    return use_new_bucket(moto_server.url, monkeypatch)


def scan_for(needle: str, roots: list[Path]) -> list[Path]:
    """Every file under `roots` whose bytes contain `needle`."""
    found = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and needle.encode() in path.read_bytes():
                found.append(path)
    return found
