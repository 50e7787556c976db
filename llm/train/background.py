"""Checkpoint jobs worked through in order by one background thread while training goes on.

The uploader (to S3) and the node sync (--checkpoint-sync rsync) share it: `submit` a job, ask which
checkpoints are still in progress (local retention keeps them), `drain` at the end, and read each
job's outcome; whether the last one landed decides the run's exit code.
"""

from __future__ import annotations

import queue
import sys
import threading
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Job(Protocol):
    @property
    def tag(self) -> str: ...  # the local checkpoint folder's name


@dataclass(frozen=True)
class Outcome:
    tag: str
    ok: bool
    detail: str


JobT = TypeVar("JobT", bound=Job)
OutcomeT = TypeVar("OutcomeT", bound=Outcome)


class CheckpointJobs(Generic[JobT, OutcomeT]):
    """Subclasses say how one job is done (`_run`) and what the wait at the end is for (`_waiting`)."""

    def __init__(self, name: str) -> None:
        self.outcomes: list[OutcomeT] = []
        self._queue: queue.Queue[JobT] = queue.Queue()
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: JobT) -> None:
        with self._lock:
            self._busy.add(job.tag)
        self._queue.put(job)

    def busy_tags(self) -> set[str]:
        """Local checkpoints still in progress: local retention must keep them."""
        with self._lock:
            return set(self._busy)

    def drain(self) -> list[OutcomeT]:
        """Wait for every submitted job to end (done or given up); their outcomes."""
        if self.busy_tags():
            print(self._waiting(), flush=True)
        self._queue.join()
        return self.outcomes

    def last_failed(self, problem: str) -> bool:
        """After `drain`: True, and `problem` (formatted with the outcome) on stderr, when the last job
        did not land."""
        if self.outcomes and not self.outcomes[-1].ok:
            last = self.outcomes[-1]
            print(f"error: {problem.format(tag=last.tag, detail=last.detail)}", file=sys.stderr, flush=True)
            return True
        return False

    def _run(self, job: JobT) -> OutcomeT:
        raise NotImplementedError

    def _waiting(self) -> str:
        raise NotImplementedError

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self.outcomes.append(self._run(job))
            finally:
                with self._lock:
                    self._busy.discard(job.tag)
                self._queue.task_done()
