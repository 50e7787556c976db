"""The metric event contract between the trainer, the sidecar and the dashboard.

Every record carries `run_id`, a monotonically increasing `seq` and a timestamp `time` (Unix seconds).
Rank 0 appends each one to RUN_DIR/metrics.jsonl before it goes anywhere else.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    seq: int = Field(ge=0, description="position in the run's event stream, increasing by one")
    time: float = Field(description="Unix time in seconds when the event was made")


class TrainEvent(_Event):
    type: Literal["train"] = "train"
    step: int = Field(ge=0, description="optimizer steps completed")
    tokens_seen: int = Field(ge=0, description="training tokens consumed so far, all ranks")
    loss: float = Field(description="mean training loss of this step (nats/token), all ranks")
    lr: float
    grad_norm: float | None = Field(description="global gradient norm before clipping (None: unknown)")
    loss_scale: float = Field(description="fp16 dynamic loss scale; 1.0 in fp32/bf16")
    skipped_steps: int = Field(ge=0, description="optimizer steps skipped for fp16 overflow so far")
    step_time: float = Field(ge=0, description="mean seconds per optimizer step since the last record")
    tokens_per_s: float = Field(ge=0)
    tflops: float = Field(ge=0, description="achieved model TFLOP/s, all ranks")
    mfu: float = Field(ge=0, description="model FLOPs utilisation against the hardware peak, 0..1")
    memory_gb: float | None = Field(description="peak accelerator memory of rank 0 in GB (None on CPU)")


class EvalEvent(_Event):
    type: Literal["eval"] = "eval"
    step: int = Field(ge=0)
    val_loss: float = Field(description="mean validation loss (nats/token)")
    val_bpb: float = Field(description="validation bits per byte of text")


class RunStateEvent(_Event):
    type: Literal["run_state"] = "run_state"
    state: Literal["started", "resumed", "checkpoint_saved", "finished", "stopped"]
    step: int = Field(ge=0)
    detail: str = ""


MetricEvent = Annotated[TrainEvent | EvalEvent | RunStateEvent, Field(discriminator="type")]
METRIC_EVENT = TypeAdapter(MetricEvent)


def parse_event(line: str) -> TrainEvent | EvalEvent | RunStateEvent:
    """Parse one JSONL line into its event type (raises pydantic.ValidationError if malformed)."""
    return METRIC_EVENT.validate_json(line)
