"""Crash-safe checkpoints: DeepSpeed's files plus our manifest; `latest` moves only once it is complete.

Layout under RUN_DIR/checkpoints/:
    step_00000100/            DeepSpeed's shards, rng_state_rank<r>.pt for each rank, manifest.json
    latest                    the tag of the newest complete checkpoint (DeepSpeed's own format)

A checkpoint counts only when its manifest exists and every file it lists is there with its size
(and, when verified, its sha256). The manifest is written last, atomically, then `latest` is moved
atomically; a crash at any moment leaves the previous checkpoint as `latest` and loadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm.errors import UsageError
from llm.train.collectives import Collectives
from llm.train.engine import DistInfo

MANIFEST = "manifest.json"
LATEST = "latest"
FORMAT_VERSION = 1
_TAG_PREFIX = "step_"


def tag_for(step: int) -> str:
    return f"{_TAG_PREFIX}{step:08d}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file, fsync, rename: readers see the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _failpoint(name: str, *, step: int) -> None:
    """Test hook: LLM_FAILPOINT=<name>[@<step>] kills this process with SIGKILL here (a real kill -9)."""
    target, _, at = os.environ.get("LLM_FAILPOINT", "").partition("@")
    if target == name and (not at or int(at) == step):
        os.kill(os.getpid(), signal.SIGKILL)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _hash_tree(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        str(path.relative_to(folder)): {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
    }


def save_checkpoint(
    engine: Any,
    root: Path,
    *,
    step: int,
    state: dict[str, Any],
    dist_info: DistInfo,
    collectives: Collectives,
    keep_last: int,
) -> Path:
    """Every rank calls this at the same step. Returns the checkpoint folder."""
    tag = tag_for(step)
    folder = root / tag
    if is_complete(folder):
        return folder  # the same step saved twice (e.g. a save_every step that is also the last)
    if folder.exists() and dist_info.is_node_main:
        shutil.rmtree(folder)  # left by a save that crashed: start it afresh, no stale shards
    collectives.barrier()
    engine.save_checkpoint(str(root), tag=tag, client_state={"llm": state}, save_latest=False)
    torch.save(rng_state(), folder / f"rng_state_rank{dist_info.rank}.pt")
    _failpoint("checkpoint.before_manifest", step=step)
    collectives.barrier()
    # Each node hashes what it holds, so no shared filesystem is assumed; rank 0 merges.
    files = _hash_tree(folder) if dist_info.is_node_main else {}
    merged: dict[str, dict[str, Any]] = {}
    for node_files in collectives.gather(files):
        merged.update(node_files)
    manifest = {
        "format": FORMAT_VERSION,
        "tag": tag,
        "step": step,
        "world_size": dist_info.world_size,
        "created": time.time(),
        **state,
        "rng_files": [f"rng_state_rank{r}.pt" for r in range(dist_info.world_size)],
        "files": merged,
    }
    if dist_info.is_node_main:
        write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        write_atomic(root / LATEST, tag)
        if dist_info.is_main:
            apply_retention(root, keep_last=keep_last)
    collectives.barrier()
    return folder


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "files" in manifest else None


def checkpoint_problem(folder: Path, *, verify_hashes: bool = False) -> str | None:
    """Why `folder` is not a usable checkpoint, or None when it is."""
    manifest = read_manifest(folder)
    if manifest is None:
        return "no complete manifest.json (the save did not finish)"
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}"
        if verify_hashes and sha256_file(path) != entry["sha256"]:
            return f"{name} does not match its sha256 in the manifest (corrupt)"
    return None


def is_complete(folder: Path) -> bool:
    return folder.is_dir() and checkpoint_problem(folder) is None


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders (complete or not), oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_TAG_PREFIX))


def apply_retention(root: Path, *, keep_last: int) -> None:
    """Keep the newest `keep_last` complete checkpoints; drop older ones and older unfinished saves."""
    complete = [p for p in list_checkpoints(root) if is_complete(p)]
    if not complete:
        return
    keep = set(complete[-keep_last:])
    for folder in list_checkpoints(root):
        if folder not in keep and folder < complete[-1]:  # newer ones may be saves in progress
            shutil.rmtree(folder, ignore_errors=True)


def newest_complete(root: Path) -> Path | None:
    """`latest` when it is complete, else the newest complete checkpoint."""
    pointer = root / LATEST
    if pointer.is_file():
        folder = root / pointer.read_text().strip()
        if is_complete(folder):
            return folder
    complete = [p for p in list_checkpoints(root) if is_complete(p)]
    return complete[-1] if complete else None


def find_run_dir_to_resume(runs_root: Path) -> Path | None:
    """The most recently written run under `runs_root` that has a complete checkpoint."""
    if not runs_root.is_dir():
        return None
    candidates = [d for d in runs_root.iterdir() if newest_complete(d / "checkpoints") is not None]
    return max(candidates, key=lambda d: (d / "checkpoints").stat().st_mtime, default=None)


_WHAT_TO_GIVE = "give a run directory (RUN_DIR) or one checkpoint folder (RUN_DIR/checkpoints/step_XXXXXXXX)"


def resolve_checkpoint(path: Path) -> Path:
    """The checkpoint folder `path` names: a run's newest complete one, or `path` itself when complete."""
    if not path.exists():
        raise UsageError(f"{path}: no such run directory or checkpoint; {_WHAT_TO_GIVE}")
    if not path.is_dir():
        raise UsageError(f"{path}: a file, not a run directory or checkpoint folder; {_WHAT_TO_GIVE}")
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if root != path or (root / LATEST).is_file() or list_checkpoints(root):
        found = newest_complete(root)  # `latest`, else the newest complete one
        if found is None:
            raise UsageError(f"{root}: no complete checkpoint (every save is unfinished); start without it")
        return found
    problem = checkpoint_problem(path)
    if problem is not None:
        earlier = newest_complete(path.parent)
        hint = f"use {earlier}" if earlier is not None and earlier != path else _WHAT_TO_GIVE
        raise UsageError(f"{path}: not a usable checkpoint, {problem}; {hint}")
    return path


def resolve_resume(resume: str | None, run_dir: Path | None) -> Path | None:
    """The checkpoint folder to start from, None for a fresh start; UsageError when `resume` is bad."""
    if resume is None:
        return None
    if resume == "auto":  # continue if there is something to continue, else start afresh
        return newest_complete(run_dir / "checkpoints") if run_dir is not None else None
    try:
        return resolve_checkpoint(Path(resume))
    except UsageError as err:
        raise UsageError(f"--resume {err}") from None


def verify_or_fail(folder: Path) -> None:
    """Check every file's sha256 against the manifest (run by one process per node before loading)."""
    problem = checkpoint_problem(folder, verify_hashes=True)
    if problem is not None:
        raise UsageError(f"checkpoint {folder}: {problem}; resume from an earlier checkpoint")


@dataclass(frozen=True)
class Restored:
    step: int
    state: dict[str, Any]


def load_checkpoint(engine: Any, folder: Path, *, dist_info: DistInfo) -> Restored:
    """Restore weights, optimizer, schedule (DeepSpeed) and this rank's RNG state (ours)."""
    manifest = read_manifest(folder)
    assert manifest is not None
    loaded, client_state = engine.load_checkpoint(
        str(folder.parent), tag=folder.name, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if loaded is None:
        raise UsageError(
            f"checkpoint {folder}: DeepSpeed could not load it; resume from an earlier checkpoint"
        )
    rng_file = folder / f"rng_state_rank{dist_info.rank}.pt"
    if manifest["world_size"] == dist_info.world_size and rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    elif dist_info.is_main:
        print(
            f"warning: checkpoint written by {manifest['world_size']} ranks, resumed on "
            f"{dist_info.world_size}: random streams will differ from an unbroken run",
            flush=True,
        )
    return Restored(step=int(manifest["step"]), state=dict(client_state["llm"]))


def load_model_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The full fp32 model state dict from a checkpoint, whatever ZeRO stage wrote it (no engine)."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise UsageError(f"{folder}: not a complete checkpoint (no manifest.json)")
    if manifest.get("zero_stage", 0) == 0:
        states = torch.load(folder / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        return {k: v.float() for k, v in states["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return dict(get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name))
