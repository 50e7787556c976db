"""A run's link to its checkpoint URI: reach it before training, resume from it, upload to it.

Each node's local rank 0 talks to S3 (no shared filesystem is assumed); rank 0 decides which
checkpoint to resume from and every node pulls that one into its own run directory.
"""

from __future__ import annotations

from pathlib import Path

from llm.checkpoints.catalogue import CheckpointCatalogue, tag_for
from llm.checkpoints.remote import Committed, RemoteCheckpoints
from llm.errors import UsageError
from llm.storage.s3 import S3Error, S3Storage
from llm.storage.uri import S3Uri
from llm.train.collectives import Collectives
from llm.train.engine import DistInfo
from llm.train.uploader import CheckpointUploader


def open_remote(uri: S3Uri, *, what: str) -> RemoteCheckpoints:
    """The checkpoints at `uri`, after checking the bucket answers (one clear error if not)."""
    storage = S3Storage(uri)
    try:
        storage.check_bucket()
    except S3Error as err:
        raise UsageError(f"{what} {uri}: {err}") from None
    return RemoteCheckpoints(storage)


def _choose(remote: RemoteCheckpoints, uri: S3Uri, *, local_step: int | None, auto: bool) -> Committed | None:
    """Rank 0: the remote checkpoint to resume from, or None to use the local one (or start afresh)."""
    if uri.version is not None:
        if not uri.version.isdigit():
            raise UsageError(
                f"--resume {uri}: after '@' give a step number (see python -m llm.checkpoints list)"
            )
        found = remote.resolve(int(uri.version))
    else:
        pointer, _ = remote.latest()
        if pointer is None:
            if auto:
                return None
            raise UsageError(f"--resume {uri}: no committed checkpoint there (no LATEST); check the URI")
        found = Committed(step=pointer.step, prefix=pointer.prefix)
    if auto and local_step is not None and local_step >= found.step:
        return None  # the local one is as new: no download
    return found


def resume_from_remote(
    uri: S3Uri,
    root: Path,
    local: Path | None,
    *,
    auto: bool,
    dist_info: DistInfo,
    collectives: Collectives,
) -> tuple[Path | None, str | None]:
    """Every rank: the checkpoint folder to resume from (pulled into `root` where needed) and a problem.

    `local`: the local checkpoint the plan found (for --resume auto); the newer of the two wins."""
    choice, problem = None, None
    if dist_info.is_main:
        try:
            remote = open_remote(uri.unversioned(), what="--resume")
            local_step = CheckpointCatalogue.local(local.parent).manifest(local.name).step if local else None
            choice = _choose(remote, uri, local_step=local_step, auto=auto)
        except UsageError as err:
            problem = str(err)
    choice, problem = collectives.broadcast((choice, problem))
    if problem is not None or choice is None:
        return local, problem
    if dist_info.is_node_main:
        try:
            catalogue = CheckpointCatalogue.local(root)
            tag = tag_for(choice.step)
            have = catalogue.read_manifest(tag)
            remote = RemoteCheckpoints(S3Storage(uri.unversioned()))
            if have is None or have != remote.manifest(choice.prefix) or catalogue.problem(tag) is not None:
                root.mkdir(parents=True, exist_ok=True)
                print(f"pulling {remote.describe(choice.prefix)} into {root}", flush=True)
                remote.pull(choice, root)
            if not (root.parent / "run.json").exists():  # a machine with nothing local: the run's own files
                remote.pull_run_files(root.parent)
        except (UsageError, OSError) as err:
            problem = f"--resume {uri}: {err}"
    problems = [p for p in collectives.gather(problem) if p]
    return root / tag_for(choice.step), problems[0] if problems else None


def start_uploader(
    uri: S3Uri, *, keep_last: int, dist_info: DistInfo
) -> tuple[CheckpointUploader | None, str | None]:
    """Each node's local rank 0: an uploader for `uri`, or the problem that stops the run before training."""
    if not dist_info.is_node_main:
        return None, None
    try:
        remote = open_remote(uri, what="--checkpoint-uri")
    except UsageError as err:
        return None, str(err)
    return CheckpointUploader(remote, keep_last=keep_last), None


def upload_run_files(uploader: CheckpointUploader, run_dir: Path, names: list[str]) -> None:
    """Rank 0: the run's own files (settings, tokenizer) beside its checkpoints; a failure only warns."""
    for name in names:
        try:
            uploader.remote.push_run_files(run_dir, [name])
        except (S3Error, OSError) as err:
            print(f"warning: {name} was not uploaded ({err}); checkpoints still are", flush=True)
