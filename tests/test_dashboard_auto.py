"""`--dashboard auto`: rank 0 starts a sidecar where none answers, with the runs folder's own token, and
reports to it; the next run finds that sidecar and reports to it too."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, kill_tree, start_train, tiny_args, wait_for

pytestmark = pytest.mark.slow


def runs_listed(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{url}/api/runs", timeout=5) as reply:
            return {r["run_id"]: r for r in json.load(reply)["runs"]}
    except OSError:
        return {}


def test_auto_starts_a_sidecar_with_the_runs_token_and_the_next_run_finds_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    url = f"http://127.0.0.1:{free_port()}"  # auto's address for this test (127.0.0.1:8765 otherwise)
    args = ["--max-steps", "40", "--log-every", "1", "--eval-every", "40", "--eval-batches", "1",
            "--save-every", "40", "--dashboard", "auto"]  # fmt: skip
    sidecar_pid = None
    try:
        for name in ("first", "second"):
            log = tmp_path / f"{name}.log"
            proc = start_train(tiny_args(runs / name, *args), log=log, LLM_DASHBOARD_URL=url)
            try:
                # the trainer socket is open while the run goes: the sidecar lists the run as live
                wait_for(lambda: runs_listed(url).get(name, {}).get("live") is True, timeout=300,  # noqa: B023
                         what=f"{name} live on the dashboard", proc=proc)  # fmt: skip
                assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
            finally:
                kill_tree(proc)
            started = re.search(r"dashboard: (\S+)#token=(\S+) \(sidecar pid (\d+)", log.read_text())
            if name == "first":
                assert started, log.read_text()[-2000:]
                page, token, sidecar_pid = started[1], started[2], int(started[3])
                assert page == f"{url}/"
                token_file = runs / ".dashboard-token"
                assert token_file.read_text().strip() == token
                assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            else:
                assert started is None, "a second sidecar was started"
        assert runs_listed(url)["second"]["state"] == "finished"
    finally:
        if sidecar_pid is not None:
            os.kill(sidecar_pid, signal.SIGKILL)
