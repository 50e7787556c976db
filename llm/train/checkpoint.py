"""Saving and loading checkpoints through the DeepSpeed engine, with the commit protocol.

Every rank writes its DeepSpeed shards and its RNG state into RUN_DIR/checkpoints/<tag>/, hashing
the bytes as they go to disk (`HashingWriter`: nothing is read back on the step path); each node
collects the hashes of what it holds (no shared filesystem is assumed) and rank 0 merges them into the
manifest, which is written last; only then does `latest` move (llm/checkpoints/catalogue.py reads
what this writes). A crash at any moment leaves the previous checkpoint as `latest` and loadable.
With --checkpoint-async the loop waits only while the states are copied into host memory; the writes
and the commit run on a thread (llm/train/async_save.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import torch
from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

from llm.checkpoints.catalogue import CheckpointCatalogue, tag_for
from llm.checkpoints.manifest import CHECKPOINT_FORMAT_VERSION, MANIFEST_NAME, CheckpointManifest, FileEntry
from llm.checkpoints.remote import attempt_prefix, new_attempt_id
from llm.checkpoints.weights import read_adam_states
from llm.errors import UsageError
from llm.failpoints import failpoint
from llm.storage import HashingWriter, Storage
from llm.train.async_save import BackgroundSave, Snapshot
from llm.train.collectives import Collectives
from llm.train.engine import DistInfo, optimizer_order, set_adam_states
from llm.train.node_sync import NodeSync, prune_parts
from llm.train.uploader import CheckpointUploader, UploadJob


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


Written = dict[str, FileEntry]  # what this process wrote through HashingWriter, by absolute path


def _save_hashed(written: Written, obj: Any, path: str | Path, *, zipfile: bool = True) -> None:
    """torch.save(obj, path), hashing the bytes on their way to disk.

    Without the zip format's CRC32 of each record: torch.load never checks it, the sha256 taken here is
    checked on every resume instead, and computing it cost ~0.1 s of a 0.42 s save of 556 MB on the step
    path (docs/benchmarks.md, checkpoint stall). Other zip tools warn about such a file; torch.load reads it.
    """
    crc32 = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        with HashingWriter(Path(path)) as out:
            torch.save(obj, cast("IO[bytes]", out), _use_new_zipfile_serialization=zipfile)
    finally:
        torch.serialization.set_crc32_options(crc32)
    written[str(Path(path).resolve())] = FileEntry(sha256=out.sha256(), bytes=out.bytes)


class ShardWriter:
    """Takes the engine's checkpoint writes: each file is written at once, hashed as its bytes go to disk
    (`_save_hashed`), or, inside `deferring()`, copied into a `Snapshot` to be written by `write`."""

    def __init__(self, zipfile: bool, *, hooked: bool) -> None:
        self.written: Written = {}  # what this process wrote, by absolute path
        self.snapshot = Snapshot()
        self.hooked = hooked  # the engine's writes come here (else it writes them itself)
        self._zipfile = zipfile
        self._deferred: list[tuple[Any, Path, bool]] | None = None

    def save(self, state_dict: Any, path: str | Path, *, zipfile: bool | None = None) -> None:
        zipfile = self._zipfile if zipfile is None else zipfile
        if self._deferred is None:
            _save_hashed(self.written, state_dict, path, zipfile=zipfile)
        else:
            self._deferred.append((self.snapshot.take(Path(path).name, state_dict), Path(path), zipfile))

    @contextmanager
    def deferring(self) -> Iterator[list[tuple[Any, Path, bool]]]:
        """Saves inside the block are copied, not written: the list of them, for `write`."""
        deferred: list[tuple[Any, Path, bool]] = []
        self._deferred = deferred
        try:
            yield deferred
        finally:
            self._deferred = None

    def write(self, deferred: list[tuple[Any, Path, bool]]) -> None:
        for state_dict, path, zipfile in deferred:
            _save_hashed(self.written, state_dict, path, zipfile=zipfile)


def shard_writer(engine: Any) -> ShardWriter:
    """This engine's `ShardWriter`, its checkpoint writes routed through it (once) where they can be.

    Only DeepSpeed's plain torch.save engine is wrapped; with another (decoupled, fast writer) its
    files are read back and hashed after the save, and --checkpoint-async saves on the step path."""
    writer: ShardWriter | None = getattr(engine, "_llm_writer", None)
    if writer is None:
        inner: Any = getattr(engine, "checkpoint_engine", None)
        hooked = type(inner) is TorchCheckpointEngine
        writer = ShardWriter(zipfile=bool(getattr(inner, "zipfile_serialization", True)), hooked=hooked)
        if hooked:
            inner.save = writer.save
        engine._llm_writer = writer
    return writer


def _taken(written: Written, folder: Path) -> Written:
    """The entries of files under `folder`, removed from `written` (by name inside the folder)."""
    root = folder.resolve()
    out: Written = {}
    for path in [p for p in written if Path(p).parent == root]:
        out[Path(path).name] = written.pop(path)
    return out


def _node_files(
    storage: Storage, tag: str, node: str, reports: list[tuple[str, Written]]
) -> dict[str, FileEntry]:
    """Every file of `tag` this node holds, with the hash a rank of this node took as it wrote it;
    a file no rank reported (or whose size changed since) is read back and hashed."""
    known: Written = {}
    for rank_node, entries in reports:
        if rank_node == node:
            known.update(entries)
    files: dict[str, FileEntry] = {}
    for name, size in storage.files(tag).items():
        if name == MANIFEST_NAME:
            continue
        entry = known.get(name)
        if entry is None or entry.bytes != size:
            entry = FileEntry(sha256=storage.sha256(f"{tag}/{name}"), bytes=size)
        files[name] = entry
    return files


def save_checkpoint(
    engine: Any,
    root: Path,
    *,
    step: int,
    state: dict[str, Any],
    dist_info: DistInfo,
    collectives: Collectives,
    keep_last: int,
    remote: bool = False,
    uploader: CheckpointUploader | None = None,
    gathered: bool = False,
    sync: NodeSync | None = None,
    background: BackgroundSave | None = None,
) -> Path | None:
    """Every rank calls this at the same step. `state` holds the manifest's training fields.

    `remote` (the same on every rank): also upload it to the checkpoint URI, in the background, through
    `uploader` (each node's local rank 0 has one). `gathered` (the same on every rank): rank 0 gathers
    the other nodes' shards through `sync` (--checkpoint-sync rsync) and commits once they are here;
    the other nodes keep their parts uncommitted. `background` (--checkpoint-async, the same on every
    rank): return once the states are copied; they are written and committed on its thread, and it
    reports the folder once committed. Returns the committed folder, or None when `background` has it."""
    if background is not None:
        background.wait()  # the save in flight ends first: its buffers are about to be reused
    catalogue = CheckpointCatalogue.local(root)
    storage = catalogue.storage  # the same storage the catalogue commits through
    tag = tag_for(step)
    folder = catalogue.folder(tag)
    if catalogue.is_complete(tag):  # the same step saved twice (e.g. again while paused): committed,
        return folder if background is None else None  # and reported by the background, already
    if folder.exists() and dist_info.is_node_main:
        storage.delete(tag)  # left by a save that crashed: start it afresh, no stale shards
    collectives.barrier()
    writer = shard_writer(engine)
    empty: list[tuple[Any, Path, bool]] = []  # written at once: nothing left for `finish` to write
    with writer.deferring() if background is not None and writer.hooked else nullcontext(empty) as deferred:
        _write_states(engine, writer, root, tag=tag, state=state, folder=folder, dist_info=dist_info)

    def finish(collectives: Collectives) -> Path:
        writer.write(deferred)
        failpoint("checkpoint.before_manifest", at=step)
        _commit(
            storage, catalogue, folder, writer, step=step, state=state, dist_info=dist_info,
            collectives=collectives, keep_last=keep_last, remote=remote, uploader=uploader,
            gathered=gathered, sync=sync,
        )  # fmt: skip
        return folder

    if background is None:
        return finish(collectives)
    background.submit(step, lambda: finish(background.collectives))
    return None


def _write_states(
    engine: Any,
    writer: ShardWriter,
    root: Path,
    *,
    tag: str,
    state: dict[str, Any],
    folder: Path,
    dist_info: DistInfo,
) -> None:
    """DeepSpeed's shards (through `writer` where it is hooked in) and this rank's RNG state."""
    engine.save_checkpoint(str(root), tag=tag, client_state={"llm": state}, save_latest=False)
    writer.save(rng_state(), folder / f"rng_state_rank{dist_info.rank}.pt", zipfile=True)


def _commit(
    storage: Storage,
    catalogue: CheckpointCatalogue,
    folder: Path,
    writer: ShardWriter,
    *,
    step: int,
    state: dict[str, Any],
    dist_info: DistInfo,
    collectives: Collectives,
    keep_last: int,
    remote: bool,
    uploader: CheckpointUploader | None,
    gathered: bool,
    sync: NodeSync | None,
) -> None:
    """Once this rank's files are written: the manifest, `latest`, the upload, retention."""
    tag = folder.name
    # Every rank's hashes reach its node's first rank, which lists what the node holds (no shared
    # filesystem is assumed); rank 0 merges. The first gather is also the barrier after the writes.
    reports = collectives.gather((dist_info.node, _taken(writer.written, folder)))
    files = _node_files(storage, tag, dist_info.node, reports) if dist_info.is_node_main else {}
    by_rank = collectives.gather(files)
    merged: dict[str, FileEntry] = {}
    for node_files in by_rank:
        merged.update(node_files)
    if dist_info.is_node_main and not (gathered and not dist_info.is_main):
        manifest = CheckpointManifest(
            format=CHECKPOINT_FORMAT_VERSION,
            tag=tag,
            step=step,
            world_size=dist_info.world_size,
            created=time.time(),
            **state,
            rng_files=[f"rng_state_rank{r}.pt" for r in range(dist_info.world_size)],
            files=merged,
        )
        if sync is not None:
            sync.submit_save(folder, manifest, _owners(by_rank))
        else:
            catalogue.commit(manifest)
    if remote:
        attempt = collectives.broadcast(new_attempt_id())
        _hand_to_uploader(uploader, by_rank, folder, step=step, attempt=attempt, dist_info=dist_info)
    if gathered and dist_info.is_node_main and not dist_info.is_main:
        prune_parts(folder.parent, keep_last=keep_last)
    elif dist_info.is_node_main:  # every node keeps its own disk in check (no shared filesystem assumed)
        busy = uploader.busy_tags() if uploader is not None else set()
        busy |= sync.busy_tags() if sync is not None else set()
        catalogue.apply_retention(keep_last=keep_last, keep=busy)
    collectives.barrier()


def _hand_to_uploader(
    uploader: CheckpointUploader | None,
    by_rank: list[dict[str, FileEntry]],
    folder: Path,
    *,
    step: int,
    attempt: str,
    dist_info: DistInfo,
) -> None:
    """Each file goes up once, from the first node (in rank order) that holds it."""
    if not dist_info.is_node_main:
        return
    if uploader is None:
        raise RuntimeError("a node's local rank 0 has no checkpoint uploader")
    owners = _owners(by_rank)
    holders = sorted(owners)
    node = holders.index(dist_info.rank)
    uploader.submit(
        UploadJob(
            tag=folder.name,
            step=step,
            prefix=attempt_prefix(step, attempt),
            node=node,
            nodes=len(holders),
            names=owners[dist_info.rank],
            folder=folder,
            commit=dist_info.is_main,
        )
    )


def _owners(by_rank: list[dict[str, FileEntry]]) -> dict[int, list[str]]:
    """For each node's first rank (those that hashed files), the files no earlier node holds."""
    owners: dict[int, list[str]] = {}
    seen: set[str] = set()
    for rank, node_files in enumerate(by_rank):
        if node_files:
            owners[rank] = sorted(set(node_files) - seen)
            seen |= set(node_files)
    return owners


@dataclass(frozen=True)
class Restored:
    step: int
    manifest: CheckpointManifest
    client_state: dict[str, Any]  # what the loop passed to save_checkpoint as `state`


def load_checkpoint(engine: Any, folder: Path, *, dist_info: DistInfo) -> Restored:
    """Restore weights, optimizer, schedule (DeepSpeed) and this rank's RNG state (ours)."""
    manifest = CheckpointCatalogue.local(folder.parent).manifest(folder.name)
    # e.g. one rank's ZeRO-0 layout resumed on several ranks at ZeRO-1 (plan.check_loadable_stage)
    across = manifest.zero_stage != engine.zero_optimization_stage()
    loaded, client_state = engine.load_checkpoint(
        str(folder.parent), tag=folder.name, load_optimizer_states=not across, load_lr_scheduler_states=True
    )
    if loaded is None:
        raise UsageError(
            f"checkpoint {folder}: DeepSpeed could not load it; resume from an earlier checkpoint"
        )
    if across:
        order = optimizer_order(engine.module)
        set_adam_states(engine, read_adam_states(folder, zero_stage=manifest.zero_stage, order=order))
    rng_file = folder / f"rng_state_rank{dist_info.rank}.pt"
    if manifest.world_size == dist_info.world_size and rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    elif dist_info.is_main:
        print(
            f"warning: checkpoint written by {manifest.world_size} ranks, resumed on "
            f"{dist_info.world_size}: random streams will differ from an unbroken run",
            flush=True,
        )
    return Restored(step=manifest.step, manifest=manifest, client_state=dict(client_state["llm"]))
