"""The run directory: what is written once at start so any run can be reproduced from it."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from llm.version import code_version

__all__ = ["code_version", "config_hash", "hardware", "new_run_id", "write_run_files"]

_LIBRARIES = ("torch", "deepspeed", "tokenizers", "pydantic", "pydantic-settings", "numpy", "llm")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid() % 10000:04d}"


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def hardware(world_size: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "node": platform.node(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "world_size": world_size,
        "cuda": torch.version.cuda,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    return info


def config_hash(*parts: Any) -> str:
    """A short sha256 of JSON-able values: checkpoints record it to catch a resume with another shape."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_run_files(run_dir: Path, *, name: str, record: dict[str, Any], ds_config: dict[str, Any]) -> None:
    """Write `<name>.json` (the record, library versions, argv) and the DeepSpeed JSON as used."""
    run_dir.mkdir(parents=True, exist_ok=True)
    full = {**record, "versions": library_versions(), "argv": sys.argv}
    (run_dir / f"{name}.json").write_text(json.dumps(full, indent=2, default=str) + "\n")
    (run_dir / f"{name}.ds_config.json").write_text(json.dumps(ds_config, indent=2) + "\n")
