"""The storage protocol: keys are '/'-separated paths under one root (a folder, or an S3 prefix)."""

from __future__ import annotations

from typing import Protocol


class Storage(Protocol):
    """Whole-object reads and writes under a root. A write is atomic: readers see all of it or none."""

    def describe(self, key: str = "") -> str:
        """Where `key` lives, for messages: a path or a URI."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """Bytes in the object at `key`, None when there is none."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        ...

    def write_bytes(self, key: str, data: bytes) -> object:
        """Create or replace the object at `key` atomically (and durably, where the backend can)."""
        ...

    def sha256(self, key: str) -> str:
        """Hex sha256 of the object (streamed, never held in memory whole)."""
        ...

    def children(self, prefix: str = "") -> list[str]:
        """Names directly under `prefix` (objects and 'folders'), sorted."""
        ...

    def files(self, prefix: str = "") -> dict[str, int]:
        """Every object under `prefix`, recursively: key relative to `prefix` -> bytes."""
        ...

    def delete(self, prefix: str) -> None:
        """Remove the object or every object under `prefix`; nothing there is not an error."""
        ...
