"""LocalStorage: the storage interface the checkpoint catalogue goes through (S3 implements it next)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from llm.storage import LocalStorage, Storage


def test_local_storage_reads_writes_lists_and_deletes(tmp_path: Path) -> None:
    storage: Storage = LocalStorage(tmp_path / "root")
    assert storage.children() == [] and storage.files() == {} and not storage.exists("a/b.bin")
    storage.write_bytes("a/b.bin", b"x" * 10)  # parents are made
    storage.write_bytes("a/c/d.txt", b"hello")
    storage.write_bytes("latest", b"one")
    storage.write_bytes("latest", b"two")  # replaced whole
    (tmp_path / "root" / "a" / ".e.tmp").write_bytes(b"a write in progress")
    assert storage.read_bytes("latest") == b"two"
    assert storage.size("a/b.bin") == 10 and storage.size("nothing") is None
    assert storage.sha256("a/c/d.txt") == hashlib.sha256(b"hello").hexdigest()
    assert storage.children() == ["a", "latest"]
    assert storage.children("a") == ["b.bin", "c"]  # hidden entries (writes in progress) never listed
    assert storage.files("a") == {"b.bin": 10, "c/d.txt": 5}
    assert storage.local_path("a/b.bin") == tmp_path / "root" / "a" / "b.bin"
    storage.delete("a")
    storage.delete("a")  # nothing there: not an error
    assert storage.children() == ["latest"]
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["latest"]  # no temporary file left
