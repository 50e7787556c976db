"""Versioned datasets in S3 (llm.data.remote and `python -m llm.data`) against moto's server over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm.config import DataConfig
from llm.data import remote
from llm.data.prepare import is_prepared, load_dataset, prepare_dataset
from llm.errors import UsageError
from llm.storage.transfer import CorruptObject
from tests.helpers import REPO, child_env, write_code_corpus
from tests.s3_server import SECRET_KEY, Bucket, MotoServer, new_bucket

VOCAB = 300


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_code_corpus(tmp_path_factory.mktemp("s3-corpus"), seed=71)


@pytest.fixture(scope="module")
def prepared(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two prepared datasets of the same text (vocabularies 300 and 280): two distinct versions."""
    cache = tmp_path_factory.mktemp("s3-prepared")
    return tuple(  # type: ignore[return-value]
        prepare_dataset(DataConfig(data=str(corpus), data_cache=cache, vocab_size=v), progress=False)
        for v in (VOCAB, 280)
    )


def _same_files(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_push_lists_and_pulls_a_prepared_dataset(
    s3: Bucket, prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    uri = s3.uri("datasets/code")
    version = remote.push(prepared[0], uri)
    [listed] = remote.versions(uri)
    meta = json.loads((prepared[0] / "meta.json").read_text())
    assert listed.version == version and listed.kind == "prepared" and listed.parent is None
    assert listed.tokens == {s: meta["splits"][s]["tokens"] for s in ("train", "val")}
    assert listed.tokenizer_sha256 == meta["tokenizer_sha256"]
    assert listed.fingerprint == prepared[0].name and listed.code["git_sha"]
    assert listed.total_bytes == sum(f.stat().st_size for f in prepared[0].iterdir())

    pulled = remote.pull(uri, tmp_path / "out")
    assert pulled.downloaded and pulled.path == tmp_path / "out" and pulled.uri == f"{uri}@{version}"
    dataset = load_dataset(pulled.path)
    assert len(dataset.train) == listed.tokens["train"]
    _same_files(prepared[0], pulled.path, list(remote.PREPARED_FILES))
    assert _leftovers(tmp_path) == []  # the temporary sibling is gone

    before = (pulled.path.stat().st_ino, (pulled.path / "train.bin").stat().st_mtime_ns)
    again = remote.pull(f"{uri}@{version}", tmp_path / "out")
    assert not again.downloaded  # the verified copy is kept, not fetched again
    assert (pulled.path.stat().st_ino, (pulled.path / "train.bin").stat().st_mtime_ns) == before


def test_second_push_is_a_child_and_at_version_pulls_the_older(
    s3: Bucket, prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    uri = s3.uri("datasets/code")
    first = remote.push(prepared[0], uri)
    # an unfinished push (files, no manifest) is not a version: not listed, not the newest, not a parent
    s3.client().put_object(Bucket=s3.name, Key="datasets/code/versions/29990101T000000Z-abcdef/x", Body=b"x")
    second = remote.push(prepared[1], uri)
    assert [(m.version, m.parent) for m in remote.versions(uri)] == [(first, None), (second, first)]
    assert first < second

    newest = remote.pull(uri, tmp_path / "newest")
    older = remote.pull(f"{uri}@{first}", tmp_path / "older")
    assert newest.manifest.version == second and older.manifest.version == first
    _same_files(prepared[1], newest.path, ["tokenizer.json"])
    _same_files(prepared[0], older.path, ["tokenizer.json", "train.bin"])

    with pytest.raises(
        UsageError, match=r"no version 20000101T000000Z-000000 .*`python -m llm.data versions"
    ):
        remote.pull(f"{uri}@20000101T000000Z-000000", tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_a_second_push_under_the_same_version_id_is_refused(
    s3: Bucket, prepared: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = s3.uri("datasets/code")
    monkeypatch.setattr(remote, "_new_version_id", lambda after: "20261201T195500Z-abcdef")
    assert remote.push(prepared[0], uri) == "20261201T195500Z-abcdef"
    with pytest.raises(UsageError, match=r"20261201T195500Z-abcdef: another push took this version id"):
        remote.push(prepared[0], uri)  # its manifest is create-only: the first one stands
    [listed] = remote.versions(uri)
    assert listed.parent is None


def test_manifest_of_another_format_is_refused(s3: Bucket, prepared: tuple[Path, Path]) -> None:
    uri = s3.uri("datasets/code")
    version = remote.push(prepared[0], uri)
    key = f"datasets/code/versions/{version}/manifest.json"
    record = json.loads(s3.client().get_object(Bucket=s3.name, Key=key)["Body"].read())
    s3.client().put_object(Bucket=s3.name, Key=key, Body=json.dumps({**record, "format": 99}).encode())
    with pytest.raises(UsageError, match=r"manifest format 99, this checkout reads format 1"):
        remote.versions(uri)


def test_tampered_object_fails_the_pull_and_leaves_nothing_complete(
    s3: Bucket, prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    uri = s3.uri("datasets/code")
    version = remote.push(prepared[0], uri)
    key = f"datasets/code/versions/{version}/train.bin"
    body = bytearray((prepared[0] / "train.bin").read_bytes())
    body[100] ^= 0xFF  # same size, one byte flipped
    s3.client().put_object(Bucket=s3.name, Key=key, Body=bytes(body))
    with pytest.raises(CorruptObject) as err:
        remote.pull(uri, tmp_path / "out")
    message = str(err.value)
    assert f"{key}: its sha256 does not match the manifest" in message and "\n" not in message
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_disk_full_during_a_pull_keeps_nothing_and_the_next_pull_succeeds(
    s3: Bucket, prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    uri = s3.uri("datasets/code")
    remote.push(prepared[0], uri)
    size = remote.versions(uri)[0].total_bytes
    with _tmpfs(tmp_path / "small", f"{size // 2 // 4096 * 4096}") as disk:  # room for half of it
        with pytest.raises(
            UsageError, match=r"out: no space left on the device while pulling .* nothing was kept"
        ):
            remote.pull(uri, disk / "out")
        assert os.listdir(disk) == []  # neither the folder nor its temporary sibling
        subprocess.run(["mount", "-o", f"remount,size={size * 2}", str(disk)], check=True)
        pulled = remote.pull(uri, disk / "out")
        assert pulled.downloaded and is_prepared(pulled.path)
        assert os.listdir(disk) == ["out"]


def test_raw_text_is_pushed_as_text_and_prepared_on_pull(s3: Bucket, corpus: Path, tmp_path: Path) -> None:
    uri = s3.uri("datasets/raw")
    (corpus / ".hidden").write_text("not pushed")
    version = remote.push(corpus, uri)
    [listed] = remote.versions(uri)
    assert listed.kind == "raw" and listed.tokens is None and listed.tokenizer_sha256 is None
    assert sorted(listed.files) == sorted(p.name for p in corpus.glob("*.py"))

    data = DataConfig(data=None, data_cache=tmp_path / "cache", vocab_size=VOCAB)
    pulled = remote.pull(uri, data=data)  # no folder: into the data cache
    assert pulled.folder == tmp_path / "cache" / "s3" / s3.name / "datasets" / "raw" / version
    assert pulled.path.parent == tmp_path / "cache" and is_prepared(pulled.path)
    assert load_dataset(pulled.path).meta["vocab_size"] == VOCAB
    assert remote.provenance(pulled.path) == {"uri": uri, "version": version}
    assert remote.provenance(pulled.folder) == {"uri": uri, "version": version}
    assert not remote.pull(uri, data=data).downloaded


def test_versioned_bucket_records_object_versions_and_pulls_them_after_overwrite(
    moto_server: MotoServer, prepared: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket(moto_server.url, versioning=True)
    for key, value in bucket.env.items():
        monkeypatch.setenv(key, value)
    uri = bucket.uri("datasets/code")
    version = remote.push(prepared[0], uri)
    [listed] = remote.versions(uri)
    assert all(f.version_id for f in listed.files.values())
    key = f"datasets/code/versions/{version}/train.bin"
    bucket.client().put_object(Bucket=bucket.name, Key=key, Body=b"overwritten later")
    pulled = remote.pull(uri, tmp_path / "out")  # fetches the recorded object version, not the newest
    _same_files(prepared[0], pulled.path, ["train.bin"])


def test_push_refuses_a_half_prepared_folder_and_a_dataset_uri_without_a_name(
    prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    half = tmp_path / "half"
    half.mkdir()
    (half / "meta.json").write_text((prepared[0] / "meta.json").read_text())
    with pytest.raises(UsageError, match="not a complete prepared dataset"):
        remote.push(half, "s3://bucket/datasets/x")
    with pytest.raises(UsageError, match="no dataset name after the bucket"):
        remote.parse_dataset_uri("s3://bucket")


def _cli(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm.data", *map(str, args)], cwd=REPO, env=child_env(**env),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_push_versions_pull_and_one_line_errors(
    s3: Bucket, prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    uri = s3.uri("datasets/code")
    pushed = _cli(s3.env, "push", prepared[0], uri, "--no-progress")
    assert pushed.returncode == 0, pushed.stderr
    version = pushed.stdout.split("@")[1].split()[0]
    assert "(prepared, 4 files" in pushed.stdout

    listed = _cli(s3.env, "versions", uri)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[:2] == ["VERSION", "DATE"]
    tokens = sum(
        json.loads((prepared[0] / "meta.json").read_text())["splits"][s]["tokens"] for s in ("train", "val")
    )
    tokenizer = json.loads((prepared[0] / "meta.json").read_text())["tokenizer_sha256"][:12]
    assert row.split()[0] == version and f"{tokens:,}" in row and tokenizer in row and "prepared" in row

    pulled = _cli(s3.env, "pull", f"{uri}@{version}", tmp_path / "out", "--no-progress")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.splitlines()[-1] == str(tmp_path / "out") and is_prepared(tmp_path / "out")

    missing = _cli(s3.env, "pull", "s3://no-such-bucket-llm/datasets/code", tmp_path / "x")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and missing.stderr.startswith("error: ")
    assert "the bucket 'no-such-bucket-llm' does not exist" in missing.stderr
    bad = _cli(s3.env, "versions", "s3://Bad_Bucket/x")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a valid bucket name" in bad.stderr
    helped = _cli(s3.env, "push", "--help")
    assert helped.returncode == 0 and "new version" in helped.stdout
    everything = "".join(p.stdout + p.stderr for p in (pushed, listed, pulled, missing, bad))
    assert SECRET_KEY not in everything


def test_plan_checks_an_s3_data_uri_without_the_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from llm.train.plan import Plan

    monkeypatch.setenv("LLM_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: no call may go out
    monkeypatch.chdir(tmp_path)
    args = ["--model", "tiny", "--deepspeed", str(REPO / "ds_configs" / "cpu.json")]
    plan = Plan.from_argv([*args, "--data", "s3://bucket/datasets/code@20261201T195500Z-abcdef"])
    assert plan.cfg.data == "s3://bucket/datasets/code@20261201T195500Z-abcdef"
    with pytest.raises(UsageError, match="--data 's3://bucket': no dataset name"):
        Plan.from_argv([*args, "--data", "s3://bucket"])
