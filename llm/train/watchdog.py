"""A rank's outer watchdog: a small process that kills its rank once the rank stops showing signs of life.

A frozen rank (SIGSTOP, a hang in a driver, a disk that stopped answering) cannot end itself, and its
launcher waits on it forever: the other ranks' collectives time out (--dist-timeout) and they exit,
but the node that holds the frozen rank keeps its launcher, and the ssh session the user's launcher
waits on, open for good (measured in shared/recipes/multinode.md). The watchdog is a separate
process, so it runs while its rank is stopped: the rank writes a byte down a pipe every second from a
thread; after `timeout` seconds without one, the watchdog says so on stderr and SIGKILLs the rank, so
the rank's launcher sees it die and ends like after any crash. When the rank exits (however it exits)
the pipe closes and the watchdog leaves at once: it never outlives its rank.

    python llm/train/watchdog.py --pid PID --timeout SECONDS --label "rank 1 on node1"
(run as a file, not a module: it imports nothing but the standard library and starts in milliseconds)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time

BEAT_S = 1.0
# the trainer's watchdogs wait --dist-timeout and this long: the other ranks' collectives time out first
# and name the frozen rank (a monitored barrier of 5 s), then the watchdog ends it
WATCHDOG_GRACE_S = 15.0


class Watchdog:
    """The rank's side: start the watchdog process and the thread that keeps it quiet."""

    def __init__(self, *, timeout_s: float, label: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--pid", str(os.getpid()), "--timeout", str(timeout_s),
             "--label", label],
            stdin=subprocess.PIPE, close_fds=True,
        )  # fmt: skip
        assert self._proc.stdin is not None
        self._pipe = self._proc.stdin.fileno()
        self._thread = threading.Thread(target=self._beat, name="watchdog-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while True:
            try:
                os.write(self._pipe, b".")
            except OSError:  # the watchdog is gone (killed with the process group): nothing to keep quiet
                return
            time.sleep(BEAT_S)


def watch(pid: int, timeout_s: float, label: str) -> int:
    """Read heartbeats from stdin; SIGKILL `pid` after `timeout_s` without one. Returns the exit code."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # a signal to the job's process group: the rank handles it
    stdin = sys.stdin.fileno()
    last = time.monotonic()
    while True:
        ready, _, _ = select.select(
            [stdin], [], [], min(BEAT_S, max(0.0, last + timeout_s - time.monotonic()))
        )
        if os.getppid() != pid:
            return 0  # the rank is gone (a forked child of it may still hold the pipe open)
        if ready:
            if not os.read(stdin, 4096):
                return 0  # the rank exited: the pipe closed
            last = time.monotonic()
            continue
        if time.monotonic() - last < timeout_s:
            continue
        print(
            f"error: {label} (pid {pid}) gave no sign of life for {timeout_s:g} s (stopped or hung): the "
            "watchdog killed it so that the job ends (--dist-timeout); continue with --resume auto",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="watchdog.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--pid", type=int, required=True, help="the rank's process id")
    parser.add_argument("--timeout", type=float, required=True, help="seconds without a heartbeat")
    parser.add_argument("--label", default="a rank", help="how the error names the rank")
    args = parser.parse_args(argv)
    return watch(args.pid, args.timeout, args.label)


if __name__ == "__main__":
    sys.exit(main())
