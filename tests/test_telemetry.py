"""Metric events and MFU: the schema round-trips, the peak table knows our GPUs, the CPU peak is measured."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llm.telemetry.mfu import gpu_peak_flops, measure_cpu_peak_flops
from llm.telemetry.schema import EvalEvent, TrainEvent, parse_event
from llm.telemetry.sinks import EventLog, JsonlSink, last_seq


@pytest.mark.parametrize(
    ("name", "precision", "tflops"),
    [
        ("NVIDIA GeForce RTX 3090", "fp16", 71.0),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
        ("NVIDIA H200", "fp16", 989.4),
        ("NVIDIA GeForce RTX 3090", "fp32", 35.6),
    ],
)
def test_gpu_peak_table(name: str, precision: str, tflops: float) -> None:
    assert gpu_peak_flops(name, precision) == pytest.approx(tflops * 1e12)


def test_unknown_gpu_has_no_peak() -> None:
    assert gpu_peak_flops("Some Future Accelerator", "bf16") is None


def test_cpu_peak_is_measured() -> None:
    assert measure_cpu_peak_flops(size=256, seconds=0.1) > 1e8  # at least 0.1 GFLOP/s on any machine


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
