"""Rank 0's reporter: relays each record to the dashboard's sidecar and brings its commands back.

A background thread with its own asyncio loop holds a WebSocket to `/ws/trainer` (docs/dashboard.md).
The training loop only puts records on a bounded queue and takes commands off another, never waiting
on the network: a sidecar that is down, slow or gone costs the loop nothing, and nothing is lost,
because every record is in metrics.jsonl first. After each (re)connection the sidecar says the last
`seq` it holds, and the reporter sends what it missed from that file before the live records; when the
queue overflows, the reporter drops it and catches up from the file the same way.

No torch here: the sidecar's tests use this module as a real trainer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import random
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import websockets
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm.telemetry.schema import ControlAction, Event, parse_event

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000  # records waiting to be sent; beyond that the reporter catches up from the file
MAX_MESSAGE = 64 * 1024  # bytes, as the sidecar accepts
BACKOFF_S = (0.5, 10.0)  # first and longest wait between connection attempts (doubling, with jitter)


class Command(BaseModel):
    """A dashboard command as the sidecar sends it down the trainer socket."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: str = Field(pattern="^control$")
    id: str = Field(min_length=1, max_length=100)
    action: ControlAction
    lr_scale: float | None = Field(None, gt=0, le=1000)


def trainer_url(base: str) -> str:
    """`http://host:port[/]` (or ws://) -> `ws://host:port/ws/trainer`."""
    base = base.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base.removeprefix(http)
    if not base.startswith(("ws://", "wss://")):
        base = "ws://" + base
    return base if base.endswith("/ws/trainer") else base + "/ws/trainer"


def records_after(path: Path, seq: int) -> Iterator[str]:
    """JSON lines of metrics.jsonl with `seq` above `seq`, in file order (lines cut short skipped)."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                if parse_event(line).seq > seq:
                    yield line
            except ValueError:
                continue


class ReporterSink:
    """A `Sink` (llm.telemetry.sinks) on rank 0; `commands()` returns what the dashboard asked for."""

    def __init__(self, url: str, *, token: str, hello: dict[str, Any], metrics: Path) -> None:
        self.url = trainer_url(url)
        self._token = token
        self._hello = {"kind": "hello", **hello}
        self._metrics = metrics
        self._outbox: queue.Queue[str] = queue.Queue(maxsize=QUEUE_SIZE)
        self._inbox: queue.Queue[Command] = queue.Queue()
        self._overflowed = threading.Event()
        self._closing = threading.Event()
        self.connected = threading.Event()
        self._warned = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)
        self._thread.start()

    # --- the training loop's side: never blocks

    def write(self, event: Event) -> None:
        try:
            self._outbox.put_nowait(event.model_dump_json())
        except queue.Full:
            self._overflowed.set()  # the sender drops the queue and reads the file instead

    def commands(self) -> list[Command]:
        out = []
        while True:
            try:
                out.append(self._inbox.get_nowait())
            except queue.Empty:
                return out

    def close(self, *, timeout_s: float = 5.0) -> None:
        """Send what is queued (for up to `timeout_s` when connected), then stop the thread."""
        self._closing.set()
        self._thread.join(timeout=timeout_s if self.connected.is_set() else 0.5)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop_loop)
            self._thread.join(timeout=1.0)

    # --- the reporter thread

    def _stop_loop(self) -> None:
        for task in asyncio.all_tasks(self._loop):
            task.cancel()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._connect_forever())
        except (asyncio.CancelledError, RuntimeError):
            pass
        finally:
            self._loop.close()

    async def _connect_forever(self) -> None:
        delay = BACKOFF_S[0]
        while not (self._closing.is_set() and self._outbox.empty()):
            try:
                async with websockets.connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self._token}"},
                    max_size=MAX_MESSAGE,
                    open_timeout=5,
                ) as socket:
                    delay = BACKOFF_S[0]
                    await self._session(socket)
                    return  # closing, and everything queued was sent
            except websockets.InvalidStatus as err:
                self.connected.clear()
                if err.response.status_code in (401, 403) and not self._warned:
                    self._warned = True
                    print(
                        f"warning: the dashboard at {self.url} refused this run's token (HTTP "
                        f"{err.response.status_code}); set LLM_DASHBOARD_TOKEN to the one in its URL. "
                        "Training goes on; metrics.jsonl has everything",
                        file=sys.stderr,
                        flush=True,
                    )
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError) as err:
                self.connected.clear()
                log.debug("reporter: %s unreachable (%s); retrying in %.1f s", self.url, err, delay)
            if self._closing.is_set():
                return  # the run is over and the sidecar is away: metrics.jsonl has everything
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, BACKOFF_S[1])

    async def _session(self, socket: Any) -> None:
        await socket.send(json.dumps(self._hello))
        welcome = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
        last_sent = int(welcome.get("last_seq", -1)) if isinstance(welcome, dict) else -1
        self.connected.set()
        receiver = asyncio.ensure_future(self._receive(socket))
        try:
            last_sent = await self._catch_up(socket, last_sent)
            while True:
                if self._overflowed.is_set():
                    self._drain_outbox()
                    self._overflowed.clear()
                    last_sent = await self._catch_up(socket, last_sent)
                try:
                    line = self._outbox.get_nowait()
                except queue.Empty:
                    if self._closing.is_set():
                        return
                    await asyncio.sleep(0.02)
                    continue
                seq = json.loads(line)["seq"]
                if seq > last_sent:
                    await socket.send(f'{{"kind": "event", "event": {line}}}')
                    last_sent = seq
        finally:
            receiver.cancel()

    async def _catch_up(self, socket: Any, last_sent: int) -> int:
        for line in records_after(self._metrics, last_sent):
            await socket.send(f'{{"kind": "event", "event": {line}}}')
            last_sent = json.loads(line)["seq"]
        return last_sent

    def _drain_outbox(self) -> None:
        while True:
            try:
                self._outbox.get_nowait()
            except queue.Empty:
                return

    async def _receive(self, socket: Any) -> None:
        async for message in socket:
            try:
                self._inbox.put(Command.model_validate_json(message))
            except ValidationError as err:
                log.warning("reporter: ignored a message from the sidecar (%s)", err.errors()[0]["msg"])
