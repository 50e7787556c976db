"""`--checkpoint-sync rsync`: checkpoints gathered on the first node over ssh, for clusters that share no
filesystem and have no S3.

Each node's ranks write their shards to the node's own disk, as always. Rank 0 then pulls every other
node's part of the checkpoint into its own folder with rsync over ssh (the same ssh, keys and
~/.ssh/config that DeepSpeed's pdsh launcher uses to reach the nodes), on a background thread while
training goes on. It checks each pulled file's size and sha256 against what the node hashed at save
time, and only then writes the checkpoint's manifest and `latest`: the first node holds every
complete checkpoint, and a crash at any moment leaves the previous one complete there (rsync writes
each file under a temporary name and renames it once whole).

On resume, rank 0 picks the checkpoint (its own newest complete one, or the one named), and pushes
it to every node whose copy is missing or differs, before any rank loads; each node then verifies
its copy, as with any resume.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from llm.checkpoints.catalogue import CheckpointCatalogue
from llm.checkpoints.manifest import CheckpointManifest
from llm.storage.local import sha256_file
from llm.train.background import CheckpointJobs, Outcome
from llm.train.collectives import Collectives
from llm.train.engine import DistInfo, Placement

SSH = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
       "-o", "ServerAliveCountMax=3"]  # fmt: skip


def node_mains(ranks: list[Placement]) -> list[Placement]:
    """Each node's first rank, in rank order: node i of the job is entry i."""
    return sorted((p for p in ranks if p.local_rank == 0), key=lambda p: p.rank)


def _rsync(*args: str, timeout_s: float) -> None:
    command = ["rsync", "-a", "--partial-dir=.rsync-partial", "-e", shlex.join(SSH), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise OSError(f"rsync took over {timeout_s:g} s: {shlex.join(command)}") from None
    except FileNotFoundError:
        raise OSError("rsync is not installed on this node; install it (apt install rsync)") from None
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise OSError(f"rsync exited {done.returncode} ({detail})")


def reach_problem(peers: list[Placement]) -> str | None:
    """Rank 0, before training: every other node answers ssh and has rsync (one line naming the node)."""
    for peer in peers:
        try:
            done = subprocess.run(
                [*SSH, peer.address, "rsync --version"], capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired:
            return f"--checkpoint-sync rsync: ssh to {peer.host} ({peer.address}) did not answer within 60 s"
        if done.returncode != 0:
            detail = (done.stderr.strip().splitlines() or ["rsync missing there?"])[-1]
            return (
                f"--checkpoint-sync rsync: ssh {peer.address} ({peer.host}) failed: {detail}; rank 0's node "
                "must reach every node by ssh without a password and each node needs rsync "
                "(or use --checkpoint-uri s3://...)"
            )
    return None


@dataclass(frozen=True)
class SyncJob:
    tag: str
    folder: Path
    manifest: CheckpointManifest
    parts: list[tuple[Placement, list[str]]]  # the node and the files only it holds


class NodeSync(CheckpointJobs[SyncJob, Outcome]):
    """Rank 0's queue of checkpoints to gather from the other nodes, worked through in order."""

    def __init__(self, nodes: list[Placement], *, keep_last: int, timeout_s: float = 3600.0) -> None:
        self.nodes = {p.rank: p for p in nodes}  # each node's first rank
        self.keep_last = keep_last
        self.timeout_s = timeout_s
        super().__init__("checkpoint-sync")

    def submit_save(self, folder: Path, manifest: CheckpointManifest, owners: dict[int, list[str]]) -> None:
        """`owners`: for each node's first rank, the files only that node holds (rank 0's are here)."""
        parts = [(self.nodes[rank], names) for rank, names in sorted(owners.items()) if rank != 0 and names]
        self.submit(SyncJob(tag=folder.name, folder=folder, manifest=manifest, parts=parts))

    def _waiting(self) -> str:
        return "waiting for the last checkpoint to arrive from the other nodes"

    def _run(self, job: SyncJob) -> Outcome:
        return self._gather(job)

    def _gather(self, job: SyncJob) -> Outcome:
        started = time.monotonic()
        try:
            for peer, names in job.parts:
                if not names:
                    continue
                listing = job.folder.parent / f".{job.tag}.{peer.rank}.files"
                listing.write_text("".join(f"{name}\n" for name in names))
                try:
                    _rsync(f"--files-from={listing}", f"{peer.address}:{job.folder}/", f"{job.folder}/",
                           timeout_s=self.timeout_s)  # fmt: skip
                finally:
                    listing.unlink(missing_ok=True)
                for name in names:
                    entry, path = job.manifest.files[name], job.folder / name
                    if (
                        not path.is_file()
                        or path.stat().st_size != entry.bytes
                        or sha256_file(path) != entry.sha256
                    ):
                        raise OSError(
                            f"{name} from {peer.host} does not match the hash taken there at save time"
                        )
        except OSError as err:
            print(
                f"error: checkpoint {job.tag} could not be gathered on this node ({err}); the previous "
                "complete checkpoint stays the one to resume from",
                flush=True,
            )
            return Outcome(job.tag, False, str(err))
        catalogue = CheckpointCatalogue.local(job.folder.parent)
        catalogue.commit(job.manifest)  # every file is here and checked: now it counts
        catalogue.apply_retention(keep_last=self.keep_last, keep=self.busy_tags() - {job.tag})
        count = sum(len(names) for _, names in job.parts)
        print(
            f"checkpoint {job.tag} gathered: {count} files from {len(job.parts)} other node(s) in "
            f"{time.monotonic() - started:.1f} s",
            flush=True,
        )
        return Outcome(job.tag, True, "gathered")


def push_checkpoint(
    folder: Path | None,
    root: Path,
    *,
    ranks: list[Placement],
    dist_info: DistInfo,
    collectives: Collectives,
    timeout_s: float = 3600.0,
) -> tuple[Path | None, str | None]:
    """Every rank, on resume: rank 0's checkpoint (`folder` on rank 0) on every node, and a problem.

    Each node's first rank says whether it holds that checkpoint complete and the same (by manifest);
    rank 0 copies it to those that do not."""
    chosen = collectives.broadcast(
        None
        if folder is None
        else (folder.name, CheckpointCatalogue.local(folder.parent).manifest(folder.name))
    )
    if chosen is None:
        return None, None
    tag, manifest = chosen
    catalogue = CheckpointCatalogue.local(root)
    have = dist_info.is_node_main and (
        catalogue.read_manifest(tag) == manifest and catalogue.problem(tag) is None
    )
    holds = collectives.gather(have or not dist_info.is_node_main)
    problem = None
    if dist_info.is_main:
        source = Path(folder) if folder is not None else root / tag
        for peer in node_mains(ranks)[1:]:
            if holds[peer.rank]:
                continue
            print(f"copying checkpoint {tag} to {peer.host} ({peer.address})", flush=True)
            try:
                _rsync("--mkpath", f"{source}/", f"{peer.address}:{root / tag}/", timeout_s=timeout_s)
            except OSError as err:
                problem = f"--checkpoint-sync rsync: copying {tag} to {peer.host} failed: {err}"
                break
    problem = collectives.broadcast(problem)
    return root / tag, problem


def prune_parts(root: Path, *, keep_last: int) -> None:
    """A node other than the first keeps only its newest `keep_last` parts (never complete there)."""
    catalogue = CheckpointCatalogue.local(root)
    tags = catalogue.tags()
    for tag in tags[: max(0, len(tags) - keep_last - 1)]:  # one more: the newest may not be gathered yet
        catalogue.storage.delete(tag)
