"""Versioned datasets in S3: push a folder as a new version, list the versions, pull one back verified.

Layout under a dataset URI (`s3://bucket/datasets/NAME`):

    versions/<VERSION>/<files...>
    versions/<VERSION>/manifest.json     written last, create-only (If-None-Match: *)

A version exists once its manifest does: a push that dies half-way leaves objects no listing shows.
VERSION is the UTC second of the push and a random suffix (`20261201T195500Z-3fa9c1`), so versions
sort by time as text; the create-only manifest refuses a second writer of the same id. The manifest
records every file's size, sha256 and (on a bucket with versioning) object version id, so a pull
fetches exactly the bytes pushed, even after an object was overwritten, and checks each of them.

A prepared folder (`is_prepared`: train.bin, val.bin, tokenizer.json, meta.json) is pushed as
"prepared"; any other folder of text files as "raw", which a pull then prepares locally. A pull
downloads into a hidden sibling folder, verifies every file, writes its marker (`.pulled.json`: the
manifest) last and renames the folder into place, so an interrupted, failed or disk-full pull never
leaves a folder that looks complete, and a folder whose marker matches the version is not downloaded
again.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from llm.config import DataConfig
from llm.data.corpus import LocalFiles
from llm.data.prepare import DATASET_FORMAT_VERSION, SPLITS, is_prepared, prepare_dataset
from llm.errors import UsageError
from llm.storage.local import write_atomic
from llm.storage.s3 import PreconditionFailed, S3Storage
from llm.storage.transfer import RemoteFile, download_files, upload_files
from llm.storage.uri import S3Uri, parse_s3_uri

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
MARKER = ".pulled.json"  # hidden: the corpus walk of a pulled raw folder skips it
PREPARED_FILES = ("meta.json", "tokenizer.json", "train.bin", "val.bin")
VERSION_TIME = "%Y%m%dT%H%M%SZ"
VERSION_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")  # prepare.py names a prepared folder by its fingerprint


class DatasetManifest(BaseModel):
    """One version of a dataset: what was pushed, from what, and after which version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = Field(MANIFEST_FORMAT, description="this record's format; a reader checks it")
    version: str = Field(description="UTC time of the push and a random suffix; sorts by time")
    kind: Literal["prepared", "raw"] = Field(description="token files, or text a pull prepares")
    created: str = Field(description="when the push finished its uploads, ISO 8601 UTC")
    parent: str | None = Field(description="the newest version when this one was pushed (lineage)")
    files: dict[str, RemoteFile] = Field(description="name under the version -> sha256, bytes, version id")
    total_bytes: int = Field(ge=0)
    tokens: dict[str, int] | None = Field(None, description="prepared: tokens per split")
    tokenizer_sha256: str | None = Field(None, description="prepared: sha256 of tokenizer.json")
    vocab_size: int | None = None
    fingerprint: str | None = Field(None, description="prepared: the data cache folder's fingerprint")
    config_hash: str | None = Field(None, description="prepared: hash of meta.json's preparation settings")
    code: dict[str, Any] = Field(description="git commit of the pushing checkout and whether it was dirty")

    @property
    def total_tokens(self) -> int | None:
        return sum(self.tokens.values()) if self.tokens else None


@dataclass(frozen=True)
class Pulled:
    uri: str  # s3://bucket/prefix@VERSION
    manifest: DatasetManifest
    folder: Path  # the version's files, as pushed
    path: Path  # the prepared dataset: `folder`, or where a raw version was prepared
    downloaded: bool  # False: a verified copy was there already


def parse_dataset_uri(text: str, *, what: str = "dataset URI", allow_version: bool = True) -> S3Uri:
    """`s3://BUCKET/PREFIX[@VERSION]` with a prefix (a dataset is never the bucket's whole root)."""
    uri = parse_s3_uri(text, what=what, allow_version=allow_version)
    if not uri.prefix:
        raise UsageError(
            f"{what} {text!r}: no dataset name after the bucket; give s3://{uri.bucket}/datasets/NAME"
        )
    return uri


def _storage(uri: S3Uri) -> S3Storage:
    return S3Storage(uri)


# -- manifests ---------------------------------------------------------------------------------------
def _read_manifest(storage: S3Storage, version: str) -> DatasetManifest | None:
    key = f"versions/{version}/{MANIFEST}"
    try:
        data = json.loads(storage.read_bytes(key))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise UsageError(f"{storage.describe(key)}: not JSON ({err}); push the version again") from None
    found = data.get("format") if isinstance(data, dict) else None
    if found != MANIFEST_FORMAT:
        raise UsageError(
            f"{storage.describe(key)}: dataset manifest format {found!r}, this checkout reads format "
            f"{MANIFEST_FORMAT}; update the code (git pull) or push the data again"
        )
    try:
        manifest = DatasetManifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(
            f"{storage.describe(key)}: not a dataset manifest ({where}: {first['msg']})"
        ) from None
    if manifest.version != version:
        raise UsageError(f"{storage.describe(key)}: names version {manifest.version}, not {version}")
    return manifest


def _version_names(storage: S3Storage) -> list[str]:
    return sorted(name for name in storage.children("versions") if VERSION_ID.match(name))


def _newest(storage: S3Storage) -> DatasetManifest | None:
    for name in reversed(_version_names(storage)):
        manifest = _read_manifest(storage, name)
        if manifest is not None:  # a version without its manifest was never finished
            return manifest
    return None


def versions(uri: str) -> list[DatasetManifest]:
    """Every complete version of the dataset at `uri`, oldest first."""
    target = parse_dataset_uri(uri, allow_version=False)
    storage = _storage(target)
    storage.check_bucket()
    found = (_read_manifest(storage, name) for name in _version_names(storage))
    return [m for m in found if m is not None]


def find_version(uri: str, *, what: str = "dataset URI") -> tuple[S3Storage, S3Uri, DatasetManifest]:
    """The manifest `uri` names: its @VERSION, or the newest complete version."""
    target = parse_dataset_uri(uri, what=what)
    storage = _storage(target)
    storage.check_bucket()
    base = str(target.unversioned())
    manifest = _read_manifest(storage, target.version) if target.version else _newest(storage)
    if manifest is None and target.version:
        raise UsageError(
            f"{what} {uri}: no version {target.version} (or it was never completed); "
            f"`python -m llm.data versions {base}` lists the versions there"
        )
    if manifest is None:
        raise UsageError(
            f"{what} {uri}: no dataset versions there; push one with "
            f"`python -m llm.data push DATA_DIR {base}`"
        )
    return storage, target, manifest


# -- push --------------------------------------------------------------------------------------------
def _pushable(folder: Path) -> tuple[Literal["prepared", "raw"], list[str]]:
    if not folder.is_dir():
        raise UsageError(
            f"{folder}: no such folder; give a prepared dataset (data/cache/<fingerprint>) or a "
            "folder of text files"
        )
    if (folder / "meta.json").exists():
        if not is_prepared(folder):
            raise UsageError(
                f"{folder}: has a meta.json but is not a complete prepared dataset of format "
                f"{DATASET_FORMAT_VERSION}; prepare it again (a training run with --data does) or push "
                "its text"
            )
        return "prepared", list(PREPARED_FILES)
    source = LocalFiles(str(folder))  # the same walk as --data FOLDER: hidden and binary files skipped
    names = {Path(doc.path).relative_to(source.root).as_posix() for doc in source.documents()}
    return "raw", sorted(names)


def _new_version_id(after: str | None) -> str:
    """Now (UTC, to the second), later than `after` even when clocks differ, and a random suffix."""
    now = datetime.now(UTC).replace(microsecond=0)
    if after:
        previous = datetime.strptime(after.split("-")[0], VERSION_TIME).replace(tzinfo=UTC)
        now = max(now, previous + timedelta(seconds=1))
    return f"{now.strftime(VERSION_TIME)}-{secrets.token_hex(3)}"


def _prepared_fields(folder: Path) -> dict[str, Any]:
    from llm.train.rundir import config_hash

    meta = json.loads((folder / "meta.json").read_text())
    settings = {k: meta.get(k) for k in ("format_version", "requested_vocab_size", "val_fraction", "dtype")}
    return {
        "tokens": {s: int(meta["splits"][s]["tokens"]) for s in SPLITS},
        "tokenizer_sha256": meta["tokenizer_sha256"],
        "vocab_size": meta.get("vocab_size"),
        "fingerprint": folder.name if FINGERPRINT.match(folder.name) else None,
        "config_hash": config_hash(settings),
    }


def push(folder: Path, uri: str, *, progress: bool = False) -> str:
    """Upload `folder` as a new version of the dataset at `uri`; its version id."""
    from llm.train.rundir import code_version

    folder = Path(folder)
    kind, names = _pushable(folder)
    target = parse_dataset_uri(uri, allow_version=False)
    storage = _storage(target)
    storage.check_bucket()
    parent = _newest(storage)
    version = _new_version_id(parent.version if parent else None)
    prefix = f"versions/{version}"
    sizes = {name: (folder / name).stat().st_size for name in names}
    with _bar(f"push {target}@{version}", sum(sizes.values()), progress) as bar:
        files = upload_files(storage, prefix, folder, names, on_file=lambda name: bar.update(sizes[name]))
    manifest = DatasetManifest(
        version=version,
        kind=kind,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        parent=parent.version if parent else None,
        files=files,
        total_bytes=sum(f.bytes for f in files.values()),
        code=code_version(),
        **(_prepared_fields(folder) if kind == "prepared" else {}),
    )
    try:  # last, create-only: the version becomes visible whole or not at all
        storage.write_bytes(
            f"{prefix}/{MANIFEST}", _json(manifest.model_dump(mode="json")), if_none_match=True
        )
    except PreconditionFailed:
        raise UsageError(
            f"{storage.describe(prefix)}: another push took this version id; push again"
        ) from None
    return version


def _bar(desc: str, total: int, progress: bool) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress, file=sys.stderr)


def _json(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


# -- pull --------------------------------------------------------------------------------------------
def cache_dir(data_cache: Path, uri: S3Uri, version: str) -> Path:
    """Where training keeps a pulled version: `<data_cache>/s3/<bucket>/<prefix>/<version>`."""
    return Path(data_cache) / "s3" / uri.bucket / uri.prefix / version


def _marker(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _complete(folder: Path, manifest: DatasetManifest) -> bool:
    """A copy of `manifest`'s version, verified when it was pulled (the marker is written last)."""
    marker = _marker(folder)
    if marker is None or marker.get("manifest") != manifest.model_dump(mode="json"):
        return False
    try:
        return all((folder / name).stat().st_size == f.bytes for name, f in manifest.files.items())
    except OSError:
        return False


def _disk_problem(err: OSError, dest: Path, uri: str, manifest: DatasetManifest) -> UsageError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return UsageError(
            f"{dest}: no space left on the device while pulling {uri} ({manifest.total_bytes / 1e6:.1f} MB); "
            "nothing was kept. Free some space or pull into another folder"
        )
    return UsageError(f"{dest}: cannot write the pulled files ({err.strerror or err}); nothing was kept")


def _move_into_place(tmp: Path, dest: Path, manifest: DatasetManifest) -> None:
    if dest.exists():
        if _complete(dest, manifest):
            return  # another process pulled the same version meanwhile
        shutil.rmtree(dest)  # an older or damaged pulled copy (checked to be ours), or an empty folder
    try:
        os.rename(tmp, dest)
    except OSError:
        if not _complete(dest, manifest):  # lost a race only if the winner's copy is whole
            raise


def _fetch(storage: S3Storage, uri: str, manifest: DatasetManifest, dest: Path, *, progress: bool) -> bool:
    """Download, verify and move the version into `dest`; False when a verified copy is there."""
    if _complete(dest, manifest):
        return False
    if dest.exists() and (not dest.is_dir() or (_marker(dest) is None and any(dest.iterdir()))):
        raise UsageError(f"{dest}: exists and is not a pulled dataset; give a new or empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.pull-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    marker = {"uri": uri, "pulled": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        tmp.mkdir()
        with _bar(f"pull {uri}", manifest.total_bytes, progress) as bar:
            download_files(
                storage,
                f"versions/{manifest.version}",
                manifest.files,
                tmp,
                on_file=lambda _, n: bar.update(n),
            )
        # last: a folder with this marker holds every file, each checked against the manifest
        write_atomic(tmp / MARKER, _json({**marker, "manifest": manifest.model_dump(mode="json")}))
        _move_into_place(tmp, dest, manifest)
    except FileNotFoundError as err:
        if not str(err).startswith("s3://"):
            raise _disk_problem(err, dest, uri, manifest) from None
        raise UsageError(
            f"{err}: missing, though version {manifest.version}'s manifest lists it (deleted since?); "
            "pull another version or push the data again"
        ) from None
    except OSError as err:
        raise _disk_problem(err, dest, uri, manifest) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def pull(
    uri: str,
    dest: Path | None = None,
    *,
    data: DataConfig | None = None,
    progress: bool = False,
    what: str = "dataset URI",
) -> Pulled:
    """Fetch `uri`'s @VERSION (or the newest) into `dest`, every file verified; a raw version is then
    prepared with `data`'s settings into its data cache. `dest` None: the data cache's s3/ folder."""
    storage, target, manifest = find_version(uri, what=what)
    data = data or DataConfig()  # type: ignore[call-arg]  # every field has a default
    folder = Path(dest) if dest is not None else cache_dir(data.data_cache, target, manifest.version)
    exact = f"{target.unversioned()}@{manifest.version}"
    downloaded = _fetch(storage, exact, manifest, folder, progress=progress)
    path = folder
    if manifest.kind == "raw":
        path = prepare_dataset(data.model_copy(update={"data": str(folder)}), progress=progress)
    return Pulled(uri=exact, manifest=manifest, folder=folder, path=path, downloaded=downloaded)


def provenance(dataset: Path) -> dict[str, str] | None:
    """The S3 version a prepared dataset came from (`uri`, `version`), or None for local data.

    For a raw version, the prepared folder's meta.json names the pulled text folder as its source."""
    marker = _marker(dataset)
    if marker is None:
        try:
            source = json.loads((dataset / "meta.json").read_text()).get("source", "")
        except (OSError, ValueError, AttributeError):
            return None
        if not source.startswith("local folder: "):
            return None
        marker = _marker(Path(source.removeprefix("local folder: ")))
    if marker is None or "uri" not in marker:
        return None
    base, _, version = str(marker["uri"]).rpartition("@")
    return {"uri": base, "version": version}
