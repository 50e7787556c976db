"""Test hooks for crash tests: LLM_FAILPOINT=<name>[@<n>] kills this process with SIGKILL at that point.

A real kill -9 (no cleanup, no flush), at the named moment: the n-th time it is reached where the
caller counts (a step, a file), or the first time without '@'.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str, *, at: int | None = None) -> None:
    target, _, when = os.environ.get("LLM_FAILPOINT", "").partition("@")
    if target == name and (not when or (at is not None and int(when) == at)):
        os.kill(os.getpid(), signal.SIGKILL)


def armed() -> bool:
    return bool(os.environ.get("LLM_FAILPOINT"))
