"""Dashboard commands, acted on by every rank after the same step.

Rank 0 takes the commands its reporter brought back (llm/telemetry/reporter.py). The per-step
collective that carries the stop flag carries one more flag, "rank 0 has commands"; only on such a
step a broadcast sends them, so an ordinary step costs what it did. Every rank then applies them in
order at that step boundary, and rank 0 acknowledges each with a `control` record naming the step.

The same collective carries rank 0's "sample the devices now" every SAMPLE_EVERY_S of wall time, so
every rank reports its device at the same step without a clock of its own (llm/telemetry/system.py).

A pause holds every rank at the boundary, polling together every POLL_S (each poll is one small
collective, far inside --dist-timeout), so a pause of any length never ends the job; a stop signal,
resume, save, stop and set_lr all work while paused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from llm.telemetry.reporter import Command, ReporterSink
from llm.telemetry.system import SAMPLE_EVERY_S
from llm.train.collectives import Collectives

POLL_S = 0.25  # while paused: how often every rank checks for a command or a stop signal


@dataclass
class Decision:
    """What the commands taken at one step boundary ask of the loop."""

    stop: bool = False  # save, then end the run (a stop signal or the dashboard's stop)
    sample_devices: bool = False  # every rank reports its device's load now
    save: bool = False
    pause: bool = False
    resume: bool = False
    acks: list[tuple[Command, str, str]] = field(default_factory=list)  # (command, status, detail)


class ControlChannel:
    def __init__(
        self, collectives: Collectives, reporter: ReporterSink | None, engine: Any, *, is_main: bool
    ) -> None:
        self._collectives = collectives
        self._reporter = reporter  # rank 0 with a dashboard; None elsewhere
        self._is_main = is_main
        self._last_sample = time.monotonic()
        self.lr = LrScale(engine)
        self.paused = False

    def decide(self, stop_requested: bool) -> Decision:
        """The step boundary's collective: what every rank does now."""
        pending = self._reporter.commands() if self._reporter is not None else []
        sample = self._is_main and time.monotonic() - self._last_sample >= SAMPLE_EVERY_S
        if sample:
            self._last_sample = time.monotonic()
        stop, have_commands, sample = self._collectives.flags(stop_requested, bool(pending), sample)
        commands = self._collectives.broadcast(pending) if have_commands else []
        decision = Decision(stop=stop, sample_devices=sample)
        for command in commands:
            self._apply(command, decision)
        return decision

    def wait_while_paused(self, stop_requested: Any) -> Decision:
        """Rank 0 sleeps POLL_S between polls; the others wait for it inside the collective."""
        if self._is_main:
            time.sleep(POLL_S)
        return self.decide(stop_requested())

    def _apply(self, command: Command, decision: Decision) -> None:
        action, status, detail = command.action, "applied", ""
        if action == "pause":
            if self.paused:
                status, detail = "rejected", "already paused"
            else:
                self.paused = decision.pause = True
        elif action == "resume":
            if not self.paused:
                status, detail = "rejected", "not paused"
            else:
                self.paused, decision.resume = False, True
        elif action == "save":
            decision.save = True
        elif action == "stop":
            decision.stop = True
        elif action == "set_lr":
            if command.lr_scale is None:
                status, detail = "rejected", "set_lr needs lr_scale"
            else:
                self.lr.set(command.lr_scale)
        decision.acks.append((command, status, detail))


class LrScale:
    """A multiplier on the DeepSpeed JSON's learning-rate schedule, from the next step on.

    DeepSpeed's schedulers set each group's lr from `get_lr()`, computed afresh from the step, so
    wrapping `get_lr` composes with any of them; without a scheduler, the groups' lr at the first
    change is the base. Saved in checkpoints (manifest `lr_scale`), so a resumed run keeps it.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.scale = 1.0
        scheduler = getattr(engine, "lr_scheduler", None)
        self._schedule = getattr(scheduler, "get_lr", None)
        self._base = [group["lr"] for group in engine.optimizer.param_groups]
        if scheduler is not None and self._schedule is not None:
            scheduler.get_lr = self._scaled

    def _scaled(self) -> list[float]:
        assert self._schedule is not None
        return [lr * self.scale for lr in self._schedule()]

    def set(self, scale: float) -> None:
        self.scale = scale
        lrs = self._schedule() if self._schedule is not None else self._base
        for group, lr in zip(self._engine.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr * scale
