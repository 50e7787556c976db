"""`make demo`, short but for real: 2 CPU ranks through the deepspeed launcher reporting to a dashboard
sidecar, then `llm.generate`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from llm.checkpoints.catalogue import checkpoint_problem, newest_complete
from tests.helpers import DATA_CACHE, REPO, VENV_BIN, child_env, free_port, kill_tree, metrics, start_sidecar

pytestmark = [pytest.mark.dist, pytest.mark.slow]

STEPS = 8  # the Makefile evaluates and saves every quarter: steps 2, 4, 6, 8 (and evaluates at 0)
PROMPT = "def "  # the Makefile's


TOKEN = "demo-test-token-0123456789"


def test_make_demo_trains_saves_evaluates_and_generates(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    # the Makefile's default is the sidecar at 127.0.0.1:8765 (found or started); a test uses its own,
    # over another folder, so it knows the run only from what the run reported to it
    sidecar, port = start_sidecar(tmp_path / "elsewhere", token=TOKEN, log=tmp_path / "sidecar.log")
    command = [
        "make", "--no-print-directory", "demo",
        # the CPU path whatever this machine has (the Makefile asks nvidia-smi otherwise)
        "HAS_GPU=",
        f"DEMO_STEPS={STEPS}", f"DEMO_RUN_DIR={run_dir}", f"DEMO_PORT={free_port()}",
        f"DEMO_DASHBOARD=http://127.0.0.1:{port}",
        # the interpreter running this test; and no `make setup` (a pip install) from inside a test
        f"PY={sys.executable}", f"DEEPSPEED={VENV_BIN / 'deepspeed'}", "-o", ".venv/.setup-done",
    ]  # fmt: skip
    # the prepared test data (keyed by content) instead of a second copy under data/cache; no
    # end-of-training sample, so the only generated text on stdout is llm.generate's
    env = child_env(
        LLM_DATA_CACHE=str(DATA_CACHE), LLM_SAMPLE_TOKENS="0", LLM_PROGRESS="false", LLM_DASHBOARD_TOKEN=TOKEN
    )
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=10) as reply:
            listed = {r["run_id"]: r for r in json.load(reply)["runs"]}
    finally:
        kill_tree(sidecar)
    # the dashboard saw the run to its end
    assert listed["demo"]["state"] == "finished" and listed["demo"]["step"] == STEPS, listed

    folder = newest_complete(run_dir / "checkpoints")
    assert folder is not None and folder.name == f"step_{STEPS:08d}"
    assert checkpoint_problem(folder, verify_hashes=True) is None

    evals = metrics(run_dir, "eval")
    assert [r["step"] for r in evals] == [0, 2, 4, 6, 8]
    assert all(math.isfinite(r["val_loss"]) and r["val_loss"] > 0 for r in evals)
    assert '"world_size": 2' in (run_dir / "run.json").read_text()

    # make echoes each command: what follows the echoed `llm.generate` line is its stdout
    lines = done.stdout.splitlines()
    echoed = [i for i, line in enumerate(lines) if "-m llm.generate" in line]
    assert echoed, done.stdout[-3000:]
    generated = "\n".join(lines[echoed[-1] + 1 :])
    print(f"val loss {evals[0]['val_loss']:.3f} -> {evals[-1]['val_loss']:.3f}; generated:\n{generated}")
    assert generated.startswith(PROMPT), done.stdout[-3000:]
    assert generated.removeprefix(PROMPT).strip(), "nothing was generated after the prompt"
