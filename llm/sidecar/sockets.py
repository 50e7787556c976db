"""The two WebSockets (docs/dashboard.md): the trainer's `/ws/trainer` and the browsers' `/ws/dashboard`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging

from aiohttp import WSMsgType, web
from pydantic import ValidationError
from yarl import URL

from llm.sidecar.history import RunHistory
from llm.sidecar.hub import Browser
from llm.sidecar.messages import MAX_TRAINER_MESSAGE, TRAINER_MESSAGE, TrainerHello, reason, too_large
from llm.sidecar.state import HUB, SETTINGS, STORE

log = logging.getLogger("llm.sidecar")

FRAME_LIMIT = 1024 * 1024  # a browser's frame over this closes its socket (1009)
TRAINER_FRAME_LIMIT = 4 * MAX_TRAINER_MESSAGE  # the trainer's: over MAX_TRAINER_MESSAGE it is dropped
HEARTBEAT_S = 30.0


def authorized(request: web.Request) -> bool:
    """`Authorization: Bearer TOKEN` with the sidecar's token (compared in constant time)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    token = request.app[SETTINGS].token
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def require_token(request: web.Request) -> None:
    if not authorized(request):
        raise web.HTTPUnauthorized(
            text="the sidecar's token is required: Authorization: Bearer TOKEN (printed at its start)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def same_origin(request: web.Request) -> bool:
    """True when the request has no Origin, or the Origin is the page this sidecar served."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        theirs, ours = URL(origin), URL(f"{request.scheme}://{request.host}")
        return (theirs.scheme, theirs.host, theirs.port) == (ours.scheme, ours.host, ours.port)
    except ValueError:
        return False


async def trainer_socket(request: web.Request) -> web.WebSocketResponse:
    require_token(request)
    ws = web.WebSocketResponse(max_msg_size=TRAINER_FRAME_LIMIT, heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    run: RunHistory | None = None
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                log.warning("trainer socket: dropped a %s message (text frames only)", msg.type.name)
                continue
            if too_large(msg.data, MAX_TRAINER_MESSAGE):
                log.warning("trainer socket: dropped a message of %d characters (over 2 MiB)", len(msg.data))
                continue
            try:
                message = TRAINER_MESSAGE.validate_json(msg.data)
            except ValidationError as err:
                log.warning("trainer socket: dropped a message (%s)", reason(err))
                continue
            if isinstance(message, TrainerHello):
                if run is None:
                    run = await _hello(request, ws, message)
                else:
                    log.warning("trainer socket: dropped a second hello (this socket is run %s)", run.run_id)
            elif run is None:
                log.warning("trainer socket: dropped an event sent before hello")
            elif message.event.run_id != run.run_id:
                log.warning(
                    "trainer socket: dropped an event of run %s on run %s's socket",
                    message.event.run_id,
                    run.run_id,
                )
            else:
                request.app[STORE].add(run, [message.event])
    finally:
        hub = request.app[HUB]
        if run is not None and hub.trainers.get(run.run_id) is ws:
            del hub.trainers[run.run_id]
            run.live = False
            hub.publish_run(run)
    return ws


async def _hello(request: web.Request, ws: web.WebSocketResponse, hello: TrainerHello) -> RunHistory:
    """The run is live: answer with the last seq held, so the trainer sends only what is missing."""
    hub = request.app[HUB]
    run = request.app[STORE].open_run(hello.run_id, run_dir=hello.run_dir, max_steps=hello.max_steps)
    previous = hub.trainers.get(run.run_id)
    hub.trainers[run.run_id] = ws
    if previous is not None:  # the trainer reconnected before its old socket timed out
        hub.spawn(previous.close(code=4000, message=b"replaced by a newer trainer socket"))
    run.live = True
    await ws.send_str(json.dumps({"kind": "welcome", "last_seq": run.last_seq}))
    hub.publish_run(run)
    log.info("trainer socket: run %s is live (last seq %d)", run.run_id, run.last_seq)
    return run


def _since(request: web.Request) -> int:
    try:
        since = int(request.query.get("since", "-1"))
    except ValueError:
        since = -2
    if since < -1:
        raise web.HTTPBadRequest(text="since must be an integer >= -1 (the last seq the page holds)")
    return since


async def dashboard_socket(request: web.Request) -> web.WebSocketResponse:
    if not same_origin(request):
        raise web.HTTPForbidden(text="this socket serves only pages of the sidecar's own origin")
    run_id, since, epoch = request.query.get("run"), _since(request), request.query.get("epoch")
    hub, store = request.app[HUB], request.app[STORE]
    ws = web.WebSocketResponse(max_msg_size=FRAME_LIMIT, heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    run = store.runs.get(run_id) if run_id is not None else None
    first = [hub.message("hello", run_id=run_id, live=run is not None and run.live)]
    reset = epoch is not None and epoch != hub.epoch
    if reset:  # records before a restart may not be what the page holds: send the whole history again
        first.append(hub.message("reset"))
    browser = Browser(ws, run_id, epoch=hub.epoch, queue_size=hub.queue_size, batch_s=hub.batch_s)
    hub.subscribe(browser)  # in the same step as the replay snapshot: no record falls between them
    browser.start(first, run.records_after(-1 if reset else since) if run is not None else [])
    try:
        async for msg in ws:
            if _is_ping(msg):
                hub.reply(browser, hub.message("pong"))
            else:
                log.debug("browser socket: ignored a %s message", msg.type.name)
    finally:
        hub.unsubscribe(browser)
        if browser.sender is not None:
            browser.sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await browser.sender
    return ws


def _is_ping(msg: object) -> bool:
    data = getattr(msg, "data", None)
    if getattr(msg, "type", None) != WSMsgType.TEXT or not isinstance(data, str) or len(data) > 1024:
        return False
    try:
        message = json.loads(data)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("kind") == "ping"
