"""Every run's records in memory: loaded from RUN_DIR/metrics.jsonl, extended by the trainer socket.

A run keeps each record twice: as the JSON a browser gets (non-finite numbers as null, since JSON has no
NaN) for replays, and as numeric columns of its train and eval values for the bucketed series view.
The sidecar never writes to a run directory.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic_core
from pydantic import ValidationError

from llm.telemetry.schema import EvalEvent, Event, TrainEvent, parse_event

log = logging.getLogger("llm.sidecar")

X_KEYS = ("step", "tokens_seen", "time")
_NOT_VALUES = {"run_id", "seq", "time", "type", *X_KEYS}
_NUMERIC = (int, float, int | None, float | None)


def _value_keys(model: type[TrainEvent] | type[EvalEvent]) -> tuple[tuple[str, ...], frozenset[str]]:
    """The numeric fields of a record type a series can show, and those of them that may be None."""
    fields = {
        k: f for k, f in model.model_fields.items() if k not in _NOT_VALUES and f.annotation in _NUMERIC
    }
    nullable = frozenset(k for k, f in fields.items() if f.annotation in (int | None, float | None))
    return tuple(fields), nullable


TRAIN_KEYS, _TRAIN_NULLABLE = _value_keys(TrainEvent)
EVAL_KEYS, _EVAL_NULLABLE = _value_keys(EvalEvent)


def browser_json(event: Event) -> str:
    """A record as the browser gets it: the schema's JSON, with NaN and ±Inf as null."""
    return pydantic_core.to_json(event, inf_nan_mode="null").decode()


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class Columns:
    """Numeric columns of one record type in seq order: the x axes and every value key.

    A None of a nullable field (grad_norm unknown, memory_gb on a CPU) is missing, not a marker; a None
    of any other field can only be a non-finite number that went through JSON, so it is NaN.
    """

    def __init__(self, keys: tuple[str, ...], nullable: frozenset[str]) -> None:
        self.keys = keys
        self._nullable = nullable
        self.x = {k: array("d") for k in X_KEYS}
        self.y = {k: array("d") for k in keys}
        self.missing = {k: bytearray() for k in keys}

    def __len__(self) -> int:
        return len(self.x["step"])

    def append(self, fields: Mapping[str, Any], *, tokens_seen: int) -> None:
        self.x["step"].append(fields["step"])
        self.x["tokens_seen"].append(tokens_seen)
        self.x["time"].append(fields["time"])
        for key in self.keys:
            value = fields.get(key)
            self.missing[key].append(value is None and key in self._nullable)
            self.y[key].append(math.nan if value is None else float(value))

    def truncate_after(self, step: int) -> None:
        """Drop the trailing points past `step` (a resumed run replaces them)."""
        steps = self.x["step"]
        keep = len(steps)
        while keep and steps[keep - 1] > step:
            keep -= 1
        for values in (*self.x.values(), *self.y.values()):
            del values[keep:]
        for missing in self.missing.values():
            del missing[keep:]


@dataclass
class MetricsFile:
    """Reads the complete lines a metrics.jsonl gained since the last read (by size and mtime)."""

    path: Path
    offset: int = 0  # bytes read and parsed so far
    signature: tuple[int, int, int] | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def read_new(self) -> list[tuple[int, bytes]]:
        """(byte offset, line) of each complete line added since the last read."""
        signature = self._stat()
        if signature is None or signature == self.signature:
            return []
        if self.signature is not None and (signature[0] != self.signature[0] or signature[1] < self.offset):
            self.offset = 0  # replaced or truncated: read it again (seqs already held are skipped)
        self.signature = signature
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return []
        end = data.rfind(b"\n")  # a last line without its newline is still being written: later
        if end < 0:
            return []
        lines, at = [], self.offset
        for line in data[:end].split(b"\n"):
            if line.strip():
                lines.append((at, line))
            at += len(line) + 1
        self.offset += end + 1
        return lines

    def skip_held(self, last_seq: int, *, tail_bytes: int = 1024 * 1024) -> None:
        """Start reading after the last line already held, when it is in the file's last `tail_bytes`:
        a run the trainer socket brought need not be parsed again (that would find only duplicates)."""
        signature = self._stat()
        if last_seq < 0 or signature is None or signature[1] - self.offset <= tail_bytes:
            return  # little to read: read it
        try:
            with self.path.open("rb") as handle:
                handle.seek(signature[1] - tail_bytes)
                lines = handle.read(tail_bytes).split(b"\n")
        except OSError:
            return
        end = signature[1] - len(lines[-1])  # just after the last complete line
        for line in reversed(lines[1:-1]):  # the first may be cut by the seek
            try:
                if parse_event(line).seq <= last_seq:
                    self.offset = end
                    return
            except ValueError:
                pass
            end -= len(line) + 1


@dataclass
class RunHistory:
    """One run: its records in seq order, its series columns and its summary (RUNINFO)."""

    run_id: str
    run_dir: str
    max_steps: int | None = None
    live: bool = False
    file: MetricsFile | None = None
    seqs: list[int] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    version: int = 0  # bumped whenever columns are rewritten rather than appended to

    def __post_init__(self) -> None:
        self._reset_summary()

    def _reset_summary(self) -> None:
        self.train = Columns(TRAIN_KEYS, _TRAIN_NULLABLE)
        self.eval = Columns(EVAL_KEYS, _EVAL_NULLABLE)
        self._base, self._saving = "running", False
        self._terminal: str | None = None
        self.step: int | None = None
        self.tokens_seen: int | None = None
        self.last_loss: float | None = None
        self.val_loss: float | None = None
        self.started: float | None = None
        self.updated: float | None = None

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else -1

    @property
    def state(self) -> str:
        if self._terminal is not None:
            return self._terminal
        if self.live:
            return "saving" if self._saving else self._base
        return "crashed" if self.seqs else "unknown"  # stopped reporting without a final state

    def info(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": self.run_dir,
            "state": self.state,
            "step": self.step,
            "max_steps": self.max_steps,
            "tokens_seen": self.tokens_seen,
            "last_loss": self.last_loss,
            "val_loss": self.val_loss,
            "started": self.started,
            "updated": self.updated,
            "live": self.live,
        }

    def records_after(self, seq: int) -> list[str]:
        return self.records[bisect.bisect_right(self.seqs, seq) :]

    def add(self, event: Event) -> str | None:
        """Keep a record; return its browser JSON, or None when this seq is held already."""
        seq = event.seq
        if self.seqs and seq <= self.seqs[-1]:
            i = bisect.bisect_left(self.seqs, seq)
            if i < len(self.seqs) and self.seqs[i] == seq:
                return None
            text = browser_json(event)  # a hole filled late: rare, so rebuild rather than patch
            self.seqs.insert(i, seq)
            self.records.insert(i, text)
            self._rebuild()
            return text
        text = browser_json(event)
        self.seqs.append(seq)
        self.records.append(text)
        self._ingest(event.__dict__)
        return text

    def _rebuild(self) -> None:
        self._reset_summary()
        for text in self.records:
            self._ingest(json.loads(text))
        self.version += 1

    def _ingest(self, fields: Mapping[str, Any]) -> None:
        kind = fields["type"]
        if math.isfinite(fields["time"]):  # a NaN time (null in the JSON) says nothing of when
            if self.started is None:
                self.started = fields["time"]
            self.updated = fields["time"]
        self.step = fields["step"]
        if kind == "train":
            self.tokens_seen = fields["tokens_seen"]
            self.last_loss = _finite_or_none(fields["loss"])
            self.train.append(fields, tokens_seen=fields["tokens_seen"])
        elif kind == "eval":
            self.val_loss = _finite_or_none(fields["val_loss"])
            self.eval.append(fields, tokens_seen=self.tokens_seen or 0)
        elif kind == "run_state":
            self._apply_state(fields["state"], fields["step"])
        elif kind == "control" and fields["status"] == "applied":
            self._apply_control(fields["action"])

    def _apply_state(self, state: str, step: int) -> None:
        if state in ("started", "resumed"):
            self._base, self._saving, self._terminal = "running", False, None
            if state == "resumed":  # the points logged past the checkpoint belong to an abandoned branch
                self.train.truncate_after(step)
                self.eval.truncate_after(step)
                self.version += 1
        elif state == "unpaused":
            self._base = "running"
        elif state == "paused":
            self._base = "paused"
        elif state == "checkpoint_saved":
            self._saving = False
        elif state in ("finished", "stopped"):
            self._terminal, self._saving = state, False

    def _apply_control(self, action: str) -> None:
        if action == "pause":
            self._base = "paused"
        elif action == "resume":
            self._base = "running"
        elif action in ("save", "stop"):
            self._saving = True  # until the checkpoint_saved record


def _max_steps(run_dir: Path) -> int | None:
    """max_steps from the run's run.json (its settings), if it is there."""
    try:
        value = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["settings"]["max_steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) else None


class HistoryStore:
    """All runs under runs_dir (each folder with a metrics.jsonl) plus those a trainer announced."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self.runs: dict[str, RunHistory] = {}
        self.on_records: Callable[[RunHistory, list[str]], None] = lambda run, texts: None
        self.on_run: Callable[[RunHistory], None] = lambda run: None

    def scan(self) -> None:
        """Pick up new run folders, and new lines of every run no trainer is streaming right now."""
        try:
            folders = [d for d in self.runs_dir.iterdir() if not d.name.startswith(".")]
        except OSError:
            folders = []
        for folder in folders:
            if folder.name not in self.runs and (folder / "metrics.jsonl").is_file():
                self.runs[folder.name] = RunHistory(
                    folder.name, str(folder), _max_steps(folder), file=MetricsFile(folder / "metrics.jsonl")
                )
        for run in list(self.runs.values()):
            if not run.live:
                self.refresh(run)

    def refresh(self, run: RunHistory) -> None:
        """Read what the run's metrics.jsonl gained; a line cut short by a crash is skipped."""
        if run.file is None:
            return
        if run.max_steps is None:
            run.max_steps = _max_steps(run.file.path.parent)
        events, bad = [], []
        run.file.skip_held(run.last_seq)
        for at, line in run.file.read_new():
            try:
                events.append(parse_event(line))
            except ValidationError as err:
                bad.append((at, err.errors()[0]["msg"]))
        if bad:
            at, reason = bad[0]
            log.warning(
                "%s: skipped %d line(s) that are not records (the first at byte %d: %s)",
                *(run.file.path, len(bad), at, reason),
            )
        self.add(run, events)

    def add(self, run: RunHistory, events: Iterable[Event]) -> None:
        """Keep new records and tell the listeners (records, and the summary when the state moved)."""
        state = run.state
        texts = [text for event in events if (text := run.add(event)) is not None]
        if texts:
            self.on_records(run, texts)
        if run.state != state:
            self.on_run(run)

    def open_run(self, run_id: str, *, run_dir: str, max_steps: int | None) -> RunHistory:
        """The run a trainer announced: known, in runs_dir, or new (then its records come by socket)."""
        run = self.runs.get(run_id)
        if run is None:
            folder = self.runs_dir / run_id
            file = MetricsFile(folder / "metrics.jsonl") if (folder / "metrics.jsonl").is_file() else None
            run = self.runs[run_id] = RunHistory(run_id, run_dir, max_steps, file=file)
        if max_steps is not None:
            run.max_steps = max_steps
        self.refresh(run)
        return run

    def infos(self) -> list[dict[str, Any]]:
        """Every run's summary, newest first."""
        runs = sorted(self.runs.values(), key=lambda r: (r.started or 0.0, r.run_id), reverse=True)
        return [run.info() for run in runs]
