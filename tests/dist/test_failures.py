"""Failures end the job in bounded time and leave a checkpoint that `--resume auto` continues from."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from llm.checkpoints.catalogue import is_complete_checkpoint, newest_complete
from tests.helpers import (
    kill_tree,
    metrics,
    rank_process,
    run_train,
    start_train,
    tiny_args,
    train_losses,
    wait_for,
)

pytestmark = [pytest.mark.dist, pytest.mark.slow]

DIST_TIMEOUT = 20


def _saved(run_dir: Path, step: int) -> bool:
    return is_complete_checkpoint(run_dir / "checkpoints" / f"step_{step:08d}")


@pytest.mark.parametrize("fault", ["kill -9", "SIGSTOP"])
def test_a_dead_or_frozen_rank_ends_the_job_then_resume_continues(tmp_path: Path, fault: str) -> None:
    run_dir = tmp_path / "run"
    args = [
        "--max-steps", "100000", "--save-every", "5", "--log-every", "1", "--eval-every", "100000",
        "--dist-timeout", str(DIST_TIMEOUT), *tiny_args(run_dir),
    ]  # fmt: skip
    launcher = start_train(args, nproc=2, log=tmp_path / "log")
    try:
        wait_for(lambda: _saved(run_dir, 5) and max(train_losses(run_dir)) >= 7, timeout=300, what="step 7",
                 proc=launcher)  # fmt: skip
        victim = rank_process(launcher, 1)
        start = time.monotonic()
        victim.send_signal(signal.SIGKILL if fault == "kill -9" else signal.SIGSTOP)
        code = launcher.wait(timeout=DIST_TIMEOUT + 120)
        elapsed = time.monotonic() - start
    finally:
        kill_tree(launcher)
    log = (tmp_path / "log").read_text(errors="replace")
    print(f"{fault} of rank 1: the job ended with exit {code} after {elapsed:.1f} s")
    assert code != 0
    assert elapsed <= DIST_TIMEOUT + 60, log[-3000:]
    if fault == "SIGSTOP":  # the survivor names the rank that stopped answering
        assert "error: rank 1 stopped answering" in log, log[-3000:]

    last_saved = newest_complete(run_dir / "checkpoints")
    assert last_saved is not None
    k = int(last_saved.name.removeprefix("step_"))
    done = run_train([*args[:1], str(k + 4), *args[2:], "--resume", "auto"], nproc=2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resumed = [r for r in metrics(run_dir, "run_state") if r["state"] == "resumed"]
    assert [r["step"] for r in resumed] == [k]
    assert any(r["state"] == "finished" and r["step"] == k + 4 for r in metrics(run_dir, "run_state"))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_kill_during_a_checkpoint_save_keeps_the_previous_one(tmp_path: Path, mode: str) -> None:
    """A real SIGKILL at the worst moment: shards written, manifest not yet (LLM_FAILPOINT); with
    --checkpoint-async that moment comes on the save's own thread while the loop has gone on."""
    run_dir = tmp_path / "run"
    args = [
        "--max-steps", "10", "--save-every", "5", "--log-every", "1", "--eval-every", "100",
        *tiny_args(run_dir, *(["--checkpoint-async"] if mode == "async" else [])),
    ]  # fmt: skip
    proc = start_train(args, log=tmp_path / "log", LLM_FAILPOINT="checkpoint.before_manifest@10")
    try:
        code = proc.wait(timeout=300)
    finally:
        kill_tree(proc)
    assert code == -signal.SIGKILL, (tmp_path / "log").read_text()[-3000:]
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "latest").read_text() == "step_00000005"
    assert (checkpoints / "step_00000010").is_dir() and not _saved(run_dir, 10)
    assert _saved(run_dir, 5)

    done = run_train([*args, "--resume", "auto"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [r["step"] for r in metrics(run_dir, "run_state") if r["state"] == "resumed"] == [5]
    assert (checkpoints / "latest").read_text() == "step_00000010" and _saved(run_dir, 10)
