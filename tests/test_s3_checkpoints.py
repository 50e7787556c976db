"""The S3 checkpoint commit protocol against a real endpoint (moto's server over HTTP on loopback).

Part manifests before the manifest, the manifest create-only, LATEST by compare-and-swap and never
backwards, retention that never exposes a half-deleted checkpoint, and a crash matrix: the real
`python -m llm.checkpoints push` killed with SIGKILL at each moment of an upload.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llm.checkpoints.catalogue import CheckpointCatalogue, checkpoint_problem, tag_for
from llm.checkpoints.manifest import CHECKPOINT_FORMAT_VERSION, MANIFEST_NAME, CheckpointManifest, FileEntry
from llm.checkpoints.remote import RemoteCheckpoints, attempt_prefix
from llm.storage import sha256_file
from llm.storage.s3 import S3Storage
from llm.storage.uri import parse_s3_uri
from tests.helpers import REPO, child_env
from tests.s3_server import Bucket


def _fake_checkpoint(root: Path, step: int, sizes: dict[str, int]) -> Path:
    """A complete local checkpoint of random files (what DeepSpeed and our RNG files would be)."""
    folder = root / tag_for(step)
    folder.mkdir(parents=True)
    files = {}
    for name, size in sizes.items():
        (folder / name).write_bytes(os.urandom(size))
        files[name] = FileEntry(sha256=sha256_file(folder / name), bytes=size)
    CheckpointCatalogue.local(root).commit(
        CheckpointManifest(
            format=CHECKPOINT_FORMAT_VERSION,
            tag=tag_for(step),
            step=step,
            world_size=2,
            created=time.time(),
            tokens_seen=step,
            sampler={},
            model=None,
            config_hash="c",
            tokenizer_hash="t",
            zero_stage=1,
            precision="fp32",
            code={},
            rng_files=[],
            files=files,
        )
    )
    return folder


def _remote(s3: Bucket, prefix: str = "runs/r") -> RemoteCheckpoints:
    return RemoteCheckpoints(S3Storage(parse_s3_uri(s3.uri(prefix), what="test")))


def _local_manifest(folder: Path) -> CheckpointManifest:
    return CheckpointCatalogue.local(folder.parent).manifest(folder.name)


SHARDS = {
    "model.pt": 3000,
    "optim_rank0.pt": 5000,
    "optim_rank1.pt": 5000,
    "rng_rank0.pt": 100,
    "rng_rank1.pt": 100,
}


def test_two_nodes_commit_only_after_both_parts_and_an_empty_machine_pulls_it(
    s3: Bucket, tmp_path: Path
) -> None:
    folder = _fake_checkpoint(tmp_path / "node0" / "checkpoints", 5, SHARDS)
    manifest = _local_manifest(folder)
    hashes = {n: e.sha256 for n, e in manifest.files.items()}
    node0 = ["model.pt", "optim_rank0.pt", "rng_rank0.pt"]
    node1 = ["optim_rank1.pt", "rng_rank1.pt"]
    remote = _remote(s3)
    prefix = attempt_prefix(5, "aaaa1111")
    remote.upload_part(prefix, node=0, folder=folder, names=node0, hashes=hashes)

    errors: list[BaseException] = []

    def commit() -> None:
        try:
            remote.commit(prefix, manifest, nodes=2, timeout_s=60)
            remote.move_latest(5, prefix)
        except BaseException as err:  # reported below
            errors.append(err)

    committer = threading.Thread(target=commit)
    committer.start()
    time.sleep(1.5)
    assert not remote.storage.exists(f"{prefix}/{MANIFEST_NAME}"), "committed before node 1's part"
    assert remote.committed() == [] and remote.latest() == (None, None)
    remote.upload_part(prefix, node=1, folder=folder, names=node1, hashes=hashes)  # node 1 confirms
    committer.join(timeout=60)
    assert not errors, errors
    assert [c.step for c in remote.committed()] == [5]
    assert remote.latest()[0].prefix == prefix  # type: ignore[union-attr]

    empty = tmp_path / "fresh" / "checkpoints"
    empty.mkdir(parents=True)
    pulled = remote.pull(remote.resolve(), empty)
    assert pulled == empty / tag_for(5)
    assert checkpoint_problem(pulled, verify_hashes=True) is None
    for name in SHARDS:
        assert (pulled / name).read_bytes() == (folder / name).read_bytes()
    assert (empty / "latest").read_text() == tag_for(5)


def test_a_part_that_never_comes_leaves_the_checkpoint_uncommitted(s3: Bucket, tmp_path: Path) -> None:
    folder = _fake_checkpoint(tmp_path / "c", 5, SHARDS)
    manifest = _local_manifest(folder)
    remote = _remote(s3)
    prefix = attempt_prefix(5, "bbbb2222")
    hashes = {n: e.sha256 for n, e in manifest.files.items()}
    remote.upload_part(prefix, node=0, folder=folder, names=["model.pt"], hashes=hashes)
    with pytest.raises(Exception, match=r"node\(s\) \[1\] did not upload their part"):
        remote.commit(prefix, manifest, nodes=2, timeout_s=1)
    assert remote.committed() == []


def test_latest_never_moves_backwards_when_writers_race(s3: Bucket) -> None:
    steps = list(range(1, 41))
    random.Random(0).shuffle(steps)
    writers = [_remote(s3) for _ in range(8)]  # each its own client and connections

    def write(i: int) -> None:
        for step in steps[i::8]:
            writers[i].move_latest(step, attempt_prefix(step, "cccc3333"))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert writers[0].latest()[0].step == 40  # type: ignore[union-attr]
    assert not writers[0].move_latest(39, attempt_prefix(39, "late0000"))  # an older one arriving late
    assert writers[0].latest()[0].step == 40  # type: ignore[union-attr]


def _commit_one_node(remote: RemoteCheckpoints, tmp_path: Path, step: int, attempt: str) -> None:
    """A one-file checkpoint through the whole protocol: part, manifest, LATEST."""
    folder = _fake_checkpoint(tmp_path / f"s{step}", step, {"a.pt": 10})
    prefix = attempt_prefix(step, attempt)
    manifest = _local_manifest(folder)
    remote.upload_part(
        prefix, node=0, folder=folder, names=["a.pt"], hashes={"a.pt": manifest.files["a.pt"].sha256}
    )
    remote.commit(prefix, manifest, nodes=1, timeout_s=10)
    remote.move_latest(step, prefix)


def test_prune_keeps_latest_and_the_newest_and_removes_dead_attempts(s3: Bucket, tmp_path: Path) -> None:
    remote = _remote(s3)
    for step in (5, 10, 15):
        _commit_one_node(remote, tmp_path, step, "dddd4444")
    remote.storage.write_bytes(f"{attempt_prefix(7, 'dead0000')}/a.pt", b"x")  # a crashed save, older
    remote.storage.write_bytes(f"{attempt_prefix(20, 'busy0000')}/a.pt", b"x")  # a save in progress
    removed = remote.prune(keep_last=2)
    assert sorted(removed) == [attempt_prefix(5, "dddd4444"), attempt_prefix(7, "dead0000")]
    assert [c.step for c in remote.committed()] == [10, 15]
    assert attempt_prefix(20, "busy0000") in remote.attempts()


def _push(folder: Path, uri: str, env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm.checkpoints", "push", str(folder), uri, "--keep-last", "1",
         "--tries", "1"],
        cwd=REPO, env=child_env(**env, **extra), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


CRASHES = [
    "s3.after_file@2",  # killed after 2 of 3 shards
    "s3.complete_multipart",  # all parts of the large shard sent, the multipart upload not completed
    "s3.after_part_manifest",  # the node's part written, the manifest not
    "s3.after_manifest",  # the manifest written, LATEST not moved
    "s3.prune_after_manifest",  # retention killed between deleting a manifest and the files
]


@pytest.mark.parametrize("failpoint", CRASHES)
def test_a_kill_at_any_moment_of_an_upload_leaves_a_complete_latest(
    s3: Bucket, tmp_path: Path, failpoint: str
) -> None:
    uri = s3.uri("runs/crash")
    env = {**s3.env, "LLM_S3_MULTIPART_MB": "5"}
    sizes = {"big.pt": 11 << 20, "small.pt": 1000, "rng.pt": 100}  # big.pt goes up in 3 parts
    first = _fake_checkpoint(tmp_path / "a" / "checkpoints", 5, sizes)
    second = _fake_checkpoint(tmp_path / "b" / "checkpoints", 10, sizes)
    assert _push(first, uri, env).returncode == 0

    killed = _push(second, uri, env, LLM_FAILPOINT=failpoint)
    assert killed.returncode == -9, killed.stdout + killed.stderr  # the failpoint's SIGKILL, for real

    remote = _remote(s3, "runs/crash")
    latest = remote.latest()[0]
    assert latest is not None
    expected = 10 if failpoint == "s3.prune_after_manifest" else 5  # retention runs after LATEST moved
    assert latest.step == expected
    committed = [c.step for c in remote.committed()]
    if failpoint == "s3.after_manifest":  # complete, only not LATEST yet: LATEST stays on step 5
        assert committed == [5, 10], committed
    else:  # a dead attempt is never listed as a checkpoint
        assert committed == [expected], committed
    # LATEST loads: pulled into an empty run directory, byte for byte what was saved
    pulled = remote.pull(remote.resolve(), tmp_path / "fresh" / "checkpoints")
    source = first if expected == 5 else second
    assert checkpoint_problem(pulled, verify_hashes=True) is None
    assert all((pulled / n).read_bytes() == (source / n).read_bytes() for n in sizes)

    again = _push(second, uri, env)  # the next incarnation's upload goes through and cleans up
    assert again.returncode == 0, again.stdout + again.stderr
    assert remote.latest()[0].step == 10  # type: ignore[union-attr]
    assert [c.step for c in remote.committed()] == [10]
    assert len(remote.attempts()) == 1, remote.attempts()  # dead attempts pruned, the old one too


def test_checkpoint_cli_lists_pulls_and_refuses_bad_input(s3: Bucket, tmp_path: Path) -> None:
    folder = _fake_checkpoint(tmp_path / "run" / "checkpoints", 5, {"a.pt": 100})
    uri = s3.uri("runs/cli")
    assert _push(folder, uri, s3.env).returncode == 0

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "llm.checkpoints", *args], cwd=REPO, env=child_env(**s3.env),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    listed = cli("list", uri)
    assert listed.returncode == 0 and "*        5" in listed.stdout, listed.stdout
    pulled = cli("pull", f"{uri}@5", str(tmp_path / "copy"))
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "copy" / "checkpoints" / tag_for(5) / "a.pt").read_bytes() == (
        folder / "a.pt"
    ).read_bytes()
    for args, words in [
        (("pull", f"{uri}@99", str(tmp_path / "x")), "no committed checkpoint at step 99"),
        (("list", "s3://no-such-bucket-here/r"), "the bucket 'no-such-bucket-here' does not exist"),
        (("pull", f"{uri}@latest", str(tmp_path / "x")), "after '@' give a step number"),
        (("share", uri, "--expires", "0"), "give 1 to 604800 seconds"),
    ]:
        bad = cli(*args)
        assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and words in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr


def test_a_tampered_checkpoint_object_is_refused_and_nothing_is_pulled(s3: Bucket, tmp_path: Path) -> None:
    folder = _fake_checkpoint(tmp_path / "run" / "checkpoints", 5, {"a.pt": 1000, "b.pt": 10})
    uri = s3.uri("runs/tamper")
    assert _push(folder, uri, s3.env).returncode == 0
    remote = _remote(s3, "runs/tamper")
    key = f"runs/tamper/{remote.resolve().prefix}/a.pt"
    s3.client().put_object(Bucket=s3.name, Key=key, Body=b"\x00" * 1000)  # same size, other bytes
    dest = tmp_path / "copy"
    pulled = subprocess.run(
        [sys.executable, "-m", "llm.checkpoints", "pull", uri, str(dest)],
        cwd=REPO, env=child_env(**s3.env), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert pulled.returncode == 2, pulled.stdout + pulled.stderr
    assert "a.pt: its sha256 does not match the manifest" in pulled.stderr
    assert pulled.stderr.count("error:") == 1 and "Traceback" not in pulled.stderr
    leftovers = sorted(p.name for p in (dest / "checkpoints").iterdir())
    assert leftovers == [], leftovers  # no step folder, no hidden download, no `latest`


def test_resume_auto_takes_the_newer_of_the_local_and_the_remote_checkpoint(
    s3: Bucket, tmp_path: Path
) -> None:
    from llm.errors import UsageError
    from llm.train.remote_sync import _choose

    remote = _remote(s3, "runs/auto")
    uri = parse_s3_uri(s3.uri("runs/auto"), what="test", allow_version=True)
    assert _choose(remote, uri, local_step=None, auto=True) is None  # nothing anywhere: a fresh start
    with pytest.raises(UsageError, match="no committed checkpoint there"):
        _choose(remote, uri, local_step=None, auto=False)
    for step in (5, 10):
        _commit_one_node(remote, tmp_path, step, "eeee5555")
    assert _choose(remote, uri, local_step=12, auto=True) is None  # the local one is newer: no download
    assert _choose(remote, uri, local_step=10, auto=True) is None  # as new: no download either
    assert _choose(remote, uri, local_step=5, auto=True).step == 10  # type: ignore[union-attr]
    assert _choose(remote, uri, local_step=12, auto=False).step == 10  # type: ignore[union-attr]  # asked for
    older = parse_s3_uri(s3.uri("runs/auto") + "@5", what="test", allow_version=True)
    assert _choose(remote, older, local_step=None, auto=False).step == 5  # type: ignore[union-attr]
