"""The train record's timing window closes after the device has finished the window's steps.

On a GPU the host queues kernels and runs ahead; the loss read on logging steps is where it waits.
Here a loss whose `.item()` takes a known time stands in for that wait: the step time must include
it, or tokens/s and MFU on a GPU would count only the time it took to queue the work.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from llm.telemetry.schema import TrainEvent
from llm.train.loop import _log_train, _Window

DEVICE_WAIT = 0.3  # seconds the "device" still needs when the host reaches the logging step


class _QueuedLoss:
    """A loss still being computed: reading it waits for the device."""

    def item(self) -> float:
        time.sleep(DEVICE_WAIT)
        return 4.0


class _Events:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def emit(self, kind: type, **fields: Any) -> None:
        assert kind is TrainEvent
        self.records.append(fields)


def test_step_time_includes_the_wait_for_the_device() -> None:
    engine = SimpleNamespace(
        get_global_grad_norm=lambda: 1.0,
        optimizer=SimpleNamespace(cur_scale=1.0),
        get_lr=lambda: [1e-3],
        skipped_steps=0,
    )
    events = _Events()
    ctx = SimpleNamespace(
        settings=SimpleNamespace(gradient_accumulation=2, train_batch=8),
        collectives=SimpleNamespace(mean=lambda value: value),
        engine=engine,
        events=events,
        block_size=128,
        flops_per_token=1e6,
        peak_flops=1e12,
    )
    window = _Window(steps=2)  # opened now: the host queued two steps in no time
    _log_train(ctx, step=2, tokens_seen=2048, loss_sum=_QueuedLoss(), window=window)  # type: ignore[arg-type]
    (record,) = events.records
    assert record["loss"] == 2.0  # the sum over 2 micro-steps, averaged
    assert record["step_time"] >= DEVICE_WAIT / 2  # two steps shared the wait
    assert record["tokens_per_s"] <= 2 * 8 * 128 / DEVICE_WAIT
