"""The training loop: micro-steps through the engine, then log, evaluate, save, and heed stop signals."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm.config import CheckpointConfig, LoopConfig
from llm.data.loader import BatchSampler, eval_batches
from llm.data.prepare import PreparedDataset, bytes_per_token
from llm.ds_config import DeepSpeedSettings
from llm.telemetry.rank_stats import StepTimers
from llm.telemetry.schema import (
    ControlEvent,
    EvalEvent,
    ParamsEvent,
    RunStateEvent,
    SystemEvent,
    TrainEvent,
)
from llm.telemetry.sinks import EventLog
from llm.telemetry.system import DeviceSampler
from llm.train.async_save import BackgroundSave
from llm.train.checkpoint import Restored, save_checkpoint
from llm.train.collectives import Collectives
from llm.train.control import ControlChannel, Decision
from llm.train.engine import DistInfo, device, step_stats
from llm.train.node_sync import NodeSync
from llm.train.param_stats import ParamStats
from llm.train.signals import StopSignal
from llm.train.uploader import CheckpointUploader


@dataclass(frozen=True)
class LoopResult:
    step: int
    stopped_by_signal: bool


@dataclass(frozen=True)
class LoopContext:
    """What the loop works with, wired together by launch/train.py."""

    engine: Any
    collectives: Collectives
    dist_info: DistInfo
    settings: DeepSpeedSettings
    dataset: PreparedDataset
    block_size: int
    flops_per_token: float
    peak_flops: float  # of the whole job
    checkpoint_root: Path
    manifest_fields: dict[str, Any]  # hashes and versions every manifest carries
    events: EventLog | None  # rank 0 only
    stop: StopSignal  # read at step boundaries, and between evaluation batches
    control: ControlChannel  # the dashboard's commands, on the stop flag's collective
    devices: DeviceSampler  # this rank's device load, gathered when rank 0 asks
    params: ParamStats  # per-layer norms for the dashboard, every `params_every` steps
    upload: bool = False  # checkpoints also go to the checkpoint URI (every rank knows)
    uploader: CheckpointUploader | None = None  # each node's local rank 0, when they do
    gathered: bool = False  # --checkpoint-sync rsync: rank 0 gathers every node's shards (every rank knows)
    sync: NodeSync | None = None  # rank 0's, when it does
    timers: StepTimers | None = None  # DeepSpeed's per-step timers, where the JSON turns them on
    background: BackgroundSave | None = None  # --checkpoint-async: saves finish on its thread


def evaluate(ctx: LoopContext, *, num_batches: int) -> tuple[float, float] | None:
    """Mean validation loss over fixed batches shared among ranks, and bits per byte.

    None when a stop signal cut it short on any rank (the loop then saves and exits)."""
    engine = ctx.engine
    batches = eval_batches(
        ctx.dataset.val,
        block_size=ctx.block_size,
        micro_batch=ctx.settings.micro_batch,
        num_batches=num_batches,
        rank=ctx.dist_info.rank,
        world_size=ctx.dist_info.world_size,
    )
    dev = device()
    engine.eval()
    total = torch.zeros((), dtype=torch.float64, device=dev)
    with torch.no_grad():
        for x, y in batches:
            if ctx.stop.received is not None:
                break
            _, loss = engine(x.to(dev), y.to(dev))
            total += loss.double()
    engine.train()
    # the mean over every rank's batches: sums and counts from all ranks
    sums = ctx.collectives.gather((float(total.item()), len(batches), ctx.stop.received is not None))
    if any(stopped for _, _, stopped in sums):
        return None
    val_loss = sum(s for s, _, _ in sums) / max(1, sum(n for _, n, _ in sums))
    val_bpb = val_loss / math.log(2) / bytes_per_token(ctx.dataset.meta, "val")
    return val_loss, val_bpb


def train(
    ctx: LoopContext, loop: LoopConfig, ckpt: CheckpointConfig, *, start: Restored | None
) -> LoopResult:
    """Train from `start` (or from scratch) to `loop.max_steps`, or until a stop signal."""
    settings, dist_info, engine = ctx.settings, ctx.dist_info, ctx.engine
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
        step, tokens_seen = start.step, start.manifest.tokens_seen
        sampler.load_state_dict(start.manifest.sampler)
    tokens_per_step = settings.train_batch * ctx.block_size
    stop = ctx.stop
    dev = device()

    if start is None:
        _log_eval(ctx, step, loop.eval_batches)  # the starting point of the curve

    window = _Window()
    while step < loop.max_steps:
        loss_sum = torch.zeros((), device=dev)
        sample_params = ctx.params.due(step + 1)
        for micro in range(settings.gradient_accumulation):
            x, y = sampler.next_batch()
            _, loss = engine(x.to(dev, non_blocking=True), y.to(dev, non_blocking=True))
            engine.backward(loss)
            if sample_params and micro == settings.gradient_accumulation - 1:
                ctx.params.before_step()  # the reduced gradients live only until the optimizer step
            engine.step()
            loss_sum += loss.detach()
        if ctx.timers is not None:
            ctx.timers.record()
        step += 1
        if sample_params:
            _log_params(ctx, step)
        window.steps += 1
        tokens_seen += tokens_per_step
        decision = ctx.control.decide(stop.received is not None)
        stopping = decision.stop
        last = step == loop.max_steps

        save = functools.partial(_save, ctx, ckpt, step=step, tokens_seen=tokens_seen, sampler=sampler)
        if step % loop.log_every == 0 or last or stopping:
            _log_train(ctx, step=step, tokens_seen=tokens_seen, loss_sum=loss_sum, window=window)
        not_training = False  # time spent evaluating, saving or paused is not training time
        if step % loop.eval_every == 0 or last:
            _log_eval(ctx, step, loop.eval_batches)
            not_training = True
        if step % ckpt.save_every == 0 or last or stopping or decision.save:
            save()
            not_training = True
        _acknowledge(ctx, decision, step)
        _report_devices(ctx, decision, step)
        _report_saved(ctx)
        if ctx.control.paused and not stopping:
            stopping = _hold(ctx, step, save)
            not_training = True
        if not_training or step % loop.log_every == 0:
            window = _Window()
        if stopping:
            _report_saved(ctx, wait=True)
            return LoopResult(step=step, stopped_by_signal=True)
    _report_saved(ctx, wait=True)
    return LoopResult(step=step, stopped_by_signal=False)


def _save(
    ctx: LoopContext, ckpt: CheckpointConfig, *, step: int, tokens_seen: int, sampler: BatchSampler
) -> None:
    state = {"tokens_seen": tokens_seen, "sampler": sampler.state_dict(), **ctx.manifest_fields}
    folder = save_checkpoint(
        ctx.engine,
        ctx.checkpoint_root,
        step=step,
        state={**state, "lr_scale": ctx.control.lr.scale},
        dist_info=ctx.dist_info,
        collectives=ctx.collectives,
        keep_last=ckpt.keep_last,
        remote=ctx.upload,
        uploader=ctx.uploader,
        gathered=ctx.gathered,
        sync=ctx.sync,
        background=ctx.background,
    )
    if folder is not None and ctx.events is not None:
        ctx.events.emit(RunStateEvent, state="checkpoint_saved", step=step, detail=str(folder))


def _report_saved(ctx: LoopContext, *, wait: bool = False) -> None:
    """--checkpoint-async: say which saves have been committed since the last call (after the one in
    flight ends, with `wait`); raise the error that ended one."""
    if ctx.background is None:
        return
    if wait:
        ctx.background.wait()  # raises as check() does
    else:
        ctx.background.check()
    for step, folder in ctx.background.committed():
        if ctx.events is not None:
            ctx.events.emit(RunStateEvent, state="checkpoint_saved", step=step, detail=str(folder))


def _acknowledge(ctx: LoopContext, decision: Decision, step: int) -> None:
    if ctx.events is None:
        return
    for command, status, detail in decision.acks:
        scale = ctx.control.lr.scale if command.action == "set_lr" and status == "applied" else None
        ctx.events.emit(
            ControlEvent, command_id=command.id, action=command.action, status=status, step=step,
            lr_scale=scale, detail=detail,
        )  # fmt: skip


def _report_devices(ctx: LoopContext, decision: Decision, step: int) -> None:
    if not decision.sample_devices:
        return
    devices = ctx.collectives.gather(ctx.devices.sample())  # every rank, in rank order
    if ctx.events is not None:
        ctx.events.emit(SystemEvent, step=step, devices=devices)


def _hold(ctx: LoopContext, step: int, save: Callable[[], None]) -> bool:
    """Every rank waits at this step boundary until resumed (False) or stopped (True, saved)."""
    if ctx.events is not None:
        ctx.events.emit(RunStateEvent, state="paused", step=step)
    while True:
        decision = ctx.control.wait_while_paused(lambda: ctx.stop.received is not None)
        if decision.save or decision.stop:
            save()
            _report_saved(ctx, wait=True)  # paused: nothing to overlap the save with
        _acknowledge(ctx, decision, step)
        _report_devices(ctx, decision, step)
        if decision.stop:
            return True
        if not ctx.control.paused:
            if ctx.events is not None:
                ctx.events.emit(RunStateEvent, state="unpaused", step=step)
            return False


@dataclass
class _Window:
    """Optimizer steps since the last train record, and when the window opened."""

    start: float = field(default_factory=time.perf_counter)
    steps: int = 0

    def seconds(self) -> float:
        """Time since the window opened; read it only once the device has finished the steps."""
        return time.perf_counter() - self.start


def _log_train(
    ctx: LoopContext, *, step: int, tokens_seen: int, loss_sum: torch.Tensor, window: _Window
) -> None:
    """Every rank joins (the loss is averaged over ranks); rank 0 writes the record.

    This is the only device-to-host synchronisation of a step, and only on logging steps. The
    window closes after it: until then a GPU may still be working through the queued steps, and
    time read earlier would overstate tokens/s and MFU.
    """
    loss = float(loss_sum.item())  # waits for the stream that computed the loss
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # and for every other stream (DeepSpeed's communication)
    elapsed = window.seconds()
    accumulation = ctx.settings.gradient_accumulation
    mean_loss = ctx.collectives.mean(loss / accumulation)
    stats = step_stats(ctx.engine)
    if ctx.events is None:
        return
    rate = window.steps * ctx.settings.train_batch * ctx.block_size / elapsed
    flops = rate * ctx.flops_per_token
    ctx.events.emit(
        TrainEvent,
        step=step,
        tokens_seen=tokens_seen,
        loss=mean_loss,
        step_time=elapsed / window.steps,
        tokens_per_s=rate,
        tflops=flops / 1e12,
        mfu=flops / ctx.peak_flops if ctx.peak_flops else 0.0,
        memory_gb=torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None,
        **stats,
    )


def _log_params(ctx: LoopContext, step: int) -> None:
    sample = ctx.params.after_step()  # every rank joins: sums of squares, one gathered layer
    if ctx.events is not None:
        ctx.events.emit(ParamsEvent, step=step, layers=sample.layers, histogram=sample.histogram)


def _log_eval(ctx: LoopContext, step: int, num_batches: int) -> None:
    result = evaluate(ctx, num_batches=num_batches)
    if result is None:
        return  # stopped part-way: no figure rather than one from part of the batches
    val_loss, val_bpb = result
    if ctx.events is not None:
        ctx.events.emit(EvalEvent, step=step, val_loss=val_loss, val_bpb=val_bpb)
