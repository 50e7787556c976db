"""Test hooks for crash tests: LLM_FAILPOINT=<name>[@<n>] kills this process with SIGKILL at that point.

A real kill -9 (no cleanup, no flush), at the named moment: where the caller passes `at` (a step), when
it equals n; otherwise the n-th time this process reaches the point (the first time without '@').
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

_hits: Counter[str] = Counter()
_lock = threading.Lock()


def failpoint(name: str, *, at: int | None = None) -> None:
    target, _, when = os.environ.get("LLM_FAILPOINT", "").partition("@")
    if target != name:
        return
    if at is None:
        with _lock:
            _hits[name] += 1
            at = _hits[name]
        if not when:
            when = "1"
    if not when or int(when) == at:
        os.kill(os.getpid(), signal.SIGKILL)


def armed() -> bool:
    return bool(os.environ.get("LLM_FAILPOINT"))
