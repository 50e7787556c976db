"""Faithful resume: a run stopped by SIGTERM and resumed logs the same losses as one never stopped."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.helpers import (
    ds_config,
    kill_tree,
    metrics,
    rank_processes,
    run_train,
    start_train,
    tiny_args,
    train_losses,
    wait_for,
)

pytestmark = [pytest.mark.dist, pytest.mark.slow]

# the stop lands at step 6 (seen at 5, one step of signal latency); 20 steps after it are compared, and
# evaluations at 15 and 30 fall after it
MAX_STEPS = 30


@pytest.mark.parametrize(
    ("stage", "dropout", "saves"),
    # with dropout, the masks after the resume come from the restored RNG states; with
    # --checkpoint-async, saves every 4 steps are written and committed while the next steps run
    [(1, 0.0, []), (2, 0.1, []), (3, 0.0, []), (3, 0.0, ["--checkpoint-async", "--save-every", "4"])],
    ids=["zero1", "zero2-dropout", "zero3", "zero3-async"],
)
def test_sigterm_then_resume_auto_matches_an_unbroken_run(
    tmp_path: Path, stage: int, dropout: float, saves: list[str]
) -> None:
    config = ds_config(
        tmp_path,
        train_micro_batch_size_per_gpu=4,
        gradient_accumulation_steps=2,
        zero_optimization={"stage": stage},
    )
    common = [
        "--deepspeed", str(config), "--max-steps", str(MAX_STEPS), "--log-every", "1", "--eval-every", "15",
        "--dropout", str(dropout), *saves,
    ]  # fmt: skip

    full_dir = tmp_path / "full"
    done = run_train([*common, *tiny_args(full_dir)], nproc=2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    stopped_dir = tmp_path / "stopped"
    launcher = start_train([*common, *tiny_args(stopped_dir)], nproc=2, log=tmp_path / "stopped.log")
    try:
        wait_for(
            lambda: max(train_losses(stopped_dir), default=0) >= 5, timeout=300, what="step 5", proc=launcher
        )
        for rank in rank_processes(launcher):  # as a scheduler signals every task of a job
            rank.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=120) == 0, (tmp_path / "stopped.log").read_text()[-3000:]
    finally:
        kill_tree(launcher)
    stops = [r for r in metrics(stopped_dir, "run_state") if r["state"] == "stopped"]
    assert len(stops) == 1
    k = stops[0]["step"]
    assert 5 <= k <= MAX_STEPS - 20, f"stopped at {k}: too late to compare 20 steps"
    assert (stopped_dir / "checkpoints" / "latest").read_text() == f"step_{k:08d}"
    # every save was committed and said so once, in order (async ones after the loop went on)
    every = 4 if saves else 1000
    saved = [r["step"] for r in metrics(stopped_dir, "run_state") if r["state"] == "checkpoint_saved"]
    assert saved == sorted({*range(every, k + 1, every), k})

    done = run_train([*common, *tiny_args(stopped_dir, "--resume", "auto")], nproc=2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert any(r["state"] == "resumed" and r["step"] == k for r in metrics(stopped_dir, "run_state"))

    # every step logged once: the resumed run logs no step <= k again (train_losses refuses repeats)
    full, resumed = train_losses(full_dir), train_losses(stopped_dir)
    assert sorted(resumed) == list(range(1, MAX_STEPS + 1))
    steps = range(k + 1, k + 21)
    worst = max(abs(full[s] - resumed[s]) for s in steps)
    print(
        f"ZeRO-{stage}, dropout {dropout}: stopped at step {k}; "
        f"largest loss difference over steps {k + 1}..{k + 20}: {worst:.2e}"
    )
    assert worst <= 1e-6
    # the evaluations after the resume agree too
    full_eval = {r["step"]: r["val_loss"] for r in metrics(full_dir, "eval")}
    resumed_eval = {r["step"]: r["val_loss"] for r in metrics(stopped_dir, "eval") if r["step"] > k}
    assert resumed_eval and all(abs(full_eval[s] - v) <= 1e-6 for s, v in resumed_eval.items())


def test_sigint_to_a_single_process_saves_and_exits_zero(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_train(
        ["--max-steps", "100000", "--log-every", "1", "--save-every", "100000", *tiny_args(run_dir)],
        log=tmp_path / "log",
    )
    try:
        wait_for(lambda: max(train_losses(run_dir), default=0) >= 3, timeout=300, what="step 3", proc=proc)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=120) == 0, (tmp_path / "log").read_text()[-3000:]
    finally:
        kill_tree(proc)
    stop = next(r for r in metrics(run_dir, "run_state") if r["state"] == "stopped")
    assert (run_dir / "checkpoints" / "latest").read_text() == f"step_{stop['step']:08d}"
    assert (run_dir / "checkpoints" / f"step_{stop['step']:08d}" / "manifest.json").is_file()


def test_ctrl_c_to_the_launchers_process_group_saves_a_complete_checkpoint(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole group: launcher and ranks. The ranks save before DeepSpeed's
    launcher (which forwards the signal, waits up to 30 s, then exits 1 itself) gives up on them."""
    run_dir = tmp_path / "run"
    args = ["--max-steps", "100000", "--log-every", "1", "--save-every", "100000", *tiny_args(run_dir)]
    launcher = start_train(args, nproc=2, log=tmp_path / "log")
    try:
        wait_for(
            lambda: max(train_losses(run_dir), default=0) >= 3, timeout=300, what="step 3", proc=launcher
        )
        os.killpg(launcher.pid, signal.SIGINT)
        launcher.wait(timeout=120)
    finally:
        kill_tree(launcher)
    stop = [r for r in metrics(run_dir, "run_state") if r["state"] == "stopped"]
    assert len(stop) == 1, (tmp_path / "log").read_text()[-3000:]
    tag = f"step_{stop[0]['step']:08d}"
    assert (run_dir / "checkpoints" / "latest").read_text() == tag
    manifest = json.loads((run_dir / "checkpoints" / tag / "manifest.json").read_text())
    assert manifest["rng_files"] == ["rng_state_rank0.pt", "rng_state_rank1.pt"]
