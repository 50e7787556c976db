"""llm.storage against Ceph radosgw, a real S3 implementation that checks what moto lets through.

Signatures, bucket policies by principal, presigned URLs, SSE-KMS, object versions, and a server that
stops in the middle of an upload. The cluster starts once per session (tests/radosgw_server.py); each
test gets a fresh bucket owned by the `trainer` user, reached through boto3's profile chain.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from llm.checkpoints.catalogue import tag_for
from llm.storage.s3 import PreconditionFailed, S3Error, S3Settings, S3Storage
from llm.storage.transfer import download_files, upload_files
from llm.storage.uri import parse_s3_uri
from tests.helpers import REPO, child_env, write_code_corpus
from tests.radosgw_server import KMS_KEY_ID, USERS, WRONG_SECRET_PROFILE, RgwBucket
from tests.test_s3_checkpoints import SHARDS, _fake_checkpoint

MiB = 1 << 20


def storage(rgw: RgwBucket, prefix: str = "p", **settings: object) -> S3Storage:
    return S3Storage(parse_s3_uri(rgw.uri(prefix), what="test"), S3Settings(**settings))  # type: ignore[arg-type]


def write_tree(root: Path) -> list[str]:
    (root / "sub").mkdir(parents=True)
    (root / "tokens.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "meta.json").write_text('{"tokens": 150000}')
    return ["sub/meta.json", "tokens.bin"]


def cli(rgw: RgwBucket, profile: str, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `python -m MODULE ...`, reaching radosgw as `profile` through boto3's chain."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=child_env(**rgw.server.env(profile)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def checkpoints_cli(rgw: RgwBucket, profile: str, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(rgw, profile, "llm.checkpoints", *args)


def assert_one_error_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert result.stderr.count("error:") == 1 and result.stderr.startswith("error: "), output
    assert "Traceback" not in output, output
    for word in words:
        assert word in result.stderr, output
    for _, secret in USERS.values():
        assert secret not in output


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def grant_read(rgw: RgwBucket, user: str = "reader") -> None:
    """A bucket policy, set by the owner, that lets `user` list and read the bucket and nothing more."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam:::user/{user}"]},
                "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:GetBucketVersioning"],
                "Resource": [f"arn:aws:s3:::{rgw.name}", f"arn:aws:s3:::{rgw.name}/*"],
            }
        ],
    }
    rgw.server.client("trainer").put_bucket_policy(Bucket=rgw.name, Policy=json.dumps(policy))


def docs_policy(name: str, rgw: RgwBucket, user: str = "reader") -> dict[str, object]:
    """A policy from docs/aws.md (the JSON block after `<!-- policy: NAME -->`) as a bucket policy granting
    `user` what it grants: radosgw has no IAM users' policies, and no KMS actions in bucket policies. As
    the docs say for radosgw, s3:DeleteObject also names the bucket (its multi-object delete needs that,
    then still checks every key)."""
    text = (REPO / "docs" / "aws.md").read_text()
    found = re.search(rf"<!-- policy: {name} -->\n```json\n(.*?)```", text, re.S)
    assert found, f"docs/aws.md: no JSON block after <!-- policy: {name} -->"
    policy = json.loads(found.group(1).replace("BUCKET", rgw.name))
    statements = []
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if all(a.startswith("kms:") for a in actions):
            continue
        if "s3:DeleteObject" in actions:
            statement = {**statement, "Resource": [*statement["Resource"], f"arn:aws:s3:::{rgw.name}"]}
        statements.append({**statement, "Principal": {"AWS": [f"arn:aws:iam:::user/{user}"]}})
    return {**policy, "Statement": statements}


def apply_docs_policy(name: str, rgw: RgwBucket) -> None:
    policy = json.dumps(docs_policy(name, rgw))
    rgw.server.client("trainer").put_bucket_policy(Bucket=rgw.name, Policy=policy)


def assert_denied(action: object) -> None:
    with pytest.raises(S3Error) as err:
        action()  # type: ignore[operator]
    assert err.value.code == "AccessDenied", str(err.value)


def test_a_wrong_secret_is_refused_with_a_clear_error_naming_the_endpoint(rgw: RgwBucket) -> None:
    storage(rgw).check_bucket()  # the right secret reaches the bucket
    wrong = storage(rgw, profile=WRONG_SECRET_PROFILE)
    # a HEAD's 403 has no body: check_bucket must still say it was the signature
    for attempt in (wrong.check_bucket, lambda: wrong.write_bytes("k", b"x"), lambda: wrong.read("k")):
        with pytest.raises(S3Error) as err:
            attempt()
        message = str(err.value)
        assert err.value.code == "SignatureDoesNotMatch", message
        assert f"at {rgw.server.url}:" in message and rgw.name in message
        assert "the secret key does not match the access key" in message
        assert "\n" not in message and "Traceback" not in message
        for _, secret in USERS.values():
            assert secret not in message
    assert storage(rgw).head("k") is None  # nothing was written with the wrong secret

    listed = checkpoints_cli(rgw, WRONG_SECRET_PROFILE, "list", rgw.uri("runs/r1"))
    assert_one_error_line(listed, rgw.server.url, "the secret key does not match the access key")
    versions = cli(rgw, WRONG_SECRET_PROFILE, "llm.data", "versions", rgw.uri("datasets/code"))
    assert_one_error_line(versions, rgw.server.url, "the secret key does not match the access key")


def test_a_read_only_credential_pulls_but_cannot_push(rgw: RgwBucket, tmp_path: Path) -> None:
    names = write_tree(tmp_path / "src")
    trainer = storage(rgw, "datasets/code")
    records = upload_files(trainer, "v1", tmp_path / "src", names)
    reader = storage(rgw, "datasets/code", profile="reader")
    with pytest.raises(S3Error, match="access denied") as err:  # nothing granted yet: the policy matters
        reader.read("v1/tokens.bin")
    assert err.value.code == "AccessDenied"

    grant_read(rgw)

    reader.check_bucket()
    assert reader.files("v1") == {name: records[name].bytes for name in names}
    download_files(reader, "v1", records, tmp_path / "pulled")
    for name in names:
        assert (tmp_path / "pulled" / name).read_bytes() == (tmp_path / "src" / name).read_bytes()

    for push in (
        lambda: upload_files(reader, "v2", tmp_path / "src", names),
        lambda: reader.write_bytes("LATEST", b"v2", if_none_match=True),
        lambda: reader.delete("v1"),
    ):
        with pytest.raises(S3Error) as err:
            push()
        assert err.value.code == "AccessDenied", str(err.value)
        assert f"at {rgw.server.url}: access denied: these credentials lack permission" in str(err.value)
    assert trainer.files("") == {f"v1/{name}": records[name].bytes for name in names}  # untouched


def test_a_read_only_credential_pulls_a_dataset_but_cannot_push_one(rgw: RgwBucket, tmp_path: Path) -> None:
    """Through the real `python -m llm.data` CLI."""
    (tmp_path / "corpus").mkdir()
    corpus = write_code_corpus(tmp_path / "corpus", seed=7)  # raw text: pushed as is, prepared on pull
    uri = rgw.uri("datasets/code")
    pushed = cli(rgw, "trainer", "llm.data", "push", str(corpus), uri, "--no-progress")
    assert pushed.returncode == 0 and f"pushed {corpus} as {uri}@" in pushed.stdout, (
        pushed.stdout + pushed.stderr
    )
    version = pushed.stdout.split(f"{uri}@", 1)[1].split()[0]
    before = storage(rgw, "datasets").files()
    grant_read(rgw)

    listed = cli(rgw, "reader", "llm.data", "versions", uri)
    assert listed.returncode == 0 and version in listed.stdout, listed.stdout + listed.stderr
    pull = ("pull", f"{uri}@{version}", str(tmp_path / "copy"), "--no-progress", "--vocab-size", "300")
    pulled = cli(rgw, "reader", "llm.data", *pull, "--data-cache", str(tmp_path / "cache"))
    assert pulled.returncode == 0 and "every sha256 verified" in pulled.stdout, pulled.stdout + pulled.stderr
    for source in sorted(corpus.iterdir()):
        assert (tmp_path / "copy" / source.name).read_bytes() == source.read_bytes()

    refused = cli(rgw, "reader", "llm.data", "push", str(corpus), uri, "--no-progress")
    assert_one_error_line(refused, rgw.server.url, "access denied")
    assert storage(rgw, "datasets").files() == before  # nothing written


def test_a_read_only_credential_pulls_checkpoints_but_cannot_push_or_prune(
    rgw: RgwBucket, tmp_path: Path
) -> None:
    """The same through the real `python -m llm.checkpoints` CLI."""
    uri = rgw.uri("runs/r1")
    first = _fake_checkpoint(tmp_path / "run" / "checkpoints", 5, SHARDS)
    pushed = checkpoints_cli(rgw, "trainer", "push", str(first), uri, "--tries", "1")
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    # a dead save attempt older than LATEST (killed after its part manifest): prune would delete it
    dead = _fake_checkpoint(tmp_path / "run" / "checkpoints", 3, SHARDS)
    killed = subprocess.run(
        [sys.executable, "-m", "llm.checkpoints", "push", str(dead), uri, "--tries", "1"], cwd=REPO,
        env=child_env(**rgw.server.env("trainer"), LLM_FAILPOINT="s3.after_part_manifest"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stdout + killed.stderr
    before = storage(rgw, "runs/r1").files()
    grant_read(rgw)

    listed = checkpoints_cli(rgw, "reader", "list", uri)
    assert listed.returncode == 0 and "*        5" in listed.stdout, listed.stdout + listed.stderr
    assert "1 unfinished save attempt" in listed.stdout, listed.stdout
    pulled = checkpoints_cli(rgw, "reader", "pull", uri, str(tmp_path / "copy"))
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    for name in SHARDS:
        assert (tmp_path / "copy" / "checkpoints" / tag_for(5) / name).read_bytes() == (
            first / name
        ).read_bytes()

    pruned = checkpoints_cli(rgw, "reader", "prune", uri, "--keep-last", "1")
    assert_one_error_line(pruned, rgw.server.url, "access denied")
    newer = _fake_checkpoint(tmp_path / "run" / "checkpoints", 10, SHARDS)
    refused = checkpoints_cli(rgw, "reader", "push", str(newer), uri, "--tries", "1")
    assert refused.returncode != 0 and "access denied" in refused.stderr, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    assert storage(rgw, "runs/r1").files() == before  # nothing written, nothing deleted


def test_the_trainer_policy_in_docs_opens_its_prefixes_and_nothing_else(
    rgw: RgwBucket, tmp_path: Path
) -> None:
    owner = storage(rgw, "")
    owner.write_bytes("other/notes.txt", b"not the trainer's")
    apply_docs_policy("trainer", rgw)  # granted to a user that owns nothing
    big = tmp_path / "shard.pt"
    big.write_bytes(os.urandom(11 * MiB))
    for prefix in ("datasets/code", "runs/r1"):
        st = storage(rgw, prefix, profile="reader", multipart_mb=5)
        st.write_bytes("manifest.json", b"{}", if_none_match=True)
        st.upload_file("shard.pt", big)  # multipart: start, parts, completion
        assert st.files() == {"manifest.json": 2, "shard.pt": 11 * MiB}
        assert st.read("manifest.json")[0] == b"{}"
        st.delete("shard.pt")  # retention
        assert st.files() == {"manifest.json": 2}
        assert not st.bucket_versioning()
    client = rgw.server.client("reader")
    started = client.create_multipart_upload(Bucket=rgw.name, Key="runs/r1/killed.pt")
    client.abort_multipart_upload(Bucket=rgw.name, Key="runs/r1/killed.pt", UploadId=started["UploadId"])

    elsewhere = storage(rgw, "other", profile="reader")
    assert_denied(lambda: elsewhere.write_bytes("x", b"x"))
    assert_denied(lambda: elsewhere.read("notes.txt"))
    assert_denied(lambda: elsewhere.files())
    assert_denied(lambda: storage(rgw, "", profile="reader").files())  # the bucket's root: no listing
    assert owner.read("other/notes.txt")[0] == b"not the trainer's"


def test_the_reader_policy_in_docs_reads_its_prefixes_only(rgw: RgwBucket) -> None:
    owner = storage(rgw, "")
    owner.write_bytes("datasets/code/versions/v1/manifest.json", b"{}")
    owner.write_bytes("runs/r1/LATEST", b"5")
    owner.write_bytes("other/notes.txt", b"private")
    apply_docs_policy("reader", rgw)
    datasets = storage(rgw, "datasets/code", profile="reader")
    assert datasets.children("versions") == ["v1"]
    assert datasets.read("versions/v1/manifest.json")[0] == b"{}"
    runs = storage(rgw, "runs/r1", profile="reader")
    assert runs.read("LATEST")[0] == b"5"
    assert_denied(lambda: datasets.write_bytes("versions/v2/manifest.json", b"{}"))
    assert_denied(lambda: runs.write_bytes("LATEST", b"10"))
    assert_denied(lambda: runs.delete("LATEST"))
    assert_denied(lambda: storage(rgw, "other", profile="reader").read("notes.txt"))
    assert owner.read("runs/r1/LATEST")[0] == b"5"


def test_the_lifecycle_rule_in_docs_is_accepted_as_written(rgw: RgwBucket) -> None:
    text = (REPO / "docs" / "aws.md").read_text()
    found = re.search(r"<!-- policy: lifecycle -->\n```json\n(.*?)```", text, re.S)
    assert found, "docs/aws.md: no lifecycle rule"
    client = rgw.server.client()
    client.put_bucket_versioning(Bucket=rgw.name, VersioningConfiguration={"Status": "Enabled"})
    rules = json.loads(found.group(1))
    client.put_bucket_lifecycle_configuration(Bucket=rgw.name, LifecycleConfiguration=rules)
    [rule] = client.get_bucket_lifecycle_configuration(Bucket=rgw.name)["Rules"]
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 7


def test_the_bucket_check_passes_under_the_docs_prefix_scoped_policy(rgw: RgwBucket) -> None:
    apply_docs_policy("reader", rgw)
    storage(rgw, "datasets/code", profile="reader").check_bucket()


def test_latest_moves_by_compare_and_swap(rgw: RgwBucket) -> None:
    st = storage(rgw, "runs/r1", max_attempts=1)
    first = st.write_bytes("LATEST", b"5", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        st.write_bytes("LATEST", b"6", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        st.write_bytes("LATEST", b"7", if_match='"0123456789abcdef0123456789abcdef"')  # stale
    second = st.write_bytes("LATEST", b"10", if_match=first.etag)
    assert st.read("LATEST") == (b"10", second.etag)


def test_a_tampered_presigned_url_is_refused(rgw: RgwBucket) -> None:
    st = storage(rgw, "runs/r1/exports")
    st.write_bytes("model.safetensors", b"the weights")
    st.write_bytes("other.safetensors", b"not shared")
    url = st.presign_get("model.safetensors", expires_s=600)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url
    assert http_get(url) == (200, b"the weights")  # anyone with the URL, no credentials

    signature = re.search(r"X-Amz-Signature=([0-9a-f]+)", url).group(1)  # type: ignore[union-attr]
    flipped = ("0" if signature[-1] != "0" else "1").join(signature.rsplit(signature[-1], 1))
    tampered = {
        "another key": url.replace("/model.safetensors?", "/other.safetensors?"),
        "the signature": url.replace(signature, flipped),
        "a longer expiry": url.replace("X-Amz-Expires=600", "X-Amz-Expires=604800"),
    }
    for what, bad in tampered.items():
        assert bad != url
        status, body = http_get(bad)
        assert status == 403 and b"SignatureDoesNotMatch" in body, f"{what}: {status} {body[:200]!r}"

    short = st.presign_get("model.safetensors", expires_s=1)
    time.sleep(2.1)
    status, body = http_get(short)
    assert status == 403 and b"AccessDenied" in body and b"the weights" not in body


def test_sse_kms_objects_round_trip(rgw: RgwBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_S3_SSE", "aws:kms")
    monkeypatch.setenv("LLM_S3_KMS_KEY_ID", KMS_KEY_ID)
    st = storage(rgw, multipart_mb=5)
    assert (st.settings.sse, st.settings.kms_key_id) == ("aws:kms", KMS_KEY_ID)
    small = st.write_bytes("manifest.json", b'{"step": 3}')
    big = tmp_path / "shard.pt"
    big.write_bytes(os.urandom(11 * MiB))  # multipart: three parts, each encrypted
    st.upload_file("shard.pt", big)
    client = rgw.server.client()
    for key in ("manifest.json", "shard.pt"):
        head = client.head_object(Bucket=rgw.name, Key=f"p/{key}")
        assert head.get("ServerSideEncryption") == "aws:kms", (key, head.get("ServerSideEncryption"))
        assert head.get("SSEKMSKeyId") == KMS_KEY_ID
    assert st.read("manifest.json") == (b'{"step": 3}', small.etag)
    st.download_file("shard.pt", tmp_path / "back.pt")
    assert (tmp_path / "back.pt").read_bytes() == big.read_bytes()


def test_an_unknown_kms_key_is_named(rgw: RgwBucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """radosgw answers an unknown KMS key id with InvalidAccessKeyId ('Failed to retrieve the actual
    key, kms-keyid: ...'): the error must point at LLM_S3_KMS_KEY_ID, not at the credentials."""
    monkeypatch.setenv("LLM_S3_SSE", "aws:kms")
    monkeypatch.setenv("LLM_S3_KMS_KEY_ID", "no-such-key")
    with pytest.raises(S3Error) as err:
        storage(rgw).write_bytes("k", b"x")
    message = str(err.value)
    assert rgw.server.url in message and "LLM_S3_KMS_KEY_ID" in message, message
    assert "AWS_ACCESS_KEY_ID" not in message, message


def test_aes256_where_the_server_ignores_it(rgw: RgwBucket, capfd: pytest.CaptureFixture[str]) -> None:
    import llm.storage.s3 as s3_module

    s3_module._sse_notice_printed.discard(rgw.server.url)
    auto = storage(rgw, sse="auto")
    auto.write_bytes("a", b"one")
    auto.write_bytes("b", b"two")
    notices = [line for line in capfd.readouterr().err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and rgw.server.url in notices[0] and "AES256" in notices[0], notices
    assert auto.read("b")[0] == b"two"
    with pytest.raises(S3Error, match=rf"{re.escape(rgw.server.url)}.*AES256"):
        storage(rgw, sse="AES256").write_bytes("c", b"three")


def test_object_versions_round_trip(rgw: RgwBucket, tmp_path: Path) -> None:
    st = storage(rgw)
    assert not st.bucket_versioning()
    unversioned = st.write_bytes("k", b"plain")
    assert unversioned.version_id is None
    rgw.server.client().put_bucket_versioning(Bucket=rgw.name, VersioningConfiguration={"Status": "Enabled"})
    assert st.bucket_versioning()

    one = st.write_bytes("k", b"one")
    two = st.write_bytes("k", b"two")
    assert one.version_id and two.version_id and one.version_id != two.version_id
    assert st.read("k", version_id=one.version_id)[0] == b"one"
    assert st.read("k", version_id=two.version_id)[0] == b"two"
    assert st.read("k")[0] == b"two"
    assert st.head("k", version_id=one.version_id).size == 3  # type: ignore[union-attr]

    # a manifest's records pin versions: the files it names come back even after the keys are overwritten
    names = write_tree(tmp_path / "src")
    records = upload_files(st, "v1", tmp_path / "src", names)
    assert all(r.version_id for r in records.values())
    st.write_bytes("v1/tokens.bin", b"overwritten")
    download_files(st, "v1", records, tmp_path / "pulled")
    assert (tmp_path / "pulled" / "tokens.bin").read_bytes() == (tmp_path / "src" / "tokens.bin").read_bytes()


def test_radosgw_stopped_mid_upload_is_a_transient_error_and_a_later_upload_succeeds(
    rgw: RgwBucket, tmp_path: Path
) -> None:
    quick = {"max_attempts": 2, "connect_timeout": 1, "read_timeout": 5}
    st = storage(rgw, "runs/r1", multipart_mb=5, concurrency=1, **quick)
    st.write_bytes("ckpt/1/manifest.json", b"step 1")  # before the outage
    shard = tmp_path / "shard.pt"
    shard.write_bytes(os.urandom(16 * MiB))  # four parts of 5 MiB, one at a time

    parts: list[int] = []

    def stop_after_first_part(**_: object) -> None:
        parts.append(1)
        if len(parts) == 1:  # only radosgw: the monitor and the OSD (the data) stay up
            rgw.server.stop_gateway()

    st.client.meta.events.register("after-call.s3.UploadPart", stop_after_first_part)
    try:
        with pytest.raises(S3Error) as err:
            st.upload_file("ckpt/2/shard.pt", shard)
        assert len(parts) == 1  # it failed in the middle, not before the first part or after the last
        message = str(err.value)
        assert err.value.transient, message
        assert f"runs/r1/ckpt/2/shard.pt at {rgw.server.url}: the server did not answer" in message
        assert "after 2 attempts" in message
        with pytest.raises(S3Error, match="the server did not answer") as err:
            st.write_bytes("ckpt/2/manifest.json", b"step 2")  # before a write, too
        assert err.value.transient
    finally:
        rgw.server.start_gateway()

    info = st.upload_file("ckpt/2/shard.pt", shard)  # the same client, once the server is back
    assert info.size == 16 * MiB and info.etag.strip('"').endswith("-4")
    st.download_file("ckpt/2/shard.pt", tmp_path / "back.pt")
    assert (tmp_path / "back.pt").read_bytes() == shard.read_bytes()
    assert st.read("ckpt/1/manifest.json")[0] == b"step 1"  # what was written before the outage survived
