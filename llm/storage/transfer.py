"""Moving a set of files between a local folder and an S3 prefix, every byte checked by sha256.

Uploads record each object's size, sha256 and (on a versioned bucket) its version id; downloads go to a
folder the caller then moves into place, and a file whose bytes do not match its record fails the
whole download with one clear error: nothing half-verified is ever used.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from llm.failpoints import failpoint
from llm.storage.local import sha256_file
from llm.storage.s3 import S3Error, S3Storage


class RemoteFile(BaseModel):
    """One uploaded file, as manifests record it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str
    bytes: int = Field(ge=0)
    version_id: str | None = Field(None, description="the S3 object version, where the bucket keeps versions")


class CorruptObject(S3Error):
    """An object whose bytes differ from its manifest record (tampered, truncated or replaced)."""


def upload_files(
    storage: S3Storage,
    prefix: str,
    folder: Path,
    names: list[str],
    *,
    hashes: dict[str, str] | None = None,
    on_file: Callable[[str], None] | None = None,
) -> dict[str, RemoteFile]:
    """Upload `folder/name` to `prefix/name` for each name, several at once; what each became.

    `hashes`, where the caller already has them (a checkpoint manifest), saves reading a file twice.
    """

    def one(name: str) -> tuple[str, RemoteFile]:
        path = folder / name
        digest = (hashes or {}).get(name) or sha256_file(path)
        info = storage.upload_file(f"{prefix}/{name}", path)
        failpoint("s3.after_file")  # the crash tests' "killed after k files" (k counts in this process)
        if on_file is not None:
            on_file(name)
        return name, RemoteFile(sha256=digest, bytes=info.size, version_id=info.version_id)

    # files in parallel on top of the parts in parallel: small files (RNG states) do not wait in line
    with ThreadPoolExecutor(max_workers=min(4, max(1, len(names)))) as pool:
        return dict(pool.map(one, sorted(names)))


def verify_file(path: Path, record: RemoteFile, *, source: str) -> None:
    size = path.stat().st_size
    if size != record.bytes:
        raise CorruptObject(
            f"{source}: {size} bytes downloaded, the manifest says {record.bytes} (truncated or replaced); "
            "nothing was used. Pull an earlier version, or push this one again",
            code="Corrupt",
        )
    if sha256_file(path) != record.sha256:
        raise CorruptObject(
            f"{source}: its sha256 does not match the manifest (tampered or corrupted); nothing was used. "
            "Pull an earlier version, or push this one again",
            code="Corrupt",
        )


def download_files(
    storage: S3Storage,
    prefix: str,
    files: dict[str, RemoteFile],
    dest: Path,
    *,
    on_file: Callable[[str, int], None] | None = None,
) -> None:
    """Download and verify every file into `dest` (a folder the caller owns and moves into place)."""

    def one(name: str) -> None:
        record = files[name]
        target = dest / name
        storage.download_file(f"{prefix}/{name}", target, version_id=record.version_id)
        verify_file(target, record, source=storage.describe(f"{prefix}/{name}"))
        if on_file is not None:
            on_file(name, record.bytes)

    with ThreadPoolExecutor(max_workers=min(4, max(1, len(files)))) as pool:
        list(pool.map(one, sorted(files)))
