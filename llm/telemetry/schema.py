"""The metric event contract between the trainer, the sidecar and the dashboard.

Every record carries `run_id`, a monotonically increasing `seq` and a timestamp `time` (Unix seconds).
Rank 0 appends each one to RUN_DIR/metrics.jsonl before it goes anywhere else.

`python -m llm.telemetry.schema` prints the JSON Schema of a record; the dashboard's TypeScript types
(dashboard/src/types/schema.ts) are generated from it, and a test fails if the two drift apart.
No torch here: the sidecar imports this module.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    seq: int = Field(ge=0, description="position in the run's event stream, increasing by one")
    time: float = Field(description="Unix time in seconds when the event was made")

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_finite(cls, data: Any) -> Any:
        """JSON has no NaN or Infinity: pydantic writes them as null. A plain float field that reads
        null had one (a diverged loss), so it reads back as NaN rather than failing the whole record."""
        if isinstance(data, dict):
            nulls = [
                n
                for n, f in cls.model_fields.items()
                if f.annotation is float and n in data and data[n] is None
            ]
            if nulls:
                data = {**data, **dict.fromkeys(nulls, math.nan)}
        return data


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


RunState = Literal["started", "resumed", "paused", "unpaused", "checkpoint_saved", "finished", "stopped"]


class RunStateEvent(_Event):
    type: Literal["run_state"] = "run_state"
    state: RunState
    step: int = Field(ge=0)
    detail: str = ""


class DeviceStats(BaseModel):
    """One device's load: a GPU (from NVML), or where there is none the CPU share of one rank (psutil)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node: str = Field(description="host name")
    rank: int = Field(ge=0, description="global rank reporting it")
    kind: Literal["gpu", "cpu"]
    index: int = Field(ge=0, description="GPU index on its node, or the rank's local rank on a CPU")
    name: str = Field(description="GPU model, or the CPU model")
    utilization: float | None = Field(description="percent busy, 0..100 (a rank's process: of all cores)")
    memory_used_gb: float | None = Field(description="GPU memory in use, or the rank's resident memory")
    memory_total_gb: float | None = Field(description="GPU memory, or the node's RAM")
    temperature_c: float | None = None
    power_w: float | None = None


class SystemEvent(_Event):
    type: Literal["system"] = "system"
    step: int = Field(ge=0)
    devices: list[DeviceStats] = Field(description="every rank's device, rank order")


class LayerStats(BaseModel):
    """Norms of one parameter tensor, from every rank's partition (sums of squares, reduced)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="parameter name, e.g. blocks.0.attn.c_attn.weight")
    numel: int = Field(ge=0)
    weight_norm: float
    grad_norm: float | None = Field(description="before clipping; None where the gradient is gone")
    update_ratio: float | None = Field(
        description="‖w_after − w_before‖ / ‖w_before‖ over the optimizer step; None while w_before = 0"
    )


class Histogram(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    edges: list[float] = Field(description="bin edges, one more than counts")
    counts: list[int]


class ParamsEvent(_Event):
    type: Literal["params"] = "params"
    step: int = Field(ge=0)
    layers: list[LayerStats]
    histogram: Histogram | None = None


ControlAction = Literal["pause", "resume", "save", "stop", "set_lr"]


class ControlEvent(_Event):
    """A dashboard command, acknowledged by rank 0 with the step after which every rank applied it."""

    type: Literal["control"] = "control"
    command_id: str
    action: ControlAction
    status: Literal["applied", "rejected"]
    step: int = Field(ge=0, description="optimizer steps completed when every rank applied it")
    lr_scale: float | None = Field(None, description="set_lr: the multiplier on the JSON's schedule")
    detail: str = ""


Event = TrainEvent | EvalEvent | RunStateEvent | SystemEvent | ParamsEvent | ControlEvent
MetricEvent = Annotated[Event, Field(discriminator="type")]
METRIC_EVENT: TypeAdapter[Event] = TypeAdapter(MetricEvent)


def parse_event(line: str | bytes) -> Event:
    """Parse one JSONL line into its event type (raises pydantic.ValidationError if malformed)."""
    return METRIC_EVENT.validate_json(line)


def json_schema() -> dict[str, Any]:
    return METRIC_EVENT.json_schema()


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
