"""Metric events and MFU: the schema round-trips, the peak table knows our GPUs by their full names.

The CPU's measured peak is tested in test_mfu.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from llm.telemetry.mfu import gpu_peak_flops
from llm.telemetry.schema import (
    ControlEvent,
    DeviceStats,
    EvalEvent,
    Histogram,
    LayerStats,
    ParamsEvent,
    SystemEvent,
    TrainEvent,
    json_schema,
    parse_event,
)
from llm.telemetry.sinks import EventLog, JsonlSink, last_seq


@pytest.mark.parametrize(
    ("name", "precision", "tflops"),
    [
        ("NVIDIA GeForce RTX 3090", "fp16", 71.0),
        ("NVIDIA GeForce RTX 3090", "fp32", 35.6),
        ("NVIDIA GeForce RTX 4090", "bf16", 165.2),
        ("NVIDIA A100-SXM4-40GB", "bf16", 312.0),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA A100-PCIE-40GB", "fp16", 312.0),
        ("NVIDIA A100 80GB PCIe", "fp32", 19.5),
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4),  # the SXM5 card
        ("NVIDIA H100 80GB HBM3", "fp32", 66.9),
        ("NVIDIA H100 PCIe", "bf16", 756.0),
        ("NVIDIA H100 PCIe", "fp32", 51.2),
        ("NVIDIA H200", "fp16", 989.4),
        ("NVIDIA L4", "bf16", 121.0),
        ("NVIDIA L4", "fp32", 30.3),
        ("NVIDIA L40S", "bf16", 362.05),
        ("NVIDIA L40S", "fp32", 91.6),
    ],
)
def test_gpu_peak_table(name: str, precision: str, tflops: float) -> None:
    assert gpu_peak_flops(name, precision) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize(
    "name",
    [
        "Some Future Accelerator",
        "NVIDIA H100 NVL",  # neither the PCIe card nor the SXM one
        "NVIDIA H200 NVL",
        "NVIDIA GeForce RTX 3090 Ti",  # a faster card whose name contains "RTX 3090"
        "NVIDIA GeForce RTX 4090 D",
        "NVIDIA A100-SXM4-40GB MIG 1g.5gb",  # a slice of the card
        "NVIDIA L40",
    ],
)
def test_gpus_not_in_the_table_have_no_peak(name: str) -> None:
    assert gpu_peak_flops(name, "bf16") is None


def _train(seq: int, **fields: object) -> TrainEvent:
    values = dict(
        run_id="r", seq=seq, time=1.0, step=1, tokens_seen=10, loss=2.0, lr=1e-3, grad_norm=0.5,
        loss_scale=1.0, skipped_steps=0, step_time=0.1, tokens_per_s=100.0, tflops=0.1, mfu=0.5,
        memory_gb=None,
    )  # fmt: skip
    values.update(fields)
    return TrainEvent(**values)  # type: ignore[arg-type]


def test_events_round_trip_and_reject_bad_records() -> None:
    event = _train(3)
    assert parse_event(event.model_dump_json()) == event
    assert isinstance(
        parse_event('{"type":"eval","run_id":"r","seq":0,"time":1,"step":0,"val_loss":1,"val_bpb":1}'),
        EvalEvent,
    )
    with pytest.raises(ValidationError):
        parse_event('{"type":"train","run_id":"r","seq":0}')  # fields missing
    with pytest.raises(ValidationError):
        _train(0, mfu=-1.0)
    # a diverged loss: JSON has no NaN, pydantic writes null, and the record still reads back (as NaN)
    diverged = parse_event(_train(4, loss=float("nan")).model_dump_json())
    assert isinstance(diverged, TrainEvent) and math.isnan(diverged.loss)


def test_dashboard_events_round_trip_and_reject_bad_records() -> None:
    device = DeviceStats(
        node="n0", rank=1, kind="cpu", index=1, name="AMD EPYC", utilization=97.5, memory_used_gb=1.2,
        memory_total_gb=24.0,
    )  # fmt: skip
    layer = LayerStats(name="blocks.0.mlp.c_fc.weight", numel=8, weight_norm=1.0, grad_norm=None,
                       update_ratio=1e-3)  # fmt: skip
    histogram = Histogram(name=layer.name, edges=[-1.0, 0.0, 1.0], counts=[3, 5])
    events = [
        SystemEvent(run_id="r", seq=0, time=1.0, step=5, devices=[device]),
        ParamsEvent(run_id="r", seq=1, time=1.0, step=5, layers=[layer], histogram=histogram),
        ControlEvent(
            run_id="r",
            seq=2,
            time=1.0,
            command_id="c1",
            action="set_lr",
            status="applied",
            step=5,
            lr_scale=0.5,
        ),
    ]
    for event in events:
        assert parse_event(event.model_dump_json()) == event
    bad = events[2].model_dump() | {"action": "explode"}
    with pytest.raises(ValidationError):
        parse_event(ControlEvent.model_construct(**bad).model_dump_json())
    with pytest.raises(ValidationError):
        DeviceStats.model_validate(device.model_dump() | {"kind": "tpu"})
    kinds = {ref.split("/")[-1] for ref in json_schema()["discriminator"]["mapping"].values()}
    assert kinds == {"TrainEvent", "EvalEvent", "RunStateEvent", "SystemEvent", "ParamsEvent", "ControlEvent"}


def test_event_log_numbers_records_and_a_resumed_log_continues(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    log = EventLog("r", [JsonlSink(path)])
    log.emit(EvalEvent, step=0, val_loss=3.0, val_bpb=1.0)
    log.emit(EvalEvent, step=1, val_loss=2.0, val_bpb=0.9)
    log.close()
    with path.open("a") as handle:
        handle.write('{"type": "eval", "run_id": "r", "se')  # a line cut short by a crash
    assert last_seq(path) == 1
    resumed = EventLog("r", [JsonlSink(path)], first_seq=last_seq(path) + 1)
    resumed.emit(EvalEvent, step=2, val_loss=1.5, val_bpb=0.8)
    resumed.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and lines[2].endswith('"se')  # the cut line stays as it was, alone
    assert [parse_event(line).seq for i, line in enumerate(lines) if i != 2] == [0, 1, 2]
