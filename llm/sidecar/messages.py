"""What the sidecar accepts from a trainer and from the control API: validated, and bounded in size."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from llm.telemetry.schema import ControlAction, MetricEvent

MAX_MESSAGE = 64 * 1024  # bytes: a larger message from a browser is refused
# the trainer (token-authenticated) sends larger records: a `params` record lists every parameter
# tensor (~190 bytes each: ~110 KB for GPT-2 XL's 580); a larger one is dropped, the socket stays open
MAX_TRAINER_MESSAGE = 2 * 1024 * 1024
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


def too_large(text: str, limit: int = MAX_MESSAGE) -> bool:
    """Over `limit` bytes as UTF-8 (encoded only when the character count cannot tell)."""
    return len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit)


def reason(err: ValidationError) -> str:
    """The first problem of a validation error, in one short line."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]
