"""Background upload of each checkpoint to S3 while training goes on (one thread per node).

The loop saves locally as before; each node's local rank 0 then hands the files its node owns to this
thread, which uploads them under the save attempt's own prefix and writes the node's part manifest.
On rank 0 the thread then commits: waits for every node's part, checks it, writes the manifest and
moves LATEST (llm/checkpoints/remote.py has the protocol), then prunes. A failed upload is tried
again, then reported; training never waits for it, and LATEST keeps naming the last complete one.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llm.checkpoints.catalogue import CheckpointCatalogue
from llm.checkpoints.manifest import CheckpointManifest
from llm.checkpoints.remote import RemoteCheckpoints
from llm.storage.s3 import S3Error
from llm.train.background import CheckpointJobs, Outcome


@dataclass(frozen=True)
class UploadJob:
    tag: str  # the local checkpoint folder's name
    step: int
    prefix: str  # the attempt's prefix, ckpt/<step>-<attempt>
    node: int
    nodes: int
    names: list[str]  # the files this node uploads
    folder: Path
    commit: bool  # rank 0: commit once every node's part is there


@dataclass(frozen=True)
class UploadOutcome(Outcome):
    seconds: float
    bytes: int


class CheckpointUploader(CheckpointJobs[UploadJob, UploadOutcome]):
    """A queue of checkpoint uploads worked through in order by one thread."""

    def __init__(
        self,
        remote: RemoteCheckpoints,
        *,
        keep_last: int,
        tries: int | None = None,
        retry_wait_s: float | None = None,
        commit_timeout_s: float = 600.0,
    ) -> None:
        self.remote = remote
        self.keep_last = keep_last
        settings = remote.storage.settings  # LLM_S3_UPLOAD_TRIES, LLM_S3_UPLOAD_RETRY_WAIT
        self.tries = tries or settings.upload_tries
        self.retry_wait_s = settings.upload_retry_wait if retry_wait_s is None else retry_wait_s
        self.commit_timeout_s = commit_timeout_s
        super().__init__("checkpoint-upload")

    def _waiting(self) -> str:
        return f"waiting for checkpoint uploads to {self.remote.describe()} to finish"

    def _run(self, job: UploadJob) -> UploadOutcome:
        return self._upload(job)

    def _upload(self, job: UploadJob) -> UploadOutcome:
        started = time.monotonic()
        manifest = CheckpointCatalogue.local(job.folder.parent).manifest(job.tag)
        hashes = {name: manifest.files[name].sha256 for name in job.names}
        size = sum(manifest.files[name].bytes for name in job.names)
        error: Exception | None = None
        for attempt in range(1, self.tries + 1):
            try:
                self.remote.upload_part(
                    job.prefix, node=job.node, folder=job.folder, names=job.names, hashes=hashes
                )
                if job.commit:
                    self.remote.commit(job.prefix, manifest, nodes=job.nodes, timeout_s=self.commit_timeout_s)
                    moved = self.remote.move_latest(job.step, job.prefix)
                    seconds = time.monotonic() - started
                    where = self.remote.describe(job.prefix)
                    note = "" if moved else " (LATEST already names a later step: left as it is)"
                    print(
                        f"checkpoint {job.tag} uploaded to {where} ({len(manifest.files)} files, "
                        f"{manifest_bytes(manifest) / 1e6:.1f} MB, {seconds:.1f} s){note}",
                        flush=True,
                    )
                    self._prune()
                return UploadOutcome(job.tag, True, "uploaded", time.monotonic() - started, size)
            except (S3Error, OSError) as err:
                error = err
                if attempt < self.tries:
                    time.sleep(self.retry_wait_s * attempt)
        detail = str(error).splitlines()[0] if error else "unknown error"
        print(
            f"warning: checkpoint {job.tag}: upload to {self.remote.describe(job.prefix)} failed after "
            f"{self.tries} tries ({detail}); {self._latest_words()}. Training goes on; the checkpoint is "
            f"kept locally in {job.folder} and the next one is uploaded afresh",
            file=sys.stderr,
            flush=True,
        )
        return UploadOutcome(job.tag, False, detail, time.monotonic() - started, size)

    def _prune(self) -> None:
        """Retention after a commit; a failure leaves extra checkpoints, removed after the next save."""
        try:
            self.remote.prune(keep_last=self.keep_last)
        except (S3Error, OSError) as err:
            detail = str(err).splitlines()[0]
            print(f"warning: old checkpoints at {self.remote.describe()} not pruned ({detail})", flush=True)

    def _latest_words(self) -> str:
        try:
            pointer, _ = self.remote.latest()
        except S3Error:
            return "LATEST is unchanged"
        if pointer is None:
            return "no checkpoint has been committed there yet"
        return f"LATEST still names step {pointer.step} ({self.remote.describe(pointer.prefix)})"


def manifest_bytes(manifest: CheckpointManifest) -> int:
    return sum(entry.bytes for entry in manifest.files.values())
