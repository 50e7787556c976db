"""The HTTP API (docs/dashboard.md): health, runs, records, the bucketed series view, and controls."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import sys
from typing import Any

import numpy as np
from aiohttp import web
from pydantic import ValidationError

from llm.sidecar.history import EVAL_KEYS, TRAIN_KEYS, X_KEYS, RunHistory
from llm.sidecar.messages import MAX_MESSAGE, ControlRequest, reason
from llm.sidecar.series import DEFAULT_BUCKETS, MAX_BUCKETS, SeriesQuery, bucketed_view
from llm.sidecar.sockets import require_token
from llm.sidecar.state import HUB, STORE


def _run(request: web.Request) -> RunHistory:
    run = request.app[STORE].runs.get(request.match_info["run_id"])
    if run is None:
        raise web.HTTPNotFound(text=f"no run {request.match_info['run_id']!r} here; GET /api/runs lists them")
    return run


def _number(
    request: web.Request, name: str, default: float | None, *, low: float, high: float
) -> float | None:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name}={text!r}: expected a number in [{low}, {high}]")
    return value


async def healthz(request: web.Request) -> web.Response:
    return web.json_response(
        {"ok": True, "epoch": request.app[HUB].epoch, "runs": len(request.app[STORE].runs)}
    )


async def runs(request: web.Request) -> web.Response:
    store = request.app[STORE]
    store.scan()  # cheap: a stat per run, and only new lines are read
    return web.json_response({"epoch": request.app[HUB].epoch, "runs": store.infos()})


async def metrics(request: web.Request) -> web.Response:
    run = _run(request)
    since = _number(request, "since", -1, low=-1, high=2**62)
    records = run.records_after(int(since if since is not None else -1))
    body = f'{{"epoch":{json.dumps(request.app[HUB].epoch)},"records":[{",".join(records)}]}}'
    return web.Response(text=body, content_type="application/json")


async def series(request: web.Request) -> web.Response:
    run = _run(request)
    key, x_key = request.query.get("key", ""), request.query.get("x", "step")
    if key not in TRAIN_KEYS and key not in EVAL_KEYS:
        raise web.HTTPBadRequest(text=f"key={key!r}: one of {', '.join(TRAIN_KEYS + EVAL_KEYS)}")
    if x_key not in X_KEYS:
        raise web.HTTPBadRequest(text=f"x={x_key!r}: one of {', '.join(X_KEYS)}")
    buckets = _number(request, "buckets", DEFAULT_BUCKETS, low=1, high=MAX_BUCKETS)
    smoothing = _number(request, "smoothing", 0.0, low=0.0, high=0.999999)
    x_min = _number(request, "x_min", None, low=-sys.float_info.max, high=sys.float_info.max)
    x_max = _number(request, "x_max", None, low=-sys.float_info.max, high=sys.float_info.max)
    if x_min is not None and x_max is not None and x_min > x_max:
        raise web.HTTPBadRequest(text="x_min is above x_max")
    query = SeriesQuery(int(buckets or DEFAULT_BUCKETS), smoothing or 0.0, x_min, x_max)
    columns = run.train if key in TRAIN_KEYS else run.eval
    present = (
        np.frombuffer(bytes(columns.missing[key]), dtype=np.uint8) == 0
    )  # copies: the view is made off-loop
    x, y = np.array(columns.x[x_key])[present], np.array(columns.y[key])[present]
    skipped = (
        np.array(columns.y["skipped_steps"])[present] if key in ("loss_scale", "skipped_steps") else None
    )
    view = await asyncio.get_running_loop().run_in_executor(
        None, lambda: bucketed_view(x, y, query=query, skipped_steps=skipped)
    )
    head: dict[str, Any] = {"epoch": request.app[HUB].epoch, "run_id": run.run_id, "key": key, "x": x_key}
    return web.json_response({**head, "smoothing": query.smoothing, "buckets": query.buckets, **view})


async def control(request: web.Request) -> web.Response:
    require_token(request)
    body = await request.read()
    if len(body) > MAX_MESSAGE:
        raise web.HTTPBadRequest(text="the body is over 64 KiB")
    try:
        command = ControlRequest.model_validate_json(body)
    except ValidationError as err:
        raise web.HTTPBadRequest(text=f"bad control body ({reason(err)})") from None
    run = _run(request)
    trainer = request.app[HUB].trainers.get(run.run_id)
    if trainer is None or trainer.closed:
        raise web.HTTPConflict(text=f"run {run.run_id} is not live: no trainer is connected to take commands")
    command_id = secrets.token_hex(8)
    message = {"kind": "control", "id": command_id, **command.model_dump(exclude_none=True)}
    try:
        await trainer.send_str(json.dumps(message))
    except (ConnectionError, RuntimeError):
        raise web.HTTPConflict(text=f"run {run.run_id}: its trainer socket closed just now") from None
    return web.json_response({"id": command_id, "status": "pending"}, status=202)
