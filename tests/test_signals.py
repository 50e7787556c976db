"""Stop signals outside the training steps: during data preparation and evaluation, and a second Ctrl-C."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from llm.checkpoints.catalogue import newest_complete
from tests.helpers import DATA_CACHE, kill_tree, metrics, start_train, tiny_args, train_losses, wait_for

pytestmark = pytest.mark.slow


def test_sigterm_during_data_preparation_ends_it_at_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"  # empty: the built-in corpus must be prepared afresh (tens of seconds)
    run_dir = tmp_path / "run"
    args = tiny_args(run_dir, "--max-steps", "5")
    args[args.index("--data-cache") + 1] = str(cache)
    proc = start_train(args, log=tmp_path / "log")
    try:
        wait_for(lambda: cache.is_dir() and any(cache.iterdir()), timeout=300, what="preparation", proc=proc)
        time.sleep(1.0)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
        waited = time.monotonic() - sent
    finally:
        kill_tree(proc)
    log = (tmp_path / "log").read_text()
    assert code == 128 + signal.SIGTERM, log[-2000:]
    assert "error: stopped by SIGTERM during data preparation; nothing was saved" in log
    assert not any(cache.iterdir()), "a half-prepared dataset was left behind"
    assert not (run_dir / "checkpoints").exists()
    print(f"exit {code} {waited:.1f} s after SIGTERM")


def test_sigterm_during_evaluation_saves_at_the_next_step_and_records_no_partial_figure(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    # an evaluation of 100,000 micro-batches would take hours: only the signal can end it
    args = tiny_args(run_dir, "--max-steps", "1000", "--eval-batches", "100000", "--log-every", "1")
    proc = start_train(args, log=tmp_path / "log")
    try:
        started = lambda: any(r["state"] == "started" for r in metrics(run_dir, "run_state"))  # noqa: E731
        wait_for(started, timeout=300, what="the start of the step-0 evaluation", proc=proc)
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        kill_tree(proc)
    assert code == 0, (tmp_path / "log").read_text()[-2000:]
    assert metrics(run_dir, "eval") == []  # no figure from part of the batches
    stopped = [r for r in metrics(run_dir, "run_state") if r["state"] == "stopped"]
    assert len(stopped) == 1 and stopped[0]["step"] == 1
    assert newest_complete(run_dir / "checkpoints") == run_dir / "checkpoints" / "step_00000001"


def test_a_second_ctrl_c_later_exits_at_once_without_saving(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # steps of several seconds: the first Ctrl-C waits for the step to end, the second does not
    args = tiny_args(
        run_dir, "--max-steps", "1000", "--eval-every", "100000", "--eval-batches", "1", "--log-every", "1",
        "--n-layer", "8", "--n-embd", "512", "--n-head", "8", "--block-size", "512",
    )  # fmt: skip
    args[args.index("--data-cache") + 1] = str(DATA_CACHE)
    proc = start_train(args, log=tmp_path / "log")
    try:
        wait_for(lambda: len(train_losses(run_dir)) >= 1, timeout=600, what="step 1", proc=proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(2.5)  # a person pressing Ctrl-C again (the grace period is 2 s)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        kill_tree(proc)
    log = (tmp_path / "log").read_text()
    assert code == 128 + signal.SIGINT, log[-2000:]
    assert "second SIGINT: exiting now, without a checkpoint" in log
    assert newest_complete(run_dir / "checkpoints") is None
