"""The rank watchdog (llm/train/watchdog.py) with real processes: a stopped rank is killed, a live or
exited one is left alone, and the watchdog never outlives its rank."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

from llm.train.watchdog import BEAT_S
from tests.helpers import REPO

RANK = (
    "import sys, time\n"
    "from llm.train.watchdog import Watchdog\n"
    "w = Watchdog(timeout_s=float(sys.argv[1]), label='rank 1 on test')\n"
    "print(w._proc.pid, flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
)


def _rank(timeout_s: float, lives_s: float) -> tuple[subprocess.Popen[str], psutil.Process]:
    rank = subprocess.Popen(
        [sys.executable, "-c", RANK, str(timeout_s), str(lives_s)], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert rank.stdout is not None
    return rank, psutil.Process(int(rank.stdout.readline()))


def test_a_stopped_rank_is_killed_after_the_timeout() -> None:
    rank, watchdog = _rank(timeout_s=2, lives_s=600)
    time.sleep(3)  # alive and beating: left alone past its timeout
    assert rank.poll() is None
    started = time.monotonic()
    rank.send_signal(signal.SIGSTOP)
    code = rank.wait(timeout=60)
    _, err = rank.communicate()
    assert code == -signal.SIGKILL
    assert time.monotonic() - started >= 2 - BEAT_S  # not before the timeout (from its last beat)
    assert "rank 1 on test" in err and "gave no sign of life for 2 s" in err, err
    watchdog.wait(timeout=10)  # and it leaves after its kill


def test_the_watchdog_leaves_with_its_rank() -> None:
    rank, watchdog = _rank(timeout_s=2, lives_s=1)
    assert rank.wait(timeout=60) == 0
    watchdog.wait(timeout=10)  # the pipe closed: it left (psutil.TimeoutExpired if not)
    assert not watchdog.is_running()
    _, err = rank.communicate()
    assert "no sign of life" not in err
