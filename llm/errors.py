"""Errors meant for people: one line saying what is wrong, where, and what to do."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

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
