"""The sidecar's aiohttp application: routes, the Host check, static files and the background rescan."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from llm.sidecar import api, sockets
from llm.sidecar.history import HistoryStore
from llm.sidecar.hub import BATCH_S, QUEUE_SIZE, Hub
from llm.sidecar.state import HUB, LOOPBACK_NAMES, SETTINGS, STORE, Settings

log = logging.getLogger("llm.sidecar")

NO_DASHBOARD_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llm dashboard: not built</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5">
<h1>The dashboard is not built yet</h1>
<p>The sidecar is running and relaying metrics, but it found no built page to serve.
Build it from the checkout with <code>make dashboard</code> (<code>npm ci &amp;&amp; npm run build</code>
in <code>dashboard/</code>), then reload this page.</p>
<p>The API answers meanwhile: <a href="/api/runs">/api/runs</a>, <a href="/healthz">/healthz</a>.</p>
</body></html>
"""


def host_allowed(host: str | None, allowed: frozenset[str] | None) -> bool:
    """Whether a Host header's name is one this sidecar answers to (a guard against DNS rebinding)."""
    if allowed is None:
        return True
    if host is None:
        return False
    if host.lower() in allowed:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback and "127.0.0.1" in allowed
    except ValueError:
        return False


@web.middleware
async def check_host(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if not host_allowed(request.url.host, request.app[SETTINGS].allowed_hosts):
        raise web.HTTPForbidden(text=f"this sidecar does not answer to the host {request.host!r}")
    return await handler(request)


async def _rescan_forever(app: web.Application) -> None:
    store = app[STORE]
    while True:
        await asyncio.sleep(app[SETTINGS].rescan_s)
        try:
            store.scan()
        except Exception:  # a rescan must never end the server
            log.exception("rescanning %s failed", store.runs_dir)


async def _background(app: web.Application) -> AsyncIterator[None]:
    app[STORE].scan()  # the whole history, before the port opens
    task = asyncio.create_task(_rescan_forever(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_sockets(app: web.Application) -> None:
    await app[HUB].close_all()


def _add_static(app: web.Application, dist: Path | None) -> None:
    if dist is None or not (dist / "index.html").is_file():

        async def no_dashboard(request: web.Request) -> web.Response:
            return web.Response(text=NO_DASHBOARD_PAGE, content_type="text/html")

        app.router.add_get("/", no_dashboard)
        return
    index = dist / "index.html"

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.router.add_get("/", page)
    app.router.add_static("/", dist)


def create_app(
    *,
    runs_dir: Path,
    token: str,
    dist: Path | None,
    allowed_hosts: frozenset[str] | None = LOOPBACK_NAMES,
    epoch: str | None = None,
    queue_size: int = QUEUE_SIZE,
    batch_s: float = BATCH_S,
    rescan_s: float = 2.0,
) -> web.Application:
    """The sidecar. `allowed_hosts`: Host names it answers to (None: any, for a non-loopback bind)."""
    app = web.Application(middlewares=[check_host])
    app[SETTINGS] = Settings(token=token, dist=dist, allowed_hosts=allowed_hosts, rescan_s=rescan_s)
    store = HistoryStore(runs_dir)
    hub = Hub(epoch=epoch or secrets.token_hex(8), queue_size=queue_size, batch_s=batch_s)
    store.on_records, store.on_run = hub.publish_records, hub.publish_run
    app[STORE], app[HUB] = store, hub
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/api/runs", api.runs)
    app.router.add_get("/api/runs/{run_id}/metrics", api.metrics)
    app.router.add_get("/api/runs/{run_id}/series", api.series)
    app.router.add_post("/api/runs/{run_id}/control", api.control)
    app.router.add_get("/ws/trainer", sockets.trainer_socket)
    app.router.add_get("/ws/dashboard", sockets.dashboard_socket)
    _add_static(app, dist)
    return app
