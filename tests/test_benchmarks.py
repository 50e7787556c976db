"""The benchmark scripts run end to end (on the CPU here; the same scripts measure GPUs elsewhere)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DATA_CACHE, REPO, child_env, free_port


@pytest.mark.dist
def test_run_configs_tabulates_a_real_run(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "benchmarks/run_configs.py", "--config", "ds_configs/cpu.json", "--max-steps", "6",
        "--log-every", "2", "--nproc", "1", "--master-port", str(free_port()), "--out", str(tmp_path),
        "--name", "smoke", "--", "--model", "tiny", "--data-cache", str(DATA_CACHE),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (row,) = json.loads((tmp_path / "smoke.json").read_text())["runs"]
    assert row["precision"] == "fp32" and row["world_size"] == 1 and row["steps"] == 6
    assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1
    assert row["last_val_loss"] < row["first_val_loss"]
    assert "| ds_configs/cpu.json | CPU" in (tmp_path / "smoke.md").read_text()
