"""What each rank measured about itself over a run: its peak memory and, when the DeepSpeed JSON turns
on `"wall_clock_breakdown": true`, where each optimizer step's time went by DeepSpeed's own timers.

At the end of a run every rank's summary is gathered and rank 0 writes RUN_DIR/rank_stats.json:

    {"ranks": [{"rank": 0, "node": "node0", "threads": 2,
                "memory": {"kind": "cpu", "peak_bytes": ..., "start_bytes": ...},
                "timers_ms": {"fwd": [per step...], "bwd_inner": [...], "bwd_allreduce": [...],
                              "step": [...]}}, ...]}

`timers_ms` holds one value per optimizer step (all micro-steps of the step summed), in step order,
warm-up included: a benchmark drops the first steps itself. Names are DeepSpeed's global timers:
`fwd` the forward passes, `bwd_inner` the backward computation, `bwd_allreduce` the gradient
reduction DeepSpeed runs after backward (communication; ZeRO-2/3 reduce inside backward's hooks
instead), `step` the optimizer step (with ZeRO, also the all-gather of the updated weights). The
timers cost a host synchronisation per step on a GPU, which is why they are opt-in.
"""

from __future__ import annotations

import json
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch

TIMERS = ("fwd", "bwd_inner", "bwd_allreduce", "step")
FILE = "rank_stats.json"
_start: dict[str, int] = {}


@dataclass
class StepTimers:
    """DeepSpeed's global wall-clock timers, read after each optimizer step when the config enables them."""

    engine: Any
    per_step: dict[str, list[float]] = field(default_factory=dict)
    enabled: bool = field(init=False)

    def __post_init__(self) -> None:  # the JSON's setting, read once rather than every step
        check = getattr(self.engine, "wall_clock_breakdown", None)
        self.enabled = bool(check()) if callable(check) else False

    def record(self) -> None:
        """Call after the step's last `engine.step()`: the engine cached its timers there, then reset them."""
        if not self.enabled:
            return
        cache = self.engine.get_wall_clock_timers()
        for name in TIMERS:
            if name in cache:
                self.per_step.setdefault(name, []).append(float(cache[name]))


def mark_start() -> None:
    """Note the memory this process holds before the model exists (`start_bytes` in the summary): the
    framework's own share, which the model's states and activations come on top of."""
    _start["bytes"] = current_memory()


def current_memory() -> int:
    if torch.cuda.is_available():
        return torch.cuda.memory_allocated()
    return psutil.Process().memory_info().rss


def peak_memory() -> dict[str, Any]:
    """This process's peak: the CUDA allocator's high-water mark, or on a CPU the peak resident set."""
    if torch.cuda.is_available():
        return {
            "kind": "gpu",
            "peak_bytes": torch.cuda.max_memory_allocated(),
            "peak_reserved_bytes": torch.cuda.max_memory_reserved(),
            "device": torch.cuda.get_device_name(),
        }
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"kind": "cpu", "peak_bytes": rss if sys.platform == "darwin" else rss * 1024}


def summary(*, rank: int, node: str, timers: StepTimers) -> dict[str, Any]:
    memory = {**peak_memory(), "start_bytes": _start.get("bytes")}
    return {
        "rank": rank, "node": node, "threads": torch.get_num_threads(), "memory": memory,
        "timers_ms": timers.per_step,
    }  # fmt: skip


def write(run_dir: Path, summaries: list[dict[str, Any]]) -> Path:
    path = run_dir / FILE
    path.write_text(json.dumps({"ranks": summaries}, indent=1) + "\n")
    return path
