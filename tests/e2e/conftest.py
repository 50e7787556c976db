"""The browser tests' Chromium: Debian's own (`make browser`), driven by Playwright's sync API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api as playwright

from tests.helpers import REPO

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


# per module: Playwright's sync API runs an event loop in this thread while it is open, which the
# asyncio tests that come after (the sidecar's) could not start theirs beside
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert (REPO / "dashboard" / "dist" / "index.html").exists(), "build the dashboard first: make dashboard"
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
