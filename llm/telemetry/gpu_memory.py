"""Run as if on a smaller GPU, and say how much memory the run took: how `make gpu-check` checks
the 24 GB presets on any larger card.

Two environment variables, read by every rank (not `LLM_*`: those are run settings that RunConfig
validates; these belong to the harness around a run, benchmarks/run_configs.py):

    GPU_MEMORY_CAP_GIB=22.5    cap this process's CUDA caching allocator at 22.5 GiB
                               (torch.cuda.set_per_process_memory_fraction)
    GPU_MEMORY_REPORT_DIR=DIR  at exit, even after an out-of-memory error, write DIR/rank<N>.json:
                               peak allocated and reserved memory, the card's total, the cap

The cap covers what the allocator hands out; the CUDA context and NCCL's own buffers lie outside it,
as they lie outside the ~22.5 GiB of a 24 GB card that docs/architecture.md counts as usable.
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from llm.errors import UsageError

CAP_ENV = "GPU_MEMORY_CAP_GIB"
REPORT_ENV = "GPU_MEMORY_REPORT_DIR"
GIB = 2**30
_PENDING: list[tuple[Path, dict[str, Any]]] = []  # the report each rank writes at exit


def apply_memory_cap(environ: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """Cap and/or report this rank's GPU memory as the environment asks; None where there is no CUDA.

    Call once per rank after `torch.cuda.set_device(local_rank)` and before the model reaches the GPU.
    Returns what was set: {"device", "total_gib", "cap_gib", "fraction"} (cap_gib None: no cap).
    """
    value, report_dir = environ.get(CAP_ENV), environ.get(REPORT_ENV)
    if not torch.cuda.is_available() or not (value or report_dir):
        return None
    device = torch.cuda.current_device()
    total = torch.cuda.get_device_properties(device).total_memory
    cap_gib = _parse_cap(value) if value else None
    fraction = 1.0 if cap_gib is None else min(1.0, cap_gib * GIB / total)
    if fraction < 1.0:
        torch.cuda.set_per_process_memory_fraction(fraction, device)
    setting = {
        "device": torch.cuda.get_device_name(device),
        "total_gib": total / GIB,
        "cap_gib": cap_gib,
        "fraction": fraction,
    }
    if report_dir:
        rank = int(environ.get("RANK", 0))
        if not _PENDING:
            atexit.register(write_reports)
        _PENDING.append((Path(report_dir) / f"rank{rank}.json", {"rank": rank, **setting}))
    return setting


def write_reports() -> None:
    """Write the reports `apply_memory_cap` promised. At exit by itself; launch/train.py, which leaves
    through os._exit (no atexit), calls it first."""
    for path, setting in _PENDING:
        _write_report(path, setting)


def peak_memory_gib() -> dict[str, float]:
    """The caching allocator's high-water marks on this process's GPU, in GiB."""
    return {
        "max_allocated_gib": torch.cuda.max_memory_allocated() / GIB,
        "max_reserved_gib": torch.cuda.max_memory_reserved() / GIB,
    }


def _parse_cap(value: str) -> float:
    try:
        cap = float(value)
    except ValueError:
        cap = float("nan")
    if not cap > 0:  # also NaN
        raise UsageError(f"{CAP_ENV}={value!r}: expected a positive number of GiB, e.g. {CAP_ENV}=22.5")
    return cap


def _write_report(path: Path, setting: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**setting, **peak_memory_gib()}, indent=2) + "\n")
