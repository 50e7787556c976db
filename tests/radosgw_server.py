"""A second, stricter S3 endpoint for the tests: Ceph's radosgw on a one-node cluster on loopback.

Where moto accepts any credentials, radosgw checks every signature, enforces bucket policies by
principal and refuses tampered presigned URLs, so the security tests run against it. The cluster
(a monitor, one in-memory OSD, radosgw) starts once per session from tests/radosgw/start.sh, on free
ports, in ~13 s; its packages come from Debian (`make s3-servers`). Where they are not installed,
the tests that ask for it are skipped with the reason. Two users: `trainer` owns the buckets,
`reader` gets only what a bucket policy grants it. The credentials reach our code the way they reach
a person's: boto3's shared credentials file, one profile per user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.helpers import REPO, free_port

START_SCRIPT = REPO / "tests" / "radosgw" / "start.sh"
PACKAGES = ("radosgw", "ceph-mon", "ceph-osd", "monmaptool", "radosgw-admin", "ceph")
# test-only keys, created by start.sh; distinctive, so a scan for them means something
USERS = {
    "trainer": ("LLMRGWTRAINERKEY0001", "llm-rgw-trainer-secret-5b1e93c07d"),
    "reader": ("LLMRGWREADERKEY00001", "llm-rgw-reader-secret-0c4d7a2e19"),
}
WRONG_SECRET_PROFILE = "wrong-secret"  # the trainer's access key with another secret
KMS_KEY_ID = "testkey-1"  # the testing KMS key in start.sh's ceph.conf


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop_pids(pids: list[int], *, timeout: float = 20.0) -> None:
    """SIGTERM, wait until each has exited (radosgw and the OSD take seconds), then SIGKILL stragglers."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class RadosGW:
    """The cluster in `self.dir`; `url` is radosgw's S3 endpoint."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="llm-ceph-"))  # short: admin sockets live in it
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mon_port = free_port()
        self.credentials = self.dir / "aws-credentials"
        started = time.monotonic()
        self._script(MON_PORT=str(self.mon_port), RGW_PORT=str(self.port), WATCH_PID=str(os.getpid()))
        self.start_s = time.monotonic() - started
        profiles = {**USERS, WRONG_SECRET_PROFILE: (USERS["trainer"][0], "not-the-trainer-secret")}
        self.credentials.write_text(
            "".join(
                f"[{name}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
                for name, (key, secret) in profiles.items()
            )
        )

    def _script(self, *args: str, **env: str) -> None:
        # output to a file, not a pipe: the daemons it starts outlive it and would hold a pipe open
        log = self.dir / "start.log"
        with log.open("ab") as out:
            result = subprocess.run(
                ["bash", str(START_SCRIPT), *args],
                env={**os.environ, "CEPH_DIR": str(self.dir), **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=180,
            )
        if result.returncode != 0:
            text = log.read_text(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"{START_SCRIPT} {' '.join(args)} failed (exit {result.returncode}):\n{text}")

    def _pid(self, name: str) -> int | None:
        path = self.dir / "run" / f"{name}.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop_gateway(self) -> None:
        """Stop radosgw alone (the monitor and the OSD keep the data), and wait until its port is free."""
        pid = self._pid("client.rgw.local")
        if pid is not None:
            _stop_pids([pid])
        assert not _listening(self.port), f"radosgw still listens on {self.port} after it was stopped"

    def start_gateway(self) -> None:
        self._script("rgw")

    def stop(self) -> None:
        """Every daemon of the cluster, then the folder (logs, the in-memory OSD's files). One at a time,
        the monitor last: stopped together, radosgw and the OSD wait ~5 s for the monitor that went away."""
        for name in ("client.rgw.local", "osd.0", "mon.a"):
            pid = self._pid(name)
            if pid is not None:
                _stop_pids([pid])
        watchdog = self._pid("../watchdog")  # start.sh's guard against a killed pytest: no longer needed
        if watchdog is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(watchdog, signal.SIGTERM)
        bound = [port for port in (self.port, self.mon_port) if _listening(port)]
        if bound:
            raise RuntimeError(f"the cluster was stopped but 127.0.0.1 ports {bound} still listen")
        shutil.rmtree(self.dir, ignore_errors=True)

    def env(self, profile: str = "trainer") -> dict[str, str]:
        """What a process needs to reach the server as `profile` (boto3's chain: AWS_PROFILE)."""
        return {
            "AWS_PROFILE": profile,
            "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials),
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_DEFAULT_REGION": "us-east-1",
            "LLM_S3_ENDPOINT_URL": self.url,
        }

    def client(self, profile: str = "trainer"):  # type: ignore[no-untyped-def]
        """A plain boto3 client, for the tests' own set-up (buckets, policies) and checks."""
        import boto3
        from botocore.config import Config

        key, secret = USERS[profile]
        # its own session: boto3's default one caches the profiles it read first
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )


@dataclass
class RgwBucket:
    """A fresh bucket owned by `trainer` on the session's radosgw."""

    server: RadosGW
    name: str

    def uri(self, prefix: str) -> str:
        return f"s3://{self.name}/{prefix}"


def _missing_packages() -> list[str]:
    return [name for name in PACKAGES if shutil.which(name) is None]


@pytest.fixture(scope="session")
def radosgw() -> Iterator[RadosGW]:
    missing = _missing_packages()
    if missing:
        pytest.skip(
            f"Ceph's Debian packages are not installed (no {', '.join(missing)} on PATH): `make s3-servers` "
            "installs them (apt-get install radosgw ceph-mon ceph-osd ceph-mgr)"
        )
    server = RadosGW()
    print(f"\nradosgw: one-node Ceph cluster up at {server.url} in {server.start_s:.1f} s")
    yield server
    started = time.monotonic()
    server.stop()
    print(f"\nradosgw: cluster stopped in {time.monotonic() - started:.1f} s")


@pytest.fixture
def rgw(radosgw: RadosGW, monkeypatch: pytest.MonkeyPatch) -> RgwBucket:
    """A fresh bucket owned by `trainer`; this process reaches radosgw as `trainer` (AWS_PROFILE)."""
    bucket = RgwBucket(radosgw, f"llm-rgw-{uuid.uuid4().hex[:12]}")
    radosgw.client().create_bucket(Bucket=bucket.name)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in radosgw.env().items():
        monkeypatch.setenv(key, value)
    return bucket
