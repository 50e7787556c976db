"""The sidecar (llm/sidecar, docs/dashboard.md) through aiohttp's test client: sockets, API, history.

Every test runs a real app on loopback; the trainer is a WebSocket client speaking the protocol, and run
folders are written the way the trainer writes them (one JSON record a line in metrics.jsonl).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llm.sidecar.app import create_app
from llm.telemetry.schema import (
    ControlEvent,
    EvalEvent,
    Event,
    Histogram,
    LayerStats,
    ParamsEvent,
    RunStateEvent,
    TrainEvent,
)

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


# --- records as the trainer makes them


def train(run_id: str, seq: int, step: int | None = None, *, loss: float = 2.5, **fields: Any) -> TrainEvent:
    step = seq if step is None else step
    values: dict[str, Any] = {
        "tokens_seen": 1024 * step,
        "lr": 1e-3,
        "grad_norm": 1.0,
        "loss_scale": 1.0,
        "skipped_steps": 0,
        "step_time": 0.1,
        "tokens_per_s": 10_000.0,
        "tflops": 0.5,
        "mfu": 0.3,
        "memory_gb": None,
    }
    values.update(fields)
    return TrainEvent(run_id=run_id, seq=seq, time=1_000.0 + seq, step=step, loss=loss, **values)


def state(run_id: str, seq: int, name: str, step: int = 0) -> RunStateEvent:
    return RunStateEvent(run_id=run_id, seq=seq, time=1_000.0 + seq, state=name, step=step)  # type: ignore[arg-type]


def later(events: list[Event], seconds: float) -> list[Event]:
    return [e.model_copy(update={"time": e.time + seconds}) for e in events]


def line(event: Event) -> str:
    """One metrics.jsonl line; json.dumps writes NaN as NaN, which the schema's parser reads back."""
    return json.dumps(event.model_dump())


def write_run(runs_dir: Path, run_id: str, events: list[Event], *, max_steps: int | None = None) -> Path:
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.jsonl"
    cut_short = path.exists() and not path.read_text().endswith("\n")
    with path.open("a") as handle:
        if cut_short:  # as the trainer's JsonlSink does after a crash mid-line
            handle.write("\n")
        handle.writelines(line(e) + "\n" for e in events)
    if max_steps is not None:
        (run_dir / "run.json").write_text(
            json.dumps({"run_id": run_id, "settings": {"max_steps": max_steps}})
        )
    return run_dir


def hello(run_id: str, run_dir: str = "/elsewhere/run", max_steps: int = 100) -> dict[str, Any]:
    return {"kind": "hello", "run_id": run_id, "run_dir": run_dir, "max_steps": max_steps, "world_size": 2}


def event_message(event: Event) -> str:
    return json.dumps({"kind": "event", "event": event.model_dump()})


# --- fixtures and socket helpers


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def make_client(aiohttp_client: Any, runs_dir: Path) -> MakeClient:
    async def make(**options: Any) -> Client:
        settings: dict[str, Any] = {"runs_dir": runs_dir, "token": TOKEN, "dist": None, **options}
        return await aiohttp_client(create_app(**settings))

    return make


async def connect_trainer(client: Client, run_id: str, **hello_fields: Any) -> tuple[Any, int]:
    """A trainer socket past its hello; returns it and the welcome's last_seq."""
    ws = await client.ws_connect("/ws/trainer", headers=AUTH)
    await ws.send_str(json.dumps(hello(run_id, **hello_fields)))
    welcome = await ws.receive_json(timeout=5)
    assert welcome["kind"] == "welcome"
    return ws, welcome["last_seq"]


async def receive(ws: Any, kind: str) -> dict[str, Any]:
    """The next message of this kind (run summaries and others in between are skipped)."""
    while True:
        message = await ws.receive_json(timeout=5)
        if message["kind"] == kind:
            return message


async def receive_seqs(ws: Any, count: int) -> list[int]:
    """The seqs of the next `count` records a browser socket receives, in order."""
    seqs: list[int] = []
    while len(seqs) < count:
        message = await receive(ws, "records")
        seqs += [r["seq"] for r in message["records"]]
    return seqs


def strict_json(text: str) -> Any:
    """JSON as a browser reads it: NaN and Infinity are not JSON."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in an answer"))


async def epoch_of(client: Client) -> str:
    return (await (await client.get("/healthz")).json())["epoch"]


# --- the browser socket: replay, live, reset


async def test_replay_from_seq_then_live(make_client: MakeClient, runs_dir: Path) -> None:
    write_run(runs_dir, "r1", [state("r1", 0, "started")] + [train("r1", s) for s in range(1, 10)])
    client = await make_client()
    epoch = await epoch_of(client)
    browser = await client.ws_connect(f"/ws/dashboard?run=r1&since=4&epoch={epoch}")
    first = await browser.receive_json(timeout=5)
    assert first == {"kind": "hello", "epoch": epoch, "run_id": "r1", "live": False}
    assert await receive_seqs(browser, 5) == [5, 6, 7, 8, 9]

    trainer, last_seq = await connect_trainer(client, "r1")
    assert last_seq == 9
    run = await receive(browser, "run")
    assert run["run"]["live"] is True and run["run"]["state"] == "running"
    for seq in (10, 11):
        await trainer.send_str(event_message(train("r1", seq)))
    assert await receive_seqs(browser, 2) == [10, 11]
    records = (await (await client.get("/api/runs/r1/metrics?since=8")).json())["records"]
    assert [r["seq"] for r in records] == [9, 10, 11]


async def test_live_fan_out_to_several_browsers_without_duplicates(make_client: MakeClient) -> None:
    client = await make_client()
    browsers = [await client.ws_connect("/ws/dashboard?run=live1") for _ in range(4)]
    for browser in browsers:
        assert (await browser.receive_json(timeout=5))["kind"] == "hello"
    trainer, last_seq = await connect_trainer(client, "live1")
    assert last_seq == -1
    for seq in range(50):
        await trainer.send_str(event_message(train("live1", seq)))
    for seq in (10, 49):  # resent after a reconnect: already held, ignored
        await trainer.send_str(event_message(train("live1", seq)))
    await trainer.send_str(event_message(train("live1", 50)))
    for browser in browsers:
        assert await receive_seqs(browser, 51) == list(range(51))


async def test_a_large_models_params_record_reaches_the_browser(make_client: MakeClient) -> None:
    """GPT-2 XL has 580 parameter tensors: its `params` record is ~110 KB, over a browser's 64 KiB."""
    stats = {"numel": 6_553_600, "weight_norm": 20.468593097062026, "grad_norm": 0.6506147656654954}
    stats["update_ratio"] = 0.0021566480980952604  # full float precision, as the trainer writes them
    layers = [LayerStats(name=f"blocks.{i // 12}.mlp.c_fc.weight.{i}", **stats) for i in range(580)]
    histogram = Histogram(name=layers[0].name, edges=[i / 40 for i in range(41)], counts=[100] * 40)
    record = ParamsEvent(run_id="big", seq=0, time=1.0, step=50, layers=layers, histogram=histogram)
    message = event_message(record)
    assert len(message) > 64 * 1024
    client = await make_client()
    browser = await client.ws_connect("/ws/dashboard?run=big", max_msg_size=0)
    await browser.receive_json(timeout=5)
    trainer, _ = await connect_trainer(client, "big")
    await trainer.send_str(message)
    got = await receive(browser, "records")
    assert got["records"][0]["layers"] == [layer.model_dump() for layer in layers]


async def test_live_records_arriving_together_share_a_message(make_client: MakeClient) -> None:
    client = await make_client(batch_s=2.0)  # a long window, so that the three surely fall in it
    browser = await client.ws_connect("/ws/dashboard?run=r1")
    await browser.receive_json(timeout=5)
    trainer, _ = await connect_trainer(client, "r1")
    assert (await browser.receive_json(timeout=5))["kind"] == "run"  # live: not held back
    for seq in range(3):
        await trainer.send_str(event_message(train("r1", seq)))
        await asyncio.sleep(0.05)  # each alone on the wire
    message = await browser.receive_json(timeout=5)
    assert [r["seq"] for r in message["records"]] == [0, 1, 2]


async def test_a_socket_without_a_run_hears_every_run_change_and_no_records(make_client: MakeClient) -> None:
    client = await make_client()
    lobby = await client.ws_connect("/ws/dashboard")
    assert await lobby.receive_json(timeout=5) == {
        "kind": "hello",
        "epoch": await epoch_of(client),
        "run_id": None,
        "live": False,
    }
    trainer, _ = await connect_trainer(client, "new-run")
    await trainer.send_str(event_message(train("new-run", 0)))
    await trainer.send_str(event_message(state("new-run", 1, "finished")))
    kinds = []
    while len(kinds) < 2:
        message = await lobby.receive_json(timeout=5)
        kinds.append((message["kind"], message["run"]["run_id"], message["run"]["state"]))
    assert kinds == [("run", "new-run", "running"), ("run", "new-run", "finished")]


async def test_epoch_mismatch_answers_reset_then_the_whole_history(
    make_client: MakeClient, runs_dir: Path
) -> None:
    write_run(runs_dir, "r1", [train("r1", s) for s in range(6)])
    client = await make_client(epoch="new-epoch")
    browser = await client.ws_connect("/ws/dashboard?run=r1&since=3&epoch=old-epoch")
    assert (await browser.receive_json(timeout=5))["kind"] == "hello"
    assert await browser.receive_json(timeout=5) == {"kind": "reset", "epoch": "new-epoch"}
    assert await receive_seqs(browser, 6) == list(range(6))


async def test_ping_is_answered_and_other_browser_messages_ignored(make_client: MakeClient) -> None:
    client = await make_client()
    browser = await client.ws_connect("/ws/dashboard?run=x")
    await browser.receive_json(timeout=5)
    await browser.send_str("not json {")
    await browser.send_bytes(b"\x00\x01")
    await browser.send_str(json.dumps({"kind": "control", "action": "stop"}))  # not on this socket
    await browser.send_str(json.dumps({"kind": "ping"}))
    assert await browser.receive_json(timeout=5) == {"kind": "pong", "epoch": await epoch_of(client)}


async def test_a_browser_that_falls_behind_is_disconnected_and_stalls_no_one(
    make_client: MakeClient,
) -> None:
    client = await make_client(queue_size=64, batch_s=0)
    slow = await client.ws_connect("/ws/dashboard?run=big")
    fast = await client.ws_connect("/ws/dashboard?run=big")
    for ws in (slow, fast):
        await ws.receive_json(timeout=5)
    slow._conn.transport.pause_reading()  # the slow page: its socket buffers fill, then its queue
    trainer, _ = await connect_trainer(client, "big")
    padding = "x" * 60_000  # records near the 64 KiB limit fill the kernel's buffers quickly
    total = 500
    fast_receives = asyncio.create_task(receive_seqs(fast, total))  # the fast page reads as they come
    for seq in range(total):
        record = state("big", seq, "checkpoint_saved").model_copy(update={"detail": padding})
        await trainer.send_str(event_message(record))
    assert await fast_receives == list(range(total))
    slow._conn.transport.resume_reading()
    closed = None
    while closed is None:
        message = await slow.receive(timeout=15)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            closed = slow.close_code
    assert closed == 1013
    again = await client.ws_connect("/ws/dashboard?run=big&since=490")  # it reconnects and resumes
    await again.receive_json(timeout=5)
    assert await receive_seqs(again, 9) == list(range(491, 500))


# --- bad messages are dropped and the server keeps serving


async def test_bad_trainer_messages_are_dropped_and_the_socket_keeps_serving(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    browser = await client.ws_connect("/ws/dashboard?run=r1")
    await browser.receive_json(timeout=5)
    trainer = await client.ws_connect("/ws/trainer", headers=AUTH)
    caplog.set_level(logging.WARNING, logger="llm.sidecar")
    await trainer.send_str(event_message(train("r1", 0)))  # before hello
    await trainer.send_str(json.dumps({**hello("r1"), "max_steps": "many"}))  # a wrong type in hello
    await trainer.send_str(json.dumps(hello("r1")))
    assert (await trainer.receive_json(timeout=5))["kind"] == "welcome"
    bad = {
        "not JSON": "{'kind': 'event'",
        "a list": "[1, 2]",
        "unknown kind": json.dumps({"kind": "metrics", "event": {}}),
        "wrong type": json.dumps({"kind": "event", "event": {**train("r1", 0).model_dump(), "loss": "low"}}),
        "bad seq": json.dumps({"kind": "event", "event": {**train("r1", 0).model_dump(), "seq": -1}}),
        "unknown record": json.dumps({"kind": "event", "event": {"type": "weights", "run_id": "r1"}}),
        "other run": event_message(train("r2", 0)),
        "oversize": json.dumps(
            {"kind": "event", "event": {**train("r1", 0).model_dump(), "pad": "x" * 2_100_000}}
        ),
    }
    for text in bad.values():
        await trainer.send_str(text)
    await trainer.send_bytes(line(train("r1", 0)).encode())  # binary frames are not accepted
    await trainer.send_str(event_message(train("r1", 0, loss=1.5)))
    message = await receive(browser, "records")
    assert [(r["seq"], r["loss"]) for r in message["records"]] == [(0, 1.5)]
    assert not trainer.closed
    reasons = " | ".join(r.getMessage() for r in caplog.records)
    for expected in (
        "before hello",
        "max_steps",
        "Invalid JSON",
        "does not match any of the expected tags",
        "event.train.loss",
        "event.train.seq",
        "run r2",
        "over 2 MiB",
        "BINARY",
    ):
        assert expected in reasons
    assert (await client.get("/healthz")).status == 200


async def test_oversize_control_bodies_and_bad_queries_are_refused(
    make_client: MakeClient, runs_dir: Path
) -> None:
    write_run(runs_dir, "r1", [train("r1", 0)])
    client = await make_client()
    assert (await client.get("/api/runs/r1/metrics?since=abc")).status == 400
    assert (await client.get("/api/runs/nope/metrics")).status == 404
    assert (await client.get("/ws/dashboard?run=r1&since=-5")).status == 400
    for query in (
        "key=nope",
        "key=loss&x=seq",
        "key=loss&buckets=0",
        "key=loss&buckets=5001",
        "key=loss&smoothing=1",
        "key=loss&x_min=5&x_max=1",
        "key=loss&x_min=nan",
    ):
        assert (await client.get(f"/api/runs/r1/series?{query}")).status == 400, query


# --- tokens, origins, hosts


async def test_trainer_socket_needs_the_token(make_client: MakeClient) -> None:
    client = await make_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await client.ws_connect("/ws/trainer", headers=headers)
        assert caught.value.status == 401


async def test_control_needs_the_token_a_live_run_and_a_good_body(
    make_client: MakeClient, runs_dir: Path
) -> None:
    write_run(runs_dir, "done", [train("done", 0), state("done", 1, "finished")])
    client = await make_client()
    body = {"action": "pause"}
    assert (await client.post("/api/runs/done/control", json=body)).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.post("/api/runs/done/control", json=body, headers=wrong)).status == 401
    assert (await client.post("/api/runs/done/control", json=body, headers=AUTH)).status == 409
    assert (await client.post("/api/runs/absent/control", json=body, headers=AUTH)).status == 404
    for bad in (
        {"action": "explode"},
        {"action": "set_lr"},
        {"action": "set_lr", "lr_scale": 0},
        {"action": "pause", "lr_scale": 2.0},
        {"action": "pause", "extra": 1},
        [1],
    ):
        assert (await client.post("/api/runs/done/control", json=bad, headers=AUTH)).status == 400, bad
    oversize = {"action": "pause", "pad": "x" * 70_000}
    assert (await client.post("/api/runs/done/control", json=oversize, headers=AUTH)).status == 400
    assert (await client.post("/api/runs/done/control", data=b"{", headers=AUTH)).status == 400


async def test_control_is_routed_to_the_trainer_socket(make_client: MakeClient) -> None:
    client = await make_client()
    trainer, _ = await connect_trainer(client, "r1")
    answer = await client.post(
        "/api/runs/r1/control", json={"action": "set_lr", "lr_scale": 0.5}, headers=AUTH
    )
    assert answer.status == 202
    reply = await answer.json()
    assert reply["status"] == "pending"
    command = await trainer.receive_json(timeout=5)
    assert command == {"kind": "control", "id": reply["id"], "action": "set_lr", "lr_scale": 0.5}
    answer = await client.post("/api/runs/r1/control", json={"action": "pause"}, headers=AUTH)
    assert await trainer.receive_json(timeout=5) == {
        "kind": "control",
        "id": (await answer.json())["id"],
        "action": "pause",
    }
    await trainer.close()
    await asyncio.sleep(0.05)
    assert (await client.post("/api/runs/r1/control", json={"action": "pause"}, headers=AUTH)).status == 409


async def test_foreign_origin_and_foreign_host_are_refused(make_client: MakeClient) -> None:
    client = await make_client()
    own = f"http://{client.host}:{client.port}"
    for origin in ("http://evil.example", f"http://localhost:{client.port + 1}", "null"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await client.ws_connect("/ws/dashboard?run=r1", headers={"Origin": origin})
        assert caught.value.status == 403, origin
    ws = await client.ws_connect("/ws/dashboard?run=r1", headers={"Origin": own})
    assert (await ws.receive_json(timeout=5))["kind"] == "hello"
    rebinding = {"Host": f"evil.example:{client.port}"}  # a DNS-rebinding page names its own host
    assert (await client.get("/api/runs", headers=rebinding)).status == 403
    open_app = await make_client(allowed_hosts=None)  # bound to a public address (token set): any name
    assert (await open_app.get("/api/runs", headers=rebinding)).status == 200


# --- history: runs on disk, state, restart


async def test_runs_list_from_run_folders_on_disk(make_client: MakeClient, runs_dir: Path) -> None:
    old = [state("old", 0, "started"), train("old", 1), state("old", 2, "finished", 1)]
    write_run(runs_dir, "old", old, max_steps=1)
    crashed_events = [state("crashed", 0, "started"), train("crashed", 1, loss=3.0)]
    crashed = write_run(runs_dir, "crashed", later(crashed_events, 1_000))
    with (crashed / "metrics.jsonl").open("a") as handle:
        handle.write(line(train("crashed", 2))[:40])  # the crash cut the last line short
    write_run(runs_dir, "nan", later([train("nan", 0), train("nan", 1, loss=math.nan)], 2_000))
    (runs_dir / "not-a-run").mkdir()
    (runs_dir / ".hidden").mkdir()
    client = await make_client()
    answer = await (await client.get("/api/runs")).json()
    runs = {r["run_id"]: r for r in answer["runs"]}
    assert [r["run_id"] for r in answer["runs"]] == ["nan", "crashed", "old"]  # newest first
    assert runs["old"]["state"] == "finished" and runs["old"]["max_steps"] == 1
    assert runs["old"]["run_dir"] == str(runs_dir / "old")
    assert runs["crashed"]["state"] == "crashed" and runs["crashed"]["step"] == 1
    assert runs["crashed"]["last_loss"] == 3.0 and runs["crashed"]["tokens_seen"] == 1024
    assert runs["nan"]["last_loss"] is None and runs["nan"]["live"] is False
    records = (await (await client.get("/api/runs/nan/metrics")).json())["records"]
    assert records[1]["loss"] is None  # JSON has no NaN: the browser gets null (the series has the marker)
    # a new run appears and an old one grows: the next GET sees both, reading only what is new
    write_run(runs_dir, "newer", [state("newer", 0, "started")])
    write_run(runs_dir, "crashed", later([train("crashed", 3), state("crashed", 4, "stopped", 3)], 1_000))
    runs = {r["run_id"]: r for r in (await (await client.get("/api/runs")).json())["runs"]}
    assert runs["newer"]["state"] == "crashed" and runs["crashed"]["state"] == "stopped"
    assert [r["seq"] for r in (await (await client.get("/api/runs/crashed/metrics")).json())["records"]] == [
        0,
        1,
        3,
        4,
    ]


async def test_state_follows_the_trainer_and_its_control_records(make_client: MakeClient) -> None:
    client = await make_client()

    async def state_of(run_id: str) -> str:
        runs = (await (await client.get("/api/runs")).json())["runs"]
        return next(r["state"] for r in runs if r["run_id"] == run_id)

    trainer, _ = await connect_trainer(client, "r1")
    browser = await client.ws_connect("/ws/dashboard?run=r1")
    assert (await browser.receive_json(timeout=5))["live"] is True  # hello
    steps = [
        (state("r1", 0, "started"), "running"),
        (
            ControlEvent(
                run_id="r1", seq=1, time=1.0, command_id="c", action="pause", status="applied", step=0
            ),
            "paused",
        ),
        (state("r1", 2, "unpaused"), "running"),
        (
            ControlEvent(
                run_id="r1", seq=3, time=1.0, command_id="d", action="save", status="applied", step=0
            ),
            "saving",
        ),
        (state("r1", 4, "checkpoint_saved"), "running"),
        (state("r1", 5, "paused"), "paused"),
    ]
    before = "running"
    for event, expected in steps:
        await trainer.send_str(event_message(event))
        assert (await browser.receive_json(timeout=5))["kind"] == "records"
        if expected != before:  # the page hears of each change as it happens
            message = await browser.receive_json(timeout=5)
            assert (message["kind"], message["run"]["state"]) == ("run", expected)
        assert await state_of("r1") == expected, event
        before = expected
    await trainer.close()
    message = await browser.receive_json(timeout=5)
    assert message["run"]["live"] is False and message["run"]["state"] == "crashed"


async def test_a_restarted_sidecar_serves_the_whole_history(make_client: MakeClient, runs_dir: Path) -> None:
    """The trainer appends to metrics.jsonl, then sends; a new sidecar over the same folder has it all."""
    run_dir = runs_dir / "r1"
    first = await make_client(epoch="first")
    trainer, last_seq = await connect_trainer(first, "r1", run_dir=str(run_dir))
    assert last_seq == -1
    for seq in range(20):
        event = train("r1", seq)
        write_run(runs_dir, "r1", [event])
        await trainer.send_str(event_message(event))
    browser = await first.ws_connect("/ws/dashboard?run=r1")
    await receive_seqs(browser, 20)
    await first.close()  # the sidecar goes away
    write_run(runs_dir, "r1", [train("r1", seq) for seq in range(20, 25)])  # the run went on meanwhile

    second = await make_client(epoch="second")
    records = (await (await second.get("/api/runs/r1/metrics")).json())["records"]
    assert [r["seq"] for r in records] == list(range(25))
    browser = await second.ws_connect("/ws/dashboard?run=r1&since=19&epoch=first")
    assert [(await browser.receive_json(timeout=5))["kind"] for _ in range(2)] == ["hello", "reset"]
    assert await receive_seqs(browser, 25) == list(range(25))
    trainer, last_seq = await connect_trainer(second, "r1", run_dir=str(run_dir))
    assert last_seq == 24  # the reporter sends from 25 on
    await trainer.send_str(event_message(train("r1", 25)))
    assert await receive_seqs(browser, 1) == [25]


async def test_resumed_run_replaces_the_abandoned_steps_in_the_series(
    make_client: MakeClient, runs_dir: Path
) -> None:
    events: list[Event] = [train("r1", s, loss=5.0) for s in range(10)]  # crashed after step 9
    events += [state("r1", 10, "resumed", 6)] + [train("r1", 11 + i, 7 + i, loss=1.0) for i in range(5)]
    write_run(runs_dir, "r1", events)
    client = await make_client()
    view = await (await client.get("/api/runs/r1/series?key=loss")).json()
    assert [(p["x"], p["last"]) for p in view["points"]] == [(s, 5.0) for s in range(7)] + [
        (s, 1.0) for s in range(7, 12)
    ]


async def test_series_over_http_with_markers(make_client: MakeClient, runs_dir: Path) -> None:
    events: list[Event] = [train("r1", s, loss=2.0) for s in range(10)]
    events[4] = train("r1", 4, loss=math.nan)
    events[6] = train("r1", 6, loss=math.inf)
    events[8] = train("r1", 8, skipped_steps=1, loss_scale=2.0**15, loss=2.0)
    events[9] = train("r1", 9, skipped_steps=1, loss_scale=2.0**15, loss=2.0)
    events.append(EvalEvent(run_id="r1", seq=10, time=2_000.0, step=9, val_loss=2.2, val_bpb=1.1))
    write_run(runs_dir, "r1", events)
    client = await make_client()
    view = await (await client.get("/api/runs/r1/series?key=loss&smoothing=0.6")).json()
    assert view["raw"] is True and view["count"] == 8
    assert [p["x"] for p in view["points"]] == [0, 1, 2, 3, 5, 7, 8, 9]
    assert {p["smoothed"] for p in view["points"]} == {2.0}
    assert view["markers"] == [{"x": 4, "kind": "nan"}, {"x": 6, "kind": "inf"}]
    scale = await (await client.get("/api/runs/r1/series?key=loss_scale")).json()
    assert scale["markers"] == [{"x": 8, "kind": "skipped", "count": 1}]
    val = await (await client.get("/api/runs/r1/series?key=val_loss&x=tokens_seen")).json()
    assert [(p["x"], p["last"]) for p in val["points"]] == [(9 * 1024, 2.2)]


async def test_a_non_finite_number_written_as_null_is_read_as_nan(
    make_client: MakeClient, runs_dir: Path
) -> None:
    """pydantic's JSON has null for NaN and ±Inf (the trainer's JsonlSink and reporter write it so); the
    schema reads such a null back as NaN: the record is kept, and its value is a marker."""
    run_dir = runs_dir / "r1"
    run_dir.mkdir()
    lines = [train("r1", 0), train("r1", 1, loss=math.nan), train("r1", 2, grad_norm=None)]
    lines.append(train("r1", 3).model_copy(update={"time": math.nan}))  # a clock gone wrong
    (run_dir / "metrics.jsonl").write_text("".join(e.model_dump_json() + "\n" for e in lines))
    client = await make_client()
    trainer, last_seq = await connect_trainer(client, "r1")
    assert last_seq == 3
    await trainer.send_str(f'{{"kind": "event", "event": {train("r1", 4, loss=math.inf).model_dump_json()}}}')
    browser = await client.ws_connect("/ws/dashboard?run=r1&since=3")
    assert await receive_seqs(browser, 1) == [4]
    loss = await (await client.get("/api/runs/r1/series?key=loss")).json()
    assert [p["x"] for p in loss["points"]] == [0, 2, 3]
    assert loss["markers"] == [{"x": 1, "kind": "nan"}, {"x": 4, "kind": "nan"}]  # Inf became null: NaN
    grad = await (await client.get("/api/runs/r1/series?key=grad_norm")).json()
    assert [p["x"] for p in grad["points"]] == [0, 1, 3, 4] and grad["markers"] == []  # None: unknown
    by_time = await (await client.get("/api/runs/r1/series?key=loss&x=time")).json()
    assert [p["x"] for p in by_time["points"]] == [1_000.0, 1_002.0]  # no time, no place on this axis
    assert by_time["x_max"] == 1_004.0
    await trainer.send_str(event_message(state("r1", 5, "paused").model_copy(update={"time": math.nan})))
    await receive_seqs(browser, 1)
    (run,) = (await (await client.get("/api/runs")).json(loads=strict_json))["runs"]
    assert (run["started"], run["updated"]) == (1_000.0, 1_004.0)


# --- static files


async def test_static_dashboard_and_the_page_shown_when_it_is_not_built(
    make_client: MakeClient, tmp_path: Path
) -> None:
    unbuilt = await make_client(dist=None)
    page = await unbuilt.get("/")
    assert page.status == 200 and "make dashboard" in await page.text()
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>dash</title>")
    (dist / "assets" / "app.js").write_text("console.log(1)")
    built = await make_client(dist=dist)
    assert await (await built.get("/")).text() == "<!doctype html><title>dash</title>"
    assert await (await built.get("/assets/app.js")).text() == "console.log(1)"
    assert (await built.get("/assets/../../secret")).status in (403, 404)
    assert (await built.get("/api/runs")).status == 200  # routes still win over static paths
