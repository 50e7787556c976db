"""The application's typed state (`web.AppKey`), shared by its handlers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from llm.sidecar.history import HistoryStore
from llm.sidecar.hub import Hub

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class Settings:
    token: str
    dist: Path | None  # the built dashboard (index.html inside), or None: a page saying how to build it
    allowed_hosts: frozenset[str] | None  # names the Host header may carry (None: any)
    rescan_s: float  # how often runs_dir is looked at for new runs and lines


SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", HistoryStore)
HUB = web.AppKey("hub", Hub)
