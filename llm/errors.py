"""Errors meant for people: one line saying what is wrong, where, and what to do."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

USAGE_EXIT_CODE = 2

T = TypeVar("T")


class UsageError(Exception):
    """Bad input from the user (a flag, a config file, a path). Exits with code 2, no traceback."""


def exit_on_usage_error(fn: Callable[[], T], *, quiet: bool = False) -> T:
    """Run `fn`; on a UsageError print one line to stderr (unless quiet) and exit 2."""
    try:
        return fn()
    except UsageError as err:
        fail(str(err), quiet=quiet)


def fail(message: str, *, quiet: bool = False) -> NoReturn:
    if not quiet:
        print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(USAGE_EXIT_CODE)


SILENT_RANK_GRACE_S = 20.0


def fail_before_ranks_meet(message: str, *, speaks: bool) -> NoReturn:
    """Exit 2 from a check every rank makes on its own, before the ranks have met.

    Only `speaks` ranks print (one line per node, not one per rank). Launchers end every rank as soon
    as one exits non-zero, so a silent rank that left first could have the speaking rank killed before
    it prints. A silent rank waits instead; if nothing ended it meanwhile, the problem was its own, and
    it says so.
    """
    if not speaks:
        time.sleep(SILENT_RANK_GRACE_S)
    fail(message)


def read_json(path: Path, *, what: str, fix: str) -> Any:
    """Parse a JSON file, or raise one UsageError: missing, unreadable, or invalid (with line and column)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what}; {fix}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot read the {what} ({err}); {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(
            f"{path}:{err.lineno}:{err.colno}: invalid JSON in the {what}: {err.msg}; {fix}"
        ) from None
