"""Checkpoint bookkeeping on the filesystem: completeness, `latest`, retention, resolving --resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm.checkpoints.catalogue import (
    LATEST_NAME,
    CheckpointCatalogue,
    checkpoint_problem,
    newest_complete,
    read_manifest,
    resolve_resume,
    tag_for,
)
from llm.checkpoints.manifest import CHECKPOINT_FORMAT_VERSION, MANIFEST_NAME, CheckpointManifest, FileEntry
from llm.errors import UsageError
from llm.storage import sha256_file, write_atomic


def _manifest(step: int, files: dict[str, FileEntry]) -> CheckpointManifest:
    return CheckpointManifest(
        format=CHECKPOINT_FORMAT_VERSION, tag=tag_for(step), step=step, world_size=1, created=0.0,
        tokens_seen=step * 10, sampler={"samples_drawn": step}, model={"n_layer": 2}, config_hash="c",
        tokenizer_hash="t", zero_stage=1, precision="fp32", code={}, rng_files=[], files=files,
    )  # fmt: skip


def _fake_checkpoint(root: Path, step: int, *, complete: bool = True) -> Path:
    folder = root / tag_for(step)
    folder.mkdir(parents=True)
    shard = folder / "shard.pt"
    shard.write_bytes(bytes([step % 256]) * 100)
    if complete:
        CheckpointCatalogue.local(root).commit(
            _manifest(step, {"shard.pt": FileEntry(sha256=sha256_file(shard), bytes=100)})
        )
    return folder


def test_manifest_round_trips_typed(tmp_path: Path) -> None:
    folder = _fake_checkpoint(tmp_path, 7)
    manifest = read_manifest(folder)
    assert manifest is not None and manifest.step == 7 and manifest.tokens_seen == 70
    assert manifest.files["shard.pt"].bytes == 100
    assert (tmp_path / LATEST_NAME).read_text() == tag_for(7)


def test_manifest_of_another_format_is_refused_by_name(tmp_path: Path) -> None:
    folder = _fake_checkpoint(tmp_path, 7)
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    (folder / MANIFEST_NAME).write_text(json.dumps({**raw, "format": 99}))
    problem = checkpoint_problem(folder)
    assert problem is not None and "format 99" in problem and "reads formats" in problem
    (folder / MANIFEST_NAME).write_text(json.dumps({**raw, "step": "seven"}))
    assert "step" in str(checkpoint_problem(folder))
    (folder / MANIFEST_NAME).write_text("{not json")
    assert "not valid JSON" in str(checkpoint_problem(folder))
    assert read_manifest(folder) is None


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
    assert MANIFEST_NAME in str(checkpoint_problem(_fake_checkpoint(tmp_path, 6, complete=False)))


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
    CheckpointCatalogue.local(tmp_path).apply_retention(keep_last=2)
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert left == [tag_for(15), tag_for(20), tag_for(25)]
    assert (tmp_path / LATEST_NAME).read_text() == tag_for(20)


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


def test_a_model_record_from_before_the_activation_field_means_tanh_gelu(tmp_path: Path) -> None:
    """Checkpoints and run.json written before `activation` existed were trained with GELU's tanh
    approximation: read so, a resume asks for it by name and generate/export rebuild that model."""
    from llm.checkpoints.trained import model_config
    from llm.model.config import GPTConfig
    from llm.train.plan import check_same_model
    from llm.train.session import _resume_problem

    old = GPTConfig(vocab_size=300, n_layer=2).model_dump(exclude={"activation"})
    assert model_config({"model": old}, where=tmp_path).activation == "gelu_tanh"
    assert model_config({"model": {**old, "activation": "gelu"}}, where=tmp_path).activation == "gelu"

    folder = _fake_checkpoint(tmp_path, 3)
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    (folder / MANIFEST_NAME).write_text(json.dumps({**raw, "model": old}))
    manifest = read_manifest(folder)
    with pytest.raises(UsageError, match=r"activation='gelu_tanh' \(asked: 'gelu'\)"):
        check_same_model(folder, manifest, GPTConfig(vocab_size=300, n_layer=2))
    check_same_model(folder, manifest, GPTConfig(vocab_size=300, n_layer=2, activation="gelu_tanh"))

    for activation, refused in (("gelu", True), ("gelu_tanh", False)):
        model = GPTConfig(vocab_size=300, n_layer=2, activation=activation).model_dump()
        problem = _resume_problem(folder, {"model": model, "tokenizer_hash": "t"}, verify=False)
        assert (problem is not None and "another model shape" in problem) is refused, problem
