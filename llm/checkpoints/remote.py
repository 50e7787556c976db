"""A run's checkpoints in S3, and the commit protocol that makes each one appear whole or not at all.

Layout under the checkpoint URI (`s3://bucket/runs/RUN`):
    ckpt/<step:08d>-<attempt>/            one save attempt; `attempt` is rank 0's random id, so no key
        <DeepSpeed shards, rng files>     is ever written by two attempts
        parts/node-<n>.json               what node n uploaded (keys, sizes, sha256, object versions)
        manifest.json                     the checkpoint manifest: written last, create-only
    LATEST                                {"step", "prefix"}: moved by compare-and-swap, never backwards

An attempt counts only when its manifest.json exists; the manifest is written (If-None-Match: *) only
after every node's part manifest is there and every object it lists has been checked. LATEST then
moves by compare-and-swap (If-Match: the ETag read): a 412 means someone else moved it, so it is read
again and moved only if ours is newer. A crash at any moment leaves LATEST naming a complete checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm.checkpoints.catalogue import LATEST_NAME, tag_for
from llm.checkpoints.manifest import MANIFEST_NAME, CheckpointManifest, ManifestError, parse_manifest
from llm.failpoints import failpoint
from llm.storage.local import write_atomic
from llm.storage.s3 import ConflictingWrite, PreconditionFailed, S3Error, S3Storage
from llm.storage.transfer import RemoteFile, download_files, upload_files

POINTER = "LATEST"
RUN_FILES_PREFIX = "run"  # run.json and tokenizer.json: a pulled checkpoint can be used on its own
ATTEMPTS = "ckpt"
PART_FORMAT = 1
MAX_POINTER_TRIES = 50  # compare-and-swap rounds before LATEST is reported contended


class PartManifest(BaseModel):
    """What one node uploaded for one save attempt."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = PART_FORMAT
    node: int = Field(ge=0)
    files: dict[str, RemoteFile]


class Pointer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    step: int = Field(ge=0)
    prefix: str


@dataclass(frozen=True)
class Committed:
    step: int
    prefix: str  # ckpt/<step>-<attempt>


def new_attempt_id() -> str:
    return uuid.uuid4().hex[:8]


def attempt_prefix(step: int, attempt: str) -> str:
    return f"{ATTEMPTS}/{step:08d}-{attempt}"


def _step_of(name: str) -> int | None:
    head, _, attempt = name.partition("-")
    return int(head) if head.isdigit() and attempt else None


class RemoteCheckpoints:
    """The checkpoints under one S3 prefix: upload parts, commit, move LATEST, list, pull, prune."""

    def __init__(self, storage: S3Storage) -> None:
        self.storage = storage

    def describe(self, key: str = "") -> str:
        return self.storage.describe(key)

    # -- writing -----------------------------------------------------------------------------------
    def upload_part(
        self, prefix: str, *, node: int, folder: Path, names: list[str], hashes: dict[str, str]
    ) -> PartManifest:
        """Upload this node's files of one attempt, then its part manifest (after the files)."""
        part_key = f"{prefix}/parts/node-{node:04d}.json"
        existing = self._read_part(part_key)
        if existing is not None:  # a retry after the part was written
            return existing
        done = {
            name: self.storage.head(f"{prefix}/{name}") for name in names
        }  # a retry skips what already landed whole
        todo = [n for n in names if done[n] is None or done[n].size != (folder / n).stat().st_size]  # type: ignore[union-attr]
        files = upload_files(self.storage, prefix, folder, todo, hashes=hashes)
        for name in names:
            if name not in files:
                info = done[name]
                assert info is not None
                files[name] = RemoteFile(sha256=hashes[name], bytes=info.size, version_id=info.version_id)
        part = PartManifest(node=node, files=files)
        failpoint("s3.before_part_manifest")
        with contextlib.suppress(PreconditionFailed):  # written by an earlier try of this same attempt
            self.storage.write_bytes(part_key, part.model_dump_json(indent=1).encode(), if_none_match=True)
        failpoint("s3.after_part_manifest")
        return part

    def _read_part(self, key: str) -> PartManifest | None:
        try:
            return PartManifest.model_validate_json(self.storage.read_bytes(key))
        except FileNotFoundError:
            return None
        except ValidationError as err:
            problem = err.errors()[0]["msg"]
            raise S3Error(f"{self.describe(key)}: not a part manifest of this format ({problem})") from None

    def wait_for_parts(self, prefix: str, *, nodes: int, timeout_s: float) -> dict[str, RemoteFile]:
        """Every node's part manifest, merged; S3Error when one does not come within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        parts: dict[int, PartManifest] = {}
        while True:
            for node in range(nodes):
                if node not in parts:
                    found = self._read_part(f"{prefix}/parts/node-{node:04d}.json")
                    if found is not None:
                        parts[node] = found
            if len(parts) == nodes:
                break
            if time.monotonic() > deadline:
                missing = sorted(set(range(nodes)) - set(parts))
                raise S3Error(
                    f"{self.describe(prefix)}: node(s) {missing} did not upload their part within "
                    f"{timeout_s:.0f} s; the checkpoint is not committed"
                )
            time.sleep(0.5)
        merged: dict[str, RemoteFile] = {}
        for part in parts.values():
            merged.update(part.files)
        return merged

    def commit(self, prefix: str, manifest: CheckpointManifest, *, nodes: int, timeout_s: float) -> None:
        """Check every part against the manifest and every object in the bucket, then write the manifest."""
        uploaded = self.wait_for_parts(prefix, nodes=nodes, timeout_s=timeout_s)
        missing = sorted(set(manifest.files) - set(uploaded))
        if missing:
            raise S3Error(f"{self.describe(prefix)}: no node uploaded {missing[0]}; not committed")
        for name, entry in manifest.files.items():
            record = uploaded[name]
            if (record.sha256, record.bytes) != (entry.sha256, entry.bytes):
                raise S3Error(
                    f"{self.describe(prefix)}/{name}: uploaded bytes differ from the save; not committed"
                )
            info = self.storage.head(f"{prefix}/{name}", version_id=record.version_id)
            if info is None or info.size != entry.bytes:
                raise S3Error(
                    f"{self.describe(prefix)}/{name}: missing or cut short in the bucket; not committed"
                )
        failpoint("s3.before_manifest")
        try:
            self.storage.write_bytes(
                f"{prefix}/{MANIFEST_NAME}", manifest.to_json().encode(), if_none_match=True
            )
        except PreconditionFailed:
            if self.manifest(prefix) != manifest:  # a retry of this same commit finds its own manifest
                raise S3Error(f"{self.describe(prefix)}: another manifest is already there") from None
        failpoint("s3.after_manifest")

    def latest(self) -> tuple[Pointer | None, str | None]:
        """LATEST and its ETag (None, None when there is none)."""
        try:
            data, etag = self.storage.read(POINTER)
        except FileNotFoundError:
            return None, None
        try:
            return Pointer.model_validate_json(data), etag
        except ValidationError:
            raise S3Error(
                f"{self.describe(POINTER)} is not a checkpoint pointer; remove it (it is rebuilt by the next "
                "save) or fix the URI"
            ) from None

    def move_latest(self, step: int, prefix: str) -> bool:
        """Point LATEST at `prefix` unless it already names a step at least as new; True when moved."""
        body = Pointer(step=step, prefix=prefix).model_dump_json().encode()
        for _ in range(MAX_POINTER_TRIES):
            current, etag = self.latest()
            if current is not None and current.step >= step:
                return False  # never backwards: another incarnation got further
            try:
                if etag is None:
                    self.storage.write_bytes(POINTER, body, if_none_match=True)
                else:
                    self.storage.write_bytes(POINTER, body, if_match=etag)
                return True
            except PreconditionFailed:
                continue  # moved under us: read it again
            except ConflictingWrite:
                time.sleep(0.2)  # a concurrent conditional write: try again
        raise S3Error(
            f"{self.describe(POINTER)}: moved by someone else {MAX_POINTER_TRIES} times in a row while "
            f"moving it to step {step}; is another run writing to this URI?"
        )

    # -- reading -----------------------------------------------------------------------------------
    def manifest(self, prefix: str) -> CheckpointManifest:
        try:
            return parse_manifest(self.storage.read_bytes(f"{prefix}/{MANIFEST_NAME}").decode())
        except ManifestError as err:
            raise S3Error(f"{self.describe(prefix)}: {err}") from None

    def attempts(self) -> list[str]:
        """Every attempt prefix (committed or not), oldest step first."""
        names = [n for n in self.storage.children(ATTEMPTS) if _step_of(n) is not None]
        return [f"{ATTEMPTS}/{n}" for n in sorted(names, key=lambda n: (_step_of(n), n))]

    def committed(self) -> list[Committed]:
        """The attempts whose manifest exists, oldest first (stale attempts are never listed)."""
        done = []
        for prefix in self.attempts():
            if self.storage.exists(f"{prefix}/{MANIFEST_NAME}"):
                done.append(Committed(step=_step_of(prefix.rsplit("/", 1)[1]) or 0, prefix=prefix))
        return done

    def files_of(self, prefix: str) -> dict[str, RemoteFile]:
        merged: dict[str, RemoteFile] = {}
        for name in self.storage.children(f"{prefix}/parts"):
            part = self._read_part(f"{prefix}/parts/{name}")
            if part is not None:
                merged.update(part.files)
        return merged

    def resolve(self, step: int | None = None) -> Committed:
        """LATEST (or the committed checkpoint of `step`); S3Error when there is none."""
        if step is None:
            pointer, _ = self.latest()
            if pointer is not None:
                return Committed(step=pointer.step, prefix=pointer.prefix)
            raise S3Error(f"{self.describe()}: no committed checkpoint (no {POINTER}); check the URI")
        for found in reversed(self.committed()):
            if found.step == step:
                return found
        raise S3Error(
            f"{self.describe()}: no committed checkpoint at step {step}; see `python -m llm.checkpoints list`"
        )

    def pull(self, found: Committed, root: Path) -> Path:
        """Download and verify a checkpoint into `root/<tag>` (a run's checkpoints folder), atomically.

        The files go to a hidden folder first; the local manifest is written last and the folder renamed
        into place, so an interrupted pull never leaves a folder that looks complete. Then `latest`."""
        manifest = self.manifest(found.prefix)
        files = self.files_of(found.prefix)
        missing = sorted(set(manifest.files) - set(files))
        if missing:
            raise S3Error(f"{self.describe(found.prefix)}: {missing[0]} is in no part manifest; not pulled")
        final = root / tag_for(manifest.step)
        tmp = root / f".{final.name}.pull-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            download_files(self.storage, found.prefix, {n: files[n] for n in manifest.files}, tmp)
            write_atomic(tmp / MANIFEST_NAME, manifest.to_json())
            if final.exists():
                shutil.rmtree(final)  # an unfinished local save of the same step
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        write_atomic(root / LATEST_NAME, final.name)
        return final

    def push_run_files(self, run_dir: Path, names: list[str]) -> None:
        """Upload the run's own files among `names` that `run_dir` holds (pull_run_files fetches them)."""
        for name in names:
            if (run_dir / name).is_file():
                self.storage.write_bytes(f"{RUN_FILES_PREFIX}/{name}", (run_dir / name).read_bytes())

    def pull_run_files(self, run_dir: Path) -> list[str]:
        """Fetch the run's own files (run.json, tokenizer.json) into `run_dir`; the names found."""
        found = []
        for name in self.storage.children(RUN_FILES_PREFIX):
            write_atomic(run_dir / name, self.storage.read_bytes(f"{RUN_FILES_PREFIX}/{name}"))
            found.append(name)
        return found

    # -- retention ---------------------------------------------------------------------------------
    def prune(self, *, keep_last: int) -> list[str]:
        """Keep the newest `keep_last` committed checkpoints (always LATEST's); delete the rest, and dead
        attempts older than LATEST. A manifest goes first, so a half-deleted checkpoint is never listed."""
        pointer, _ = self.latest()
        if pointer is None:
            return []
        older = [c.prefix for c in self.committed() if c.step < pointer.step]
        keep = {pointer.prefix, *older[max(0, len(older) - (keep_last - 1)) :]}
        removed = []
        for prefix in self.attempts():
            step = _step_of(prefix.rsplit("/", 1)[1])
            if prefix in keep or step is None or step > pointer.step:
                continue  # newer attempts may be uploads in progress; one of LATEST's step never will be
            self.storage.delete(f"{prefix}/{MANIFEST_NAME}")
            failpoint("s3.prune_after_manifest")
            self.storage.delete(prefix)
            removed.append(prefix)
        return removed


def describe_committed(remote: RemoteCheckpoints) -> list[dict[str, object]]:
    """One row per committed checkpoint, for `llm.checkpoints list`."""
    pointer, _ = remote.latest()
    rows = []
    for found in remote.committed():
        manifest = remote.manifest(found.prefix)
        rows.append(
            {
                "step": found.step,
                "prefix": found.prefix,
                "latest": pointer is not None and pointer.prefix == found.prefix,
                "created": manifest.created,
                "bytes": sum(e.bytes for e in manifest.files.values()),
                "files": len(manifest.files),
                "world_size": manifest.world_size,
            }
        )
    return rows
