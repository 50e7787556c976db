"""llm.storage.s3 against a real S3 endpoint (moto's server over HTTP on loopback)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llm.errors import UsageError
from llm.storage.s3 import PreconditionFailed, S3Error, S3Settings, S3Storage
from llm.storage.transfer import CorruptObject, download_files, upload_files
from llm.storage.uri import parse_s3_uri
from tests.s3_server import Bucket, MotoServer, use_new_bucket


def storage(s3: Bucket, prefix: str = "p", **settings: object) -> S3Storage:
    return S3Storage(parse_s3_uri(s3.uri(prefix), what="test"), S3Settings(**settings))  # type: ignore[arg-type]


def test_uri_parsing_names_the_problem() -> None:
    uri = parse_s3_uri(
        "s3://my-bucket/datasets/code@20261201T000000Z-ab12", what="--data", allow_version=True
    )
    assert (uri.bucket, uri.prefix, uri.version) == ("my-bucket", "datasets/code", "20261201T000000Z-ab12")
    assert str(uri) == "s3://my-bucket/datasets/code@20261201T000000Z-ab12"
    for bad, words in [
        ("s3://A_B/x", "not a valid bucket name"),
        ("s3://bucket/x@", "malformed"),
        ("/local/path", "not an S3 URI"),
        ("s3://bucket/a//b", "empty path segment"),
    ]:
        with pytest.raises(UsageError, match=words):
            parse_s3_uri(bad, what="--data", allow_version=True)
    with pytest.raises(UsageError, match="'@' is not allowed"):
        parse_s3_uri("s3://bucket/x@v1", what="--checkpoint-uri")


def test_files_round_trip_with_multipart_and_a_tampered_object_is_refused(s3: Bucket, tmp_path: Path) -> None:
    st = storage(s3, multipart_mb=5)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(11 << 20))  # three parts of 5 MiB
    (src / "sub" / "small.txt").write_text("hello")
    records = upload_files(st, "tree", src, ["big.bin", "sub/small.txt"])
    assert st.files("tree") == {"big.bin": 11 << 20, "sub/small.txt": 5}
    assert st.children() == ["tree"] and st.children("tree") == ["big.bin", "sub"]
    # the ETag of a multipart object has a part count: the transfer manager did split it
    assert st.head("tree/big.bin").etag.strip('"').endswith("-3")  # type: ignore[union-attr]
    download_files(st, "tree", records, tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()

    s3.client().put_object(Bucket=s3.name, Key="p/tree/sub/small.txt", Body=b"HELLO")  # tampered
    with pytest.raises(CorruptObject, match=r"small.txt: its sha256 does not match"):
        download_files(st, "tree", records, tmp_path / "out2")
    s3.client().put_object(Bucket=s3.name, Key="p/tree/sub/small.txt", Body=b"hell")  # truncated
    with pytest.raises(CorruptObject, match=r"4 bytes downloaded, the manifest says 5"):
        download_files(st, "tree", records, tmp_path / "out3")


def test_conditional_writes_create_once_and_swap_only_the_version_read(s3: Bucket) -> None:
    st = storage(s3)
    first = st.write_bytes("LATEST", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        st.write_bytes("LATEST", b"2", if_none_match=True)
    second = st.write_bytes("LATEST", b"3", if_match=first.etag)
    with pytest.raises(PreconditionFailed):
        st.write_bytes("LATEST", b"4", if_match=first.etag)  # stale: someone moved it since
    assert st.read("LATEST") == (b"3", second.etag)


def test_versioned_bucket_reports_object_versions(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = storage(use_new_bucket(moto_server.url, monkeypatch, versioning=True))
    assert st.bucket_versioning()
    one = st.write_bytes("k", b"one")
    two = st.write_bytes("k", b"two")
    assert one.version_id and two.version_id and one.version_id != two.version_id
    assert st.read("k", version_id=one.version_id)[0] == b"one"


def test_errors_name_the_endpoint_and_the_fix(s3: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = S3Storage(parse_s3_uri("s3://no-such-bucket-here/x", what="t"))
    with pytest.raises(
        S3Error, match=r"no-such-bucket-here.* at http://127\.0\.0\.1:\d+: the bucket .* does not exist"
    ):
        missing.check_bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(S3Error, match="no AWS credentials found"):
        storage(s3).check_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    nowhere = S3Storage(
        parse_s3_uri(s3.uri("x"), what="t"),
        S3Settings(endpoint_url="http://127.0.0.1:9", max_attempts=1, connect_timeout=1),
    )
    with pytest.raises(S3Error, match=r"127\.0\.0\.1:9: the server did not answer") as err:
        nowhere.check_bucket()
    assert err.value.transient


def test_aws_endpoint_url_alone_reaches_a_server_on_an_address(
    s3: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLM_S3_ENDPOINT_URL")
    # the variable other AWS tools read, with a host name (as a private server's would be): path-style
    # URLs, since BUCKET.localhost does not resolve
    named = s3.endpoint.replace("127.0.0.1", "localhost")
    monkeypatch.setenv("AWS_ENDPOINT_URL", named)
    st = storage(s3)
    assert st.endpoint == named
    st.write_bytes("k", b"v")
    assert st.read_bytes("k") == b"v"
