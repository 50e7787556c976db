"""Training with --checkpoint-uri against a real S3 endpoint (moto's server over HTTP): 2 ranks, real
launcher. A crash in the middle of an upload, then a resume on a machine with nothing local that logs
the same losses as a run never stopped; a server that stops answering mid-upload; no secret anywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llm.checkpoints.catalogue import checkpoint_problem
from llm.checkpoints.remote import RemoteCheckpoints
from llm.storage.s3 import S3Storage
from llm.storage.uri import parse_s3_uri
from tests.helpers import (
    child_env,
    kill_tree,
    metrics,
    run_train,
    start_train,
    tiny_args,
    train_losses,
    wait_for,
)
from tests.s3_server import SECRET_KEY, Bucket, MotoServer, use_new_bucket, scan_for

pytestmark = [pytest.mark.dist, pytest.mark.slow]

MAX_STEPS = 20
COMMON = ["--max-steps", str(MAX_STEPS), "--save-every", "5", "--log-every", "1", "--eval-every", "10"]


def _remote(bucket: Bucket, prefix: str) -> RemoteCheckpoints:
    return RemoteCheckpoints(S3Storage(parse_s3_uri(bucket.uri(prefix), what="test")))


def test_a_crash_mid_upload_then_an_empty_machine_resumes_from_s3_with_the_same_losses(
    s3: Bucket, tmp_path: Path
) -> None:
    uri = s3.uri("runs/r1")
    full_dir = tmp_path / "full"
    done = run_train([*COMMON, *tiny_args(full_dir)], nproc=2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # each save is 5 files (model states, 2 optimizer shards, 2 RNG states): the 12th file uploaded is
    # the 2nd of step 15's save. kill -9 there, in the upload thread, while training goes on
    crashed_dir = tmp_path / "crashed"
    crash = run_train(
        [*COMMON, *tiny_args(crashed_dir, "--checkpoint-uri", uri)],
        nproc=2,
        env=child_env(**s3.env, LLM_FAILPOINT="s3.after_file@12"),
    )
    assert crash.returncode != 0
    remote = _remote(s3, "runs/r1")
    latest = remote.latest()[0]
    assert latest is not None and latest.step == 10, latest
    assert [c.step for c in remote.committed()] == [5, 10]  # step 15's attempt is there, never listed
    assert any(p.startswith("ckpt/00000015-") for p in remote.attempts())

    # a machine with nothing local: a new run directory, resume from the URI alone
    fresh_dir = tmp_path / "fresh"
    resumed = run_train(
        [*COMMON, *tiny_args(fresh_dir, "--resume", uri, "--checkpoint-uri", uri)],
        nproc=2,
        env=child_env(**s3.env),
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "pulling s3://" in resumed.stdout
    assert any(r["state"] == "resumed" and r["step"] == 10 for r in metrics(fresh_dir, "run_state"))
    full, after = train_losses(full_dir), train_losses(fresh_dir)
    assert sorted(after) == list(range(11, MAX_STEPS + 1))
    worst = max(abs(full[s] - after[s]) for s in after)
    print(f"resumed from S3 at step 10 into an empty directory: largest loss difference {worst:.2e}")
    assert worst <= 1e-6

    # the resumed run committed its own saves; the dead attempt and step 5 are gone (keep_last 3)
    assert [c.step for c in remote.committed()] == [10, 15, 20]
    assert remote.latest()[0].step == 20  # type: ignore[union-attr]
    assert not any(
        p.startswith("ckpt/00000015-") and p != remote.resolve(15).prefix for p in remote.attempts()
    )
    pulled = remote.pull(remote.resolve(), tmp_path / "pulled" / "checkpoints")
    assert checkpoint_problem(pulled, verify_hashes=True) is None

    # the secret key is nowhere: run directories, logs, metrics, manifests and every object in the bucket
    (tmp_path / "logs.txt").write_text(crash.stdout + crash.stderr + resumed.stdout + resumed.stderr)
    bucket_copy = tmp_path / "bucket"
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.name):
        for obj in page.get("Contents", []):
            target = bucket_copy / obj["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(s3.name, obj["Key"], str(target))
    assert len(list(bucket_copy.rglob("*.json"))) > 5
    roots = [crashed_dir, fresh_dir, tmp_path / "logs.txt", bucket_copy]
    assert scan_for(SECRET_KEY, roots) == []
    assert scan_for(SECRET_KEY, [_secret_canary(tmp_path)]) != []  # the scan does find a planted secret


def _secret_canary(tmp_path: Path) -> Path:
    canary = tmp_path / "canary.bin"
    canary.write_bytes(b"\x00prefix" + SECRET_KEY.encode() + b"suffix")
    return canary


@pytest.fixture
def own_server() -> MotoServer:  # type: ignore[misc]
    server = MotoServer()  # this test freezes it: not the suite's shared one
    yield server
    server.stop()


def test_a_server_that_stops_answering_mid_upload_costs_no_training_and_no_checkpoint(
    own_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = use_new_bucket(own_server.url, monkeypatch)
    uri = bucket.uri("runs/frozen")
    env = {
        **bucket.env,
        # give up quickly: 2 tries of 2 attempts, 2 s each, 1 s apart
        "LLM_S3_READ_TIMEOUT": "2", "LLM_S3_CONNECT_TIMEOUT": "1", "LLM_S3_MAX_ATTEMPTS": "2",
        "LLM_S3_UPLOAD_TRIES": "2", "LLM_S3_UPLOAD_RETRY_WAIT": "1",
    }  # fmt: skip
    run_dir = tmp_path / "run"
    args = ["--max-steps", "30", "--save-every", "10", "--log-every", "1", "--eval-every", "1",
            "--eval-batches", "8", *tiny_args(run_dir, "--checkpoint-uri", uri)]  # fmt: skip
    log = tmp_path / "log"
    launcher = start_train(args, nproc=2, log=log, **env)
    remote = _remote(bucket, "runs/frozen")
    try:
        wait_for(lambda: _latest_step(remote) == 10, timeout=400, what="step 10 in S3", proc=launcher)
        own_server.freeze()
        frozen_at = max(train_losses(run_dir))
        try:
            wait_for(
                lambda: "upload to" in log.read_text() and "failed after 2 tries" in log.read_text(),
                timeout=300,
                what="the failed upload",
                proc=launcher,
            )
            trained_meanwhile = max(train_losses(run_dir))
        finally:
            own_server.thaw()
        assert remote.latest()[0].step == 10  # type: ignore[union-attr]  # still the last complete one
        assert launcher.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        own_server.thaw()
        kill_tree(launcher)
    text = log.read_text()
    assert "warning: checkpoint step_00000020: upload to" in text, text[-3000:]
    assert frozen_at < 20 < trained_meanwhile, (frozen_at, trained_meanwhile)  # steps went on
    assert remote.latest()[0].step == 30  # type: ignore[union-attr]  # the next upload went through
    assert [c.step for c in remote.committed()] == [10, 30]
    assert checkpoint_problem(run_dir / "checkpoints" / "step_00000020") is None  # kept locally


def _latest_step(remote: RemoteCheckpoints) -> int:
    pointer = remote.latest()[0]
    return -1 if pointer is None else pointer.step
