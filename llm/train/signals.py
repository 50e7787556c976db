"""SIGTERM and Ctrl-C: stop cleanly at the next step boundary; a second Ctrl-C stops at once.

During training the first signal only sets a flag, which every rank reads at the next step boundary
(then every rank saves a checkpoint and exits 0). Inside `interruptible()` (data preparation, where
there is nothing to save) it raises `Interrupted` straight away instead. Evaluation polls the flag
between batches and gives up early.

A second signal ends the process at once, without a checkpoint (exit 128 + signal) — but only one
that comes GRACE_S or more after the first: a Ctrl-C in a terminal reaches the deepspeed launcher
and the ranks together, and the launcher forwards it as SIGTERM a moment later; that is one request.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

GRACE_S = 2.0


class Interrupted(Exception):
    """A stop signal arrived while nothing could be saved."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StopSignal:
    """Installs handlers for SIGTERM and SIGINT in this (the main) thread."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._first_at = 0.0
        self._interruptible = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.received is not None:
            if now - self._first_at >= GRACE_S:
                print(
                    f"error: second {signal.Signals(signum).name}: exiting now, without a checkpoint",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(128 + signum)
            return
        self.received, self._first_at = signum, now
        if self._interruptible:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within this block a stop signal raises Interrupted (also if it came just before)."""
        if self.received is not None:
            raise Interrupted(self.received)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False
