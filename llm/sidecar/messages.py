"""What the sidecar accepts from a trainer and from the control API: validated, and bounded in size."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from llm.telemetry.schema import (
    METRIC_EVENT,
    ControlAction,
    EvalEvent,
    Event,
    MetricEvent,
    TrainEvent,
    parse_event,
)

MAX_MESSAGE = 64 * 1024  # bytes: a larger inbound message is dropped (the socket stays open)
# a run id names a folder and a URL path segment: no slashes or control characters, no leading dot
RUN_ID_PATTERN = r"^[^./\\\x00-\x1f][^/\\\x00-\x1f]{0,199}$"


class TrainerHello(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["hello"]
    run_id: str = Field(pattern=RUN_ID_PATTERN)
    run_dir: str = Field(max_length=4096)
    max_steps: int | None = Field(None, ge=0)
    world_size: int | None = Field(None, ge=1)


class TrainerEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["event"]
    event: MetricEvent


TRAINER_MESSAGE: TypeAdapter[TrainerHello | TrainerEvent] = TypeAdapter(
    Annotated[TrainerHello | TrainerEvent, Field(discriminator="kind")]
)


class ControlRequest(BaseModel):
    """The body of POST /api/runs/ID/control."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    action: ControlAction
    lr_scale: float | None = Field(None, gt=0, le=1000, description="set_lr: multiplier on the schedule")

    @model_validator(mode="after")
    def _lr_scale_with_set_lr(self) -> ControlRequest:
        if (self.action == "set_lr") != (self.lr_scale is not None):
            raise ValueError("lr_scale is required with set_lr, and only there")
        return self


# pydantic writes a NaN or ±Inf float as null, which the schema then refuses to read back: a null in one
# of these fields (never None by the schema) can only have been such a number
_NUMBERS_NEVER_NULL = {
    model.model_fields["type"].default: frozenset(
        k for k, f in model.model_fields.items() if f.annotation is float and k != "time"
    )
    for model in (TrainEvent, EvalEvent)
}


def parse_record(text: str | bytes) -> Event:
    """A record from metrics.jsonl; a null where the schema has a number is read as NaN."""
    try:
        return parse_event(text)
    except ValidationError:
        event = _with_nan(_json(text))
        if event is None:
            raise
        return event


def parse_trainer_message(text: str) -> TrainerHello | TrainerEvent:
    """A message on the trainer socket; in a record, a null where the schema has a number is NaN."""
    try:
        return TRAINER_MESSAGE.validate_json(text)
    except ValidationError:
        message = _json(text)
        is_event = (
            isinstance(message, dict) and message.keys() == {"kind", "event"} and message["kind"] == "event"
        )
        event = _with_nan(message["event"]) if is_event else None
        if event is None:
            raise
        return TrainerEvent(kind="event", event=event)


def _json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _with_nan(fields: Any) -> Event | None:
    numbers = _NUMBERS_NEVER_NULL.get(fields.get("type")) if isinstance(fields, dict) else None
    if not numbers or not any(k in fields and fields[k] is None for k in numbers):
        return None
    try:
        return METRIC_EVENT.validate_python(
            {k: math.nan if k in numbers and v is None else v for k, v in fields.items()}
        )
    except ValidationError:
        return None


def too_large(text: str) -> bool:
    return len(text) > MAX_MESSAGE or (len(text) * 4 > MAX_MESSAGE and len(text.encode()) > MAX_MESSAGE)


def reason(err: ValidationError) -> str:
    """The first problem of a validation error, in one short line."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]
