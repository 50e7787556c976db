"""The checkpoint manifest: what a checkpoint holds and what it must match to be resumed.

Written last, atomically, by rank 0; a checkpoint without a valid manifest does not exist. The format
version is checked on every read, so a manifest from another version of this code is refused by name.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST_NAME = "manifest.json"
CHECKPOINT_FORMAT_VERSION = 2
# 1: no "model" section (the shape is known only by its hash); still read, so old runs resume
READABLE_FORMATS = (1, 2)


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str
    bytes: int = Field(ge=0)


class CheckpointManifest(BaseModel):
    """One complete checkpoint: DeepSpeed's shards, one RNG file per rank, and this record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int
    tag: str
    step: int = Field(ge=0, description="optimizer steps taken")
    world_size: int = Field(ge=1, description="ranks that wrote it")
    created: float = Field(description="unix time of the save")
    tokens_seen: int = Field(ge=0)
    sampler: dict[str, Any] = Field(description="the data sampler's position")
    lr_scale: float = Field(1.0, gt=0, description="the dashboard's multiplier on the LR schedule")
    model: dict[str, Any] | None = Field(None, description="the model's shape (GPTConfig); format >= 2")
    config_hash: str = Field(description="hash of the model's shape: must match to load the weights")
    tokenizer_hash: str
    zero_stage: int = Field(ge=0, le=3)
    precision: str
    code: dict[str, Any] = Field(description="git commit of the code that wrote it")
    rng_files: list[str]
    files: dict[str, FileEntry] = Field(description="every file of the checkpoint: sha256 and size")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True)


class ManifestError(ValueError):
    """A manifest that exists but cannot be used (unreadable, invalid, another format)."""


def parse_manifest(text: str) -> CheckpointManifest:
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise ManifestError(f"{MANIFEST_NAME} is not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{MANIFEST_NAME} is not a JSON object")
    version = raw.get("format")
    if version not in READABLE_FORMATS:
        raise ManifestError(
            f"{MANIFEST_NAME} is format {version!r}; this code reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))} (use the version of llm that wrote it)"
        )
    try:
        return CheckpointManifest.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{MANIFEST_NAME}: {where}: {first['msg']}") from None
