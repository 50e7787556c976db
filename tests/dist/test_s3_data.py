"""Training from `--data s3://...` with 2 ranks: one download per node into the cache, then reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm.config import DataConfig
from llm.data import remote
from llm.data.prepare import prepare_dataset
from tests.helpers import child_env, metrics, run_train, tiny_args, write_code_corpus
from tests.s3_server import SECRET_KEY, MotoServer, use_new_bucket

pytestmark = [pytest.mark.dist, pytest.mark.slow]

DOWNLOADED = "downloaded and verified into"
CACHED = "verified copy in"


def _train(run_dir: Path, data: str, cache: Path, env: dict[str, str]):  # type: ignore[no-untyped-def]
    args = tiny_args(
        run_dir, "--data", data, "--data-cache", cache, "--block-size", 32, "--max-steps", 4,
        "--eval-every", 2, "--eval-batches", 2, "--log-every", 1, "--save-every", 100,
    )  # fmt: skip
    return run_train(["--deepspeed", "ds_configs/cpu.json", *args], nproc=2, env=child_env(**env))


def test_two_ranks_train_from_an_s3_version_downloaded_once_then_cached(
    moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = use_new_bucket(moto_server.url, monkeypatch)
    (tmp_path / "corpus").mkdir()
    corpus = write_code_corpus(tmp_path / "corpus", seed=73)
    prepared = prepare_dataset(
        DataConfig(data=str(corpus), data_cache=tmp_path / "prep", vocab_size=300), progress=False
    )
    uri = bucket.uri("datasets/code")
    version = remote.push(prepared, uri)
    cache = tmp_path / "cache"
    folder = cache / "s3" / bucket.name / "datasets" / "code" / version

    first = _train(tmp_path / "run1", uri, cache, bucket.env)  # the newest version
    log = first.stdout + first.stderr
    assert first.returncode == 0, log[-4000:]
    assert log.count(DOWNLOADED) == 1 and CACHED not in log, log[-4000:]  # one rank of the node fetched it
    assert f"data: {uri}@{version}: {DOWNLOADED} {folder}" in log
    record = json.loads((tmp_path / "run1" / "run.json").read_text())
    assert record["dataset"]["path"] == str(folder.resolve())
    assert record["dataset"]["s3"] == {"uri": uri, "version": version}
    evals = metrics(tmp_path / "run1", "eval")
    assert [r["step"] for r in evals] == [0, 2, 4] and all(r["val_loss"] > 0 for r in evals)
    before = (
        folder.stat().st_ino,
        (folder / "train.bin").stat().st_ino,
        (folder / "train.bin").stat().st_mtime_ns,
    )

    second = _train(tmp_path / "run2", f"{uri}@{version}", cache, bucket.env)
    log2 = second.stdout + second.stderr
    assert second.returncode == 0, log2[-4000:]
    assert log2.count(CACHED) == 1 and DOWNLOADED not in log2, log2[-4000:]
    after = (
        folder.stat().st_ino,
        (folder / "train.bin").stat().st_ino,
        (folder / "train.bin").stat().st_mtime_ns,
    )
    assert after == before  # the very same files: nothing downloaded again
    assert len(metrics(tmp_path / "run2", "eval")) == 3

    # a version that does not exist: every rank stops, one line says why (exit 2 from each rank)
    missing = _train(tmp_path / "run3", f"{uri}@20000101T000000Z-000000", cache, bucket.env)
    log3 = missing.stdout + missing.stderr
    assert missing.returncode == 2, log3[-4000:]
    assert log3.count("error: --data") == 1 and "no version 20000101T000000Z-000000" in log3, log3[-4000:]
    for text in (log, log2, log3, (tmp_path / "run1" / "run.json").read_text()):
        assert SECRET_KEY not in text
