"""Checkpoint bookkeeping on the filesystem: completeness, `latest`, retention, resolving --resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm.errors import UsageError
from llm.train.checkpoint import (
    LATEST,
    MANIFEST,
    apply_retention,
    checkpoint_problem,
    newest_complete,
    resolve_resume,
    sha256_file,
    tag_for,
    write_atomic,
)


def _fake_checkpoint(root: Path, step: int, *, complete: bool = True) -> Path:
    folder = root / tag_for(step)
    folder.mkdir(parents=True)
    shard = folder / "shard.pt"
    shard.write_bytes(bytes([step % 256]) * 100)
    if complete:
        files = {"shard.pt": {"sha256": sha256_file(shard), "bytes": 100}}
        (folder / MANIFEST).write_text(json.dumps({"step": step, "files": files}))
        write_atomic(root / LATEST, folder.name)
    return folder


def test_completeness_needs_a_manifest_and_every_file(tmp_path: Path) -> None:
    folder = _fake_checkpoint(tmp_path, 5)
    assert checkpoint_problem(folder) is None
    assert checkpoint_problem(folder, verify_hashes=True) is None
    (folder / "shard.pt").write_bytes(b"\x00" * 100)  # same size, other bytes
    assert checkpoint_problem(folder) is None  # the cheap check looks at sizes only
    assert "sha256" in str(checkpoint_problem(folder, verify_hashes=True))
    (folder / "shard.pt").write_bytes(b"\x00" * 99)
    assert "99 bytes" in str(checkpoint_problem(folder))
    (folder / "shard.pt").unlink()
    assert "missing" in str(checkpoint_problem(folder))
    assert "manifest" in str(checkpoint_problem(_fake_checkpoint(tmp_path, 6, complete=False)))


def test_newest_complete_prefers_latest_and_falls_back(tmp_path: Path) -> None:
    _fake_checkpoint(tmp_path, 5)
    ten = _fake_checkpoint(tmp_path, 10)
    _fake_checkpoint(tmp_path, 15, complete=False)  # a save that crashed
    assert newest_complete(tmp_path) == ten
    (ten / "shard.pt").unlink()  # latest broken: the newest complete one before it
    assert newest_complete(tmp_path) == tmp_path / tag_for(5)
    assert newest_complete(tmp_path / "nothing") is None


def test_retention_keeps_the_newest_k_and_saves_in_progress(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20):
        _fake_checkpoint(tmp_path, step)
    _fake_checkpoint(tmp_path, 12, complete=False)  # crashed long ago
    _fake_checkpoint(tmp_path, 25, complete=False)  # newer than every complete one: may be in progress
    apply_retention(tmp_path, keep_last=2)
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert left == [tag_for(15), tag_for(20), tag_for(25)]
    assert (tmp_path / LATEST).read_text() == tag_for(20)


def test_resolve_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert resolve_resume(None, run_dir) is None
    assert resolve_resume("auto", run_dir) is None  # nothing to continue: a fresh start
    assert resolve_resume("auto", None) is None
    saved = _fake_checkpoint(run_dir / "checkpoints", 5)
    assert resolve_resume("auto", run_dir) == saved
    assert resolve_resume(str(run_dir), None) == saved
    assert resolve_resume(str(saved), None) == saved
    broken = _fake_checkpoint(run_dir / "checkpoints", 9, complete=False)
    with pytest.raises(UsageError, match=rf"--resume {broken}: not a usable checkpoint.*use {saved}"):
        resolve_resume(str(broken), None)
    with pytest.raises(UsageError, match="no such run directory or checkpoint"):
        resolve_resume(str(tmp_path / "gone"), None)


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "latest"
    write_atomic(target, "step_00000001")
    write_atomic(target, "step_00000002")
    assert target.read_text() == "step_00000002"
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]  # no temporary file left behind
