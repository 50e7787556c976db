"""A run's checkpoints: list them, tell complete from unfinished, resolve what the user named, retain.

Layout under RUN_DIR/checkpoints/ (any `Storage`; local folders today):
    step_00000100/            DeepSpeed's shards, rng_state_rank<r>.pt for each rank, manifest.json
    latest                    the tag of the newest complete checkpoint (DeepSpeed's own format)

A checkpoint counts only when its manifest is valid and every file it lists is there with its size
(and, when verified, its sha256). The manifest is written last and `latest` moved after it, so a crash
at any moment leaves the previous checkpoint as `latest` and loadable.
"""

from __future__ import annotations

from pathlib import Path

from llm.checkpoints.manifest import MANIFEST_NAME, CheckpointManifest, ManifestError, parse_manifest
from llm.errors import UsageError
from llm.storage import LocalStorage, Storage

LATEST_NAME = "latest"
TAG_PREFIX = "step_"


def tag_for(step: int) -> str:
    return f"{TAG_PREFIX}{step:08d}"


class CheckpointCatalogue:
    """The checkpoints in one storage root (a run's `checkpoints/`)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @classmethod
    def local(cls, root: Path) -> CheckpointCatalogue:
        return cls(LocalStorage(root))

    def describe(self, tag: str = "") -> str:
        return self.storage.describe(tag)

    def folder(self, tag: str) -> Path:
        """The local folder of `tag` (DeepSpeed and torch.load read files; S3 checkpoints are pulled
        first: llm/checkpoints/remote.py)."""
        if not isinstance(self.storage, LocalStorage):
            raise TypeError(f"{self.storage.describe()}: not a local folder; pull the checkpoint first")
        return self.storage.local_path(tag)

    def tags(self) -> list[str]:
        """Checkpoint tags (complete or not), oldest first."""
        return [name for name in self.storage.children() if name.startswith(TAG_PREFIX)]

    def manifest(self, tag: str) -> CheckpointManifest:
        """The tag's manifest; FileNotFoundError when there is none, ManifestError when it is unusable."""
        return parse_manifest(self.storage.read_bytes(f"{tag}/{MANIFEST_NAME}").decode())

    def read_manifest(self, tag: str) -> CheckpointManifest | None:
        try:
            return self.manifest(tag)
        except (OSError, ManifestError):
            return None

    def problem(self, tag: str, *, verify_hashes: bool = False) -> str | None:
        """Why `tag` is not a usable checkpoint, or None when it is."""
        try:
            manifest = self.manifest(tag)
        except FileNotFoundError:
            return f"no {MANIFEST_NAME} (the save did not finish)"
        except (OSError, UnicodeDecodeError) as err:
            return f"{MANIFEST_NAME} cannot be read ({err})"
        except ManifestError as err:
            return str(err)
        for name, entry in manifest.files.items():
            size = self.storage.size(f"{tag}/{name}")
            if size is None:
                return f"{name} is missing"
            if size != entry.bytes:
                return f"{name} has {size} bytes, the manifest says {entry.bytes}"
            if verify_hashes and self.storage.sha256(f"{tag}/{name}") != entry.sha256:
                return f"{name} does not match its sha256 in the manifest (corrupt)"
        return None

    def is_complete(self, tag: str) -> bool:
        return self.problem(tag) is None

    def latest(self) -> str | None:
        try:
            return self.storage.read_bytes(LATEST_NAME).decode().strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def newest_complete(self) -> str | None:
        """`latest` when it is complete, else the newest complete checkpoint."""
        pointer = self.latest()
        if pointer is not None and self.is_complete(pointer):
            return pointer
        complete = [tag for tag in self.tags() if self.is_complete(tag)]
        return complete[-1] if complete else None

    def commit(self, manifest: CheckpointManifest) -> None:
        """Make a checkpoint whose files are all written count: the manifest, then `latest`."""
        self.storage.write_bytes(f"{manifest.tag}/{MANIFEST_NAME}", manifest.to_json().encode())
        self.storage.write_bytes(LATEST_NAME, manifest.tag.encode())

    def apply_retention(self, *, keep_last: int, keep: set[str] | None = None) -> None:
        """Keep the newest `keep_last` complete checkpoints (and `keep`: uploads in progress); drop older
        ones and older unfinished saves."""
        tags = self.tags()
        complete = [tag for tag in tags if self.is_complete(tag)]
        if not complete:
            return
        keep = set(complete[-keep_last:]) | (keep or set())
        for tag in tags:
            if tag not in keep and tag < complete[-1]:  # newer ones may be saves in progress
                self.storage.delete(tag)


def _split(folder: Path) -> tuple[CheckpointCatalogue, str]:
    return CheckpointCatalogue.local(folder.parent), folder.name


def read_manifest(folder: Path) -> CheckpointManifest | None:
    catalogue, tag = _split(folder)
    return catalogue.read_manifest(tag)


def checkpoint_problem(folder: Path, *, verify_hashes: bool = False) -> str | None:
    catalogue, tag = _split(folder)
    return catalogue.problem(tag, verify_hashes=verify_hashes)


def is_complete_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and checkpoint_problem(folder) is None


def newest_complete(root: Path) -> Path | None:
    """The folder of `root`'s newest complete checkpoint (`latest` when complete), or None."""
    catalogue = CheckpointCatalogue.local(root)
    tag = catalogue.newest_complete()
    return None if tag is None else catalogue.folder(tag)


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
    catalogue = CheckpointCatalogue.local(root)
    if root != path or catalogue.latest() is not None or catalogue.tags():
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
