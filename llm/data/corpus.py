"""Text sources: the built-in corpus (the interpreter's standard library) and local files.

A source lists its documents in a stable, sorted order and reads each one. Remote sources
(`s3://`) plug in later by implementing the same `TextSource` protocol.
"""

from __future__ import annotations

import glob
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llm.errors import UsageError

# folders of the standard library that are tests, third-party packages or caches, not library code
STDLIB_EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "testmock"}
)
BINARY_SNIFF_BYTES = 8192
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Document:
    """One file of a source. `name` is its stable id, relative to the source's root (posix slashes)."""

    name: str
    path: str  # where the source reads it from: a local path here, an object key for remote sources
    size: int  # bytes on disk


class TextSource(Protocol):
    def describe(self) -> str:
        """One line saying what this source is; part of the dataset fingerprint."""
        ...

    def documents(self) -> list[Document]:
        """Every document, sorted by name; the same list on every call and every rank."""
        ...

    def read_bytes(self, doc: Document) -> bytes: ...

    def read_text(self, doc: Document) -> str: ...


def decode_text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class _LocalReader:
    def read_bytes(self, doc: Document) -> bytes:
        return Path(doc.path).read_bytes()

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


def _document(path: Path, root: Path) -> Document:
    return Document(name=path.relative_to(root).as_posix(), path=str(path), size=path.stat().st_size)


class BuiltinCorpus(_LocalReader):
    """The running interpreter's standard-library `.py` files: real code, on every machine, no download."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or sysconfig.get_paths()["stdlib"]).resolve()

    def describe(self) -> str:
        version = ".".join(str(v) for v in sys.version_info[:3])
        return f"built-in corpus: Python {version} standard library .py files in {self.root}"

    def documents(self) -> list[Document]:
        paths = _walk(self.root, excluded_dirs=STDLIB_EXCLUDED_DIRS)
        return [_document(p, self.root) for p in paths if p.suffix == ".py"]


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
        return sorted((_document(p, self.root) for p in self._paths), key=lambda d: d.name)


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
            f"--data {spec}: S3 sources are not supported yet; copy the files locally and give the folder"
        )
    return LocalFiles(spec)
