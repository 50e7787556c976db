"""The training loop: micro-steps through the engine, then log, evaluate, save, and heed stop signals."""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm.config import CheckpointConfig, LoopConfig
from llm.data.loader import BatchSampler, eval_batches
from llm.data.prepare import PreparedDataset, bytes_per_token
from llm.ds_config import DeepSpeedSettings
from llm.telemetry.schema import EvalEvent, RunStateEvent, TrainEvent
from llm.telemetry.sinks import EventLog
from llm.train.checkpoint import Restored, save_checkpoint
from llm.train.engine import Control, DistInfo, device, step_stats


class StopSignal:
    """Turns SIGTERM / SIGINT into a flag read at the next step boundary (then every rank saves)."""

    def __init__(self) -> None:
        self.received: int | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum


@dataclass
class LoopResult:
    step: int
    stopped_by_signal: bool
    last_val_loss: float | None = None
    checkpoints: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class LoopContext:
    """What the loop works with, wired together by launch/train.py."""

    engine: Any
    control: Control
    dist_info: DistInfo
    settings: DeepSpeedSettings
    dataset: PreparedDataset
    block_size: int
    flops_per_token: float
    peak_flops: float  # of the whole job
    checkpoint_root: Path
    manifest_fields: dict[str, Any]  # hashes and versions every manifest carries
    events: EventLog | None  # rank 0 only


def evaluate(ctx: LoopContext, *, num_batches: int) -> tuple[float, float]:
    """Mean validation loss over fixed batches shared among ranks, and bits per byte."""
    engine = ctx.engine
    batches = eval_batches(
        ctx.dataset.val,
        block_size=ctx.block_size,
        micro_batch=ctx.settings.micro_batch,
        num_batches=num_batches,
        rank=ctx.dist_info.rank,
        world_size=ctx.dist_info.world_size,
    )
    engine.eval()
    total = torch.zeros((), dtype=torch.float64, device=device())
    with torch.no_grad():
        for x, y in batches:
            _, loss = engine(x.to(device()), y.to(device()))
            total += loss.double()
    engine.train()
    # Ranks may hold different counts when batches do not divide evenly: weight by count.
    sums = ctx.control.gather((float(total.item()), len(batches)))
    val_loss = sum(s for s, _ in sums) / max(1, sum(n for _, n in sums))
    val_bpb = val_loss / math.log(2) / bytes_per_token(ctx.dataset.meta, "val")
    return val_loss, val_bpb


def train(
    ctx: LoopContext, loop: LoopConfig, ckpt: CheckpointConfig, *, start: Restored | None
) -> LoopResult:
    """Train from `start` (or from scratch) to `loop.max_steps`, or until a stop signal."""
    settings, dist_info, engine, events = ctx.settings, ctx.dist_info, ctx.engine, ctx.events
    sampler = BatchSampler(
        ctx.dataset.train,
        block_size=ctx.block_size,
        micro_batch=settings.micro_batch,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        seed=loop.seed,
    )
    step, tokens_seen = 0, 0
    if start is not None:
        step, tokens_seen = start.step, int(start.state["tokens_seen"])
        sampler.load_state_dict(start.state["sampler"])
    tokens_per_step = settings.train_batch * ctx.block_size
    result = LoopResult(step=step, stopped_by_signal=False)
    stop = StopSignal()
    dev = device()

    if start is None and loop.eval_every and step % loop.eval_every == 0:
        result.last_val_loss = _log_eval(ctx, step, loop.eval_batches)

    window_start, window_steps = time.perf_counter(), 0
    while step < loop.max_steps:
        loss_sum = torch.zeros((), device=dev)
        for _ in range(settings.gradient_accumulation):
            x, y = sampler.next_batch()
            _, loss = engine(x.to(dev, non_blocking=True), y.to(dev, non_blocking=True))
            engine.backward(loss)
            engine.step()
            loss_sum += loss.detach()
        step += 1
        window_steps += 1
        tokens_seen += tokens_per_step
        stopping = ctx.control.any(stop.received is not None)
        last = step == loop.max_steps

        if step % loop.log_every == 0 or last or stopping:
            # the only device-to-host synchronisation of a step, and only on logging steps
            elapsed = time.perf_counter() - window_start
            mean_loss = ctx.control.mean(float(loss_sum.item()) / settings.gradient_accumulation)
            stats = step_stats(engine)
            if events is not None:
                rate = window_steps * tokens_per_step / elapsed
                flops = rate * ctx.flops_per_token
                events.emit(
                    TrainEvent,
                    step=step,
                    tokens_seen=tokens_seen,
                    loss=mean_loss,
                    step_time=elapsed / window_steps,
                    tokens_per_s=rate,
                    tflops=flops / 1e12,
                    mfu=flops / ctx.peak_flops if ctx.peak_flops else 0.0,
                    memory_gb=torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None,
                    **stats,
                )
        paused = False
        if step % loop.eval_every == 0 or last:
            result.last_val_loss = _log_eval(ctx, step, loop.eval_batches)
            paused = True
        if step % ckpt.save_every == 0 or last or stopping:
            state = {"tokens_seen": tokens_seen, "sampler": sampler.state_dict(), **ctx.manifest_fields}
            folder = save_checkpoint(
                engine,
                ctx.checkpoint_root,
                step=step,
                state=state,
                dist_info=dist_info,
                control=ctx.control,
                keep_last=ckpt.keep_last,
            )
            result.checkpoints.append(folder)
            if events is not None:
                events.emit(RunStateEvent, state="checkpoint_saved", step=step, detail=str(folder))
            paused = True
        if paused or step % loop.log_every == 0:
            window_start, window_steps = time.perf_counter(), 0
        if stopping:
            result.stopped_by_signal = True
            break
    result.step = step
    return result


def _log_eval(ctx: LoopContext, step: int, num_batches: int) -> float:
    val_loss, val_bpb = evaluate(ctx, num_batches=num_batches)
    if ctx.events is not None:
        ctx.events.emit(EvalEvent, step=step, val_loss=val_loss, val_bpb=val_bpb)
    return val_loss
