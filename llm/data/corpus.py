"""Text sources: the built-in corpus (the interpreter's standard library) and local files.

A source lists its documents in a stable, sorted order and reads each one. A document is a whole
file, or a chunk of a large one: a file above `CHUNK_BYTES` is cut at line boundaries into chunks
named `file.txt#000012`, and a lone file (`--data file.txt`, or a folder or glob holding one file)
into about `SINGLE_FILE_CHUNKS` chunks, so the train/val split (by document) has something to split
and memory stays bounded however large a file is. An `s3://` dataset is not a text source: it is a
version pulled into the data cache (llm/data/remote.py) and then read as a local folder.
"""

from __future__ import annotations

import glob
import itertools
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from llm.errors import UsageError

# folders of the standard library that are tests, third-party packages or caches, not library code
STDLIB_EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "testmock"}
)
BINARY_SNIFF_BYTES = 8192
GLOB_CHARS = frozenset("*?[")
CHUNK_BYTES = 1 << 20  # files above this are cut into chunks of about this size
SINGLE_FILE_CHUNKS = 20  # a lone file is cut into about this many chunks (a 5% val share holds one)...
MIN_CHUNK_BYTES = 4 << 10  # ...of at least this size, unless the file is too small for two of them
NEWLINE_SEARCH_BYTES = 64 << 10  # how far past the target a chunk may run to end on a line boundary


@dataclass(frozen=True)
class Document:
    """A file of a source, or a chunk of one. `name` is its stable id, relative to the source's root
    (posix slashes), with `#NNNNNN` appended for a chunk."""

    name: str
    path: str  # where the source reads it from: a local path here, an object key for remote sources
    size: int  # bytes on disk
    offset: int = 0  # where a chunk starts in its file

    def continues(self, previous: Document) -> bool:
        """True when this chunk's text follows `previous`'s directly in the same file."""
        return self.path == previous.path and self.offset == previous.offset + previous.size


class TextSource(Protocol):
    def describe(self) -> str:
        """One line saying what this source is; part of the dataset fingerprint."""
        ...

    def documents(self) -> list[Document]:
        """Every document (file or chunk), sorted by name; the same list on every call and every rank."""
        ...

    def read_bytes(self, doc: Document) -> bytes: ...

    def read_text(self, doc: Document) -> str: ...


def decode_text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class _LocalReader:
    def read_bytes(self, doc: Document) -> bytes:
        with open(doc.path, "rb") as f:
            f.seek(doc.offset)
            return f.read(doc.size)

    def read_text(self, doc: Document) -> str:
        return decode_text(self.read_bytes(doc))


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_binary(path: Path) -> bool:
    """A NUL byte in the first 8 KB marks a file as binary (the heuristic git and grep use)."""
    with path.open("rb") as f:
        return b"\0" in f.read(BINARY_SNIFF_BYTES)


def _walk(root: Path, *, excluded_dirs: frozenset[str] = frozenset()) -> list[Path]:
    """Non-empty regular files under `root`, skipping hidden and excluded folders; sorted."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not _is_hidden(d) and d not in excluded_dirs]
        found.extend(Path(folder, f) for f in files if not _is_hidden(f))
    return sorted(p for p in found if p.is_file() and p.stat().st_size > 0)


def _documents(path: Path, root: Path, *, chunk_bytes: int | None = None) -> list[Document]:
    """The file as one document, or as chunks of about `chunk_bytes` (CHUNK_BYTES) if it is larger."""
    name, size = path.relative_to(root).as_posix(), path.stat().st_size
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    if size <= chunk_bytes:
        return [Document(name=name, path=str(path), size=size)]
    bounds = chunk_bounds(path, chunk_bytes)
    return [
        Document(name=f"{name}#{i:06d}", path=str(path), size=end - start, offset=start)
        for i, (start, end) in enumerate(itertools.pairwise(bounds))
    ]


def single_file_chunk_bytes(size: int) -> int:
    """Chunk size for a lone file: ~SINGLE_FILE_CHUNKS chunks within [MIN_CHUNK_BYTES, CHUNK_BYTES],
    and never fewer than two chunks, so even a few-KB file holds out a validation chunk."""
    target = min(CHUNK_BYTES, max(MIN_CHUNK_BYTES, size // SINGLE_FILE_CHUNKS))
    return target if size >= 2 * target else max(1, size // 2)


def chunk_bounds(path: Path, chunk_bytes: int) -> list[int]:
    """Offsets [0, ..., size] that cut the file into chunks of about `chunk_bytes`.

    Each cut falls just after the first newline at or past the target, so a chunk holds whole lines
    (and, in UTF-8, whole characters). A line longer than NEWLINE_SEARCH_BYTES is cut at the target,
    moved back to a character boundary, so a chunk never grows without bound.
    """
    size = path.stat().st_size
    bounds = [0]
    with path.open("rb") as f:
        while size - bounds[-1] > chunk_bytes:
            target = bounds[-1] + chunk_bytes
            f.seek(target - 1)  # a newline just before the target also ends a chunk there
            window = f.read(NEWLINE_SEARCH_BYTES)
            newline = window.find(b"\n")
            cut = target + newline if newline >= 0 else _char_start(f, target, floor=bounds[-1] + 1)
            if cut >= size:
                break
            bounds.append(cut)
    bounds.append(size)
    return bounds


def _char_start(f: BinaryIO, target: int, *, floor: int) -> int:
    """`target`, moved back (not below `floor`) past UTF-8 continuation bytes to a character's start."""
    low = max(floor, target - 3)  # a UTF-8 character has at most 3 continuation bytes
    f.seek(low)
    around = f.read(target - low + 1)  # the bytes low..target
    cut = target
    while cut > low and around[cut - low] & 0xC0 == 0x80:
        cut -= 1
    return cut


class BuiltinCorpus(_LocalReader):
    """The running interpreter's standard-library `.py` files: real code, on every machine, no download."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or sysconfig.get_paths()["stdlib"]).resolve()

    def describe(self) -> str:
        version = ".".join(str(v) for v in sys.version_info[:3])
        return f"built-in corpus: Python {version} standard library .py files in {self.root}"

    def documents(self) -> list[Document]:
        paths = _walk(self.root, excluded_dirs=STDLIB_EXCLUDED_DIRS)
        return [doc for p in paths if p.suffix == ".py" for doc in _documents(p, self.root)]


class LocalFiles(_LocalReader):
    """A text file, a folder (walked recursively, binary files and hidden entries skipped) or a glob."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        expanded = os.path.expanduser(spec)
        if any(c in GLOB_CHARS for c in expanded):
            self.root, self._paths = _glob_root(expanded), _glob_files(expanded)
            if not self._paths:
                raise UsageError(
                    f"--data {spec}: the glob matches no non-empty text file; check the pattern "
                    "(use ** for subfolders) or leave --data out for the built-in corpus"
                )
            self.kind, self.target = "glob", str(Path(expanded).absolute())
        elif Path(expanded).is_dir():
            self.root = Path(expanded).resolve()
            self._paths = [p for p in _walk(self.root) if not is_binary(p)]
            if not self._paths:
                raise UsageError(f"--data {spec}: the folder holds no non-empty text file; add some")
            self.kind, self.target = "folder", str(self.root)
        elif Path(expanded).is_file():
            path = Path(expanded).resolve()
            if is_binary(path):
                raise UsageError(f"--data {spec}: this looks like a binary file (it has NUL bytes)")
            self.root, self._paths = path.parent, [path]
            self.kind, self.target = "file", str(path)
        else:
            raise UsageError(
                f"--data {spec}: no such file or folder; give a text file, a folder or a glob "
                "(or leave --data out for the built-in corpus)"
            )

    def describe(self) -> str:
        return f"local {self.kind}: {self.target}"

    def documents(self) -> list[Document]:
        if len(self._paths) == 1:  # a lone file: chunks are the only way to hold out validation text
            path = self._paths[0]
            return _documents(path, self.root, chunk_bytes=single_file_chunk_bytes(path.stat().st_size))
        return sorted((doc for p in self._paths for doc in _documents(p, self.root)), key=lambda d: d.name)


def _glob_root(pattern: str) -> Path:
    """The folder before the first part with a wildcard: names are relative to it."""
    parts = Path(pattern).parts
    first_wild = next(i for i, part in enumerate(parts) if GLOB_CHARS & set(part))
    return Path(*parts[:first_wild]).resolve() if first_wild else Path.cwd()


def _glob_files(pattern: str) -> list[Path]:
    matches = (Path(m).resolve() for m in glob.glob(pattern, recursive=True))
    return sorted(p for p in matches if p.is_file() and p.stat().st_size > 0 and not is_binary(p))


def open_source(spec: str | None) -> TextSource:
    """None: the built-in corpus; otherwise a text file, a folder or a glob of local files."""
    if spec is None:
        return BuiltinCorpus()
    if spec.startswith("s3://"):
        raise UsageError(
            f"{spec}: an S3 dataset is pulled as a version, not read as text here; give it to the trainer "
            "as --data, or run python -m llm.data pull URI DIR and give the folder"
        )
    return LocalFiles(spec)
