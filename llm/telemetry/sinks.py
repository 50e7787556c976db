"""Where rank 0's metric events go: the durable JSONL file first, then the console and monitors."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from llm.telemetry.schema import EvalEvent, Event, RunStateEvent, TrainEvent, parse_event


class Sink(Protocol):
    def write(self, event: Event) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object a line to RUN_DIR/metrics.jsonl, flushed at once (the durable record)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        cut_short = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        self._file = path.open("a", encoding="utf-8")
        if cut_short:  # a crash mid-line: end that line, so the next record stands on its own
            self._file.write("\n")

    def write(self, event: Event) -> None:
        self._file.write(event.model_dump_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def last_seq(path: Path) -> int:
    """The highest `seq` already in a metrics file (-1 when there is none), so a resumed run continues it."""
    if not path.exists():
        return -1
    seq = -1
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                seq = max(seq, parse_event(line).seq)
            except ValueError:
                continue  # a line cut short by a crash
    return seq


class ProgressBar:
    """A tqdm bar on rank 0: step, loss, tokens/s and ETA."""

    def __init__(self, *, start_step: int, max_steps: int, enabled: bool) -> None:
        self._bar = tqdm(
            total=max_steps, initial=start_step, disable=not enabled, unit="step", dynamic_ncols=True
        )
        self._step = start_step

    def write(self, event: Event) -> None:
        if isinstance(event, TrainEvent):
            self._bar.update(event.step - self._step)
            self._step = event.step
            self._bar.set_postfix(
                loss=f"{event.loss:.4f}", tok_s=f"{event.tokens_per_s:,.0f}", mfu=f"{event.mfu:.1%}"
            )
        elif isinstance(event, EvalEvent):
            self._bar.write(
                f"step {event.step}: val loss {event.val_loss:.4f}, {event.val_bpb:.3f} bits/byte"
            )
        elif isinstance(event, RunStateEvent):
            self._bar.write(f"step {event.step}: {event.state} {event.detail}".rstrip())

    def close(self) -> None:
        self._bar.close()


class MonitorSink:
    """Feeds DeepSpeed's own monitors (tensorboard, wandb, csv_monitor sections of the JSON)."""

    def __init__(self, write_events: Callable[[list[tuple[str, float, int]]], Any]) -> None:
        self._write_events = write_events

    def write(self, event: Event) -> None:
        if not isinstance(event, TrainEvent | EvalEvent):
            return
        values = event.model_dump(exclude={"run_id", "seq", "time", "type", "step"})
        group = "Train" if isinstance(event, TrainEvent) else "Eval"
        self._write_events(
            [(f"{group}/{k}", float(v), event.step) for k, v in values.items() if isinstance(v, int | float)]
        )

    def close(self) -> None:
        pass


class EventLog:
    """Stamps events with run_id, seq and time, and hands them to each sink, the JSONL file first."""

    def __init__(self, run_id: str, sinks: Sequence[Sink], *, first_seq: int = 0) -> None:
        self.run_id = run_id
        self._sinks = list(sinks)
        self._seq = first_seq

    def emit(self, kind: type[Event], **fields: Any) -> Event:
        event = kind(run_id=self.run_id, seq=self._seq, time=time.time(), **fields)
        self._seq += 1
        for sink in self._sinks:
            sink.write(event)
        return event

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
