"""Storage over a local folder: atomic writes by temporary file, fsync and rename."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_OVERLAP_FROM = 1 << 20  # smaller writes are hashed inline: a thread hand-off costs more than it saves


class HashingWriter(io.RawIOBase):
    """A writable file that hashes the bytes as they go to disk, so nothing is read back to hash them.

    Large writes are hashed on a helper thread while this one writes them (both release the GIL), and
    each write returns only when both are done: the caller's buffer is never used after it returns.
    Writing N bytes then costs about max(write, hash), not write + read + hash.
    """

    _pool: ThreadPoolExecutor | None = None

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._file = self.path.open("wb")
        self._digest = hashlib.sha256()
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast("B")
        if len(view) < _OVERLAP_FROM:
            self._digest.update(view)
            self._file.write(view)
        else:
            if HashingWriter._pool is None:
                HashingWriter._pool = ThreadPoolExecutor(1, thread_name_prefix="sha256")
            hashed = HashingWriter._pool.submit(self._digest.update, view)
            self._file.write(view)
            hashed.result()
        self.bytes += len(view)
        return len(view)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()

    def sha256(self) -> str:
        return self._digest.hexdigest()


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write via a temporary file, fsync, rename: readers see the old file or the new, never half."""
    payload = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _hidden(name: str) -> bool:
    return name.startswith(".")  # temporary files of writes in progress


class LocalStorage:
    """Keys are paths relative to `root`. Hidden entries (writes in progress) are never listed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def describe(self, key: str = "") -> str:
        return str(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        write_atomic(self._path(key), data)

    def sha256(self, key: str) -> str:
        return sha256_file(self._path(key))

    def children(self, prefix: str = "") -> list[str]:
        folder = self._path(prefix)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not _hidden(p.name))

    def files(self, prefix: str = "") -> dict[str, int]:
        folder = self._path(prefix)
        if not folder.is_dir():
            return {}
        return {
            path.relative_to(folder).as_posix(): path.stat().st_size
            for path in sorted(folder.rglob("*"))
            if path.is_file() and not _hidden(path.name)
        }

    def delete(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def local_path(self, key: str = "") -> Path:
        return self._path(key)
