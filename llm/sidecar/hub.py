"""Fan-out to browsers: one bounded queue and one sender task each, so a slow browser stalls only itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from llm.sidecar.history import RunHistory

log = logging.getLogger("llm.sidecar")

QUEUE_SIZE = 10_000  # messages waiting for one browser; a browser this far behind is disconnected
REPLAY_CHUNK = 1_000  # records per message when replaying history
LIVE_BATCH = 500  # at most this many queued records go out in one message
# A live record that finds no other queued waits this long for company, so that at 1,000 records/s
# ~5 share a frame: less work per record for the sidecar and the browsers. On this busy 2-core machine
# (benchmarks/sidecar.py, 6 s runs alternated, load 3.5-4.9) p99 went from 125 and 384 ms to 33 and 25.
BATCH_S = 0.005
SLOW_CLOSE_CODE = 1013  # "try again later": the page reconnects and resumes from its last seq


def records_message(epoch: str, texts: list[str]) -> str:
    """`{"kind": "records", ...}` built from records already in JSON, without parsing them again."""
    return f'{{"kind":"records","epoch":{json.dumps(epoch)},"records":[{",".join(texts)}]}}'


class Browser:
    """One browser socket: what it is watching, its queue, and the task that drains it."""

    def __init__(
        self, ws: web.WebSocketResponse, run_id: str | None, *, epoch: str, queue_size: int, batch_s: float
    ) -> None:
        self.ws = ws
        self.run_id = run_id
        self.epoch = epoch
        self.batch_s = batch_s
        self.queue: asyncio.Queue[tuple[bool, str]] = asyncio.Queue(queue_size)  # (is a record, JSON)
        self.sender: asyncio.Task[None] | None = None

    def offer(self, *, record: bool, text: str) -> bool:
        try:
            self.queue.put_nowait((record, text))
        except asyncio.QueueFull:
            return False
        return True

    def start(self, first: list[str], replay: list[str]) -> None:
        self.sender = asyncio.create_task(self._send_all(first, replay))

    def close_slow(self) -> asyncio.Task[bool]:
        if self.sender is not None:
            self.sender.cancel()
        return asyncio.ensure_future(
            self.ws.close(code=SLOW_CLOSE_CODE, message=b"too far behind: reconnect and resume")
        )

    async def _send_all(self, first: list[str], replay: list[str]) -> None:
        try:
            for text in first:
                await self.ws.send_str(text)
            for i in range(0, len(replay), REPLAY_CHUNK):
                await self.ws.send_str(records_message(self.epoch, replay[i : i + REPLAY_CHUNK]))
            while True:
                await self._send_next()
        except (ConnectionError, RuntimeError) as err:  # the socket went away under us
            log.debug("browser socket: %s", err)
            await self.ws.close()

    async def _send_next(self) -> None:
        record, text = await self.queue.get()
        if not record:
            await self.ws.send_str(text)
            return
        if self.batch_s > 0 and self.queue.empty():  # alone so far: wait a moment for company
            await asyncio.sleep(self.batch_s)
        batch, after = [text], None
        while len(batch) < LIVE_BATCH:
            try:
                record, text = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if not record:
                after = text
                break
            batch.append(text)
        await self.ws.send_str(records_message(self.epoch, batch))
        if after is not None:
            await self.ws.send_str(after)


class Hub:
    """The sockets of the moment: browsers by the run they watch, and each live run's trainer."""

    def __init__(self, *, epoch: str, queue_size: int = QUEUE_SIZE, batch_s: float = BATCH_S) -> None:
        self.epoch = epoch
        self.queue_size = queue_size
        self.batch_s = batch_s
        self.browsers: set[Browser] = set()
        self._watching: dict[str, set[Browser]] = {}
        self.trainers: dict[str, web.WebSocketResponse] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, future: Awaitable[Any]) -> None:
        """Run a closing handshake in the background, holding it until done (errors only logged)."""
        task = asyncio.ensure_future(future)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("closing a socket: %s", task.exception())

    def message(self, kind: str, **fields: Any) -> str:
        return json.dumps({"kind": kind, "epoch": self.epoch, **fields})

    def subscribe(self, browser: Browser) -> None:
        self.browsers.add(browser)
        if browser.run_id is not None:
            self._watching.setdefault(browser.run_id, set()).add(browser)

    def unsubscribe(self, browser: Browser) -> None:
        self.browsers.discard(browser)
        watchers = self._watching.get(browser.run_id or "")
        if watchers is not None:
            watchers.discard(browser)
            if not watchers:
                del self._watching[browser.run_id or ""]

    def publish_records(self, run: RunHistory, texts: list[str]) -> None:
        for browser in list(self._watching.get(run.run_id, ())):
            for text in texts:
                if not browser.offer(record=True, text=text):
                    self._drop(browser)
                    break

    def publish_run(self, run: RunHistory) -> None:
        """A run's summary changed (state, live): every browser hears it, so run lists stay current."""
        text = self.message("run", run=run.info())
        for browser in list(self.browsers):
            if not browser.offer(record=False, text=text):
                self._drop(browser)

    def reply(self, browser: Browser, text: str) -> None:
        if not browser.offer(record=False, text=text):
            self._drop(browser)

    def _drop(self, browser: Browser) -> None:
        behind = browser.queue.qsize()
        log.warning("browser socket for run %s: %d messages behind, disconnected", browser.run_id, behind)
        self.unsubscribe(browser)
        self.spawn(browser.close_slow())

    async def close_all(self) -> None:
        """On shutdown: say goodbye to every socket (browsers reconnect to the next sidecar)."""
        sockets = [b.ws for b in self.browsers] + list(self.trainers.values())
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"sidecar shutting down")
