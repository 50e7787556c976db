"""llm/data: sources, tokenizer, prepared datasets and batch samplers, on tiny inputs."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from llm.config import DataConfig
from llm.data import corpus as corpus_module
from llm.data import encode as encode_module
from llm.data import prepare as prepare_module
from llm.data.corpus import BuiltinCorpus, Document, LocalFiles, open_source, single_file_chunk_bytes
from llm.data.loader import BatchSampler, eval_batches
from llm.data.prepare import (
    bytes_per_token,
    dataset_dir,
    load_dataset,
    prepare_dataset,
    split_of,
    tokenizer_sample,
)
from llm.data.tokenizer import EOT, Tokenizer
from llm.errors import UsageError
from tests.helpers import metrics, run_train, tiny_args

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()


def write_corpus(root: Path, n: int = 30) -> Path:
    rng = random.Random(0)
    for i in range(n):
        path = root / f"part{i % 3}" / f"doc{i:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = (" ".join(rng.choices(WORDS, k=12)) for _ in range(20))
        path.write_text(f"# document {i} — ünïcode\n" + "\n".join(lines) + "\n")
    return root


def write_one_file(path: Path, lines: int = 3000) -> Path:
    """One text file of about 70 bytes a line (3,000 lines: ~210 KB)."""
    rng = random.Random(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{i:05d} ünï " + " ".join(rng.choices(WORDS, k=10)) + "\n" for i in range(lines))
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def prepared(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, Path]:
    cfg = DataConfig(data=str(corpus), data_cache=tmp_path_factory.mktemp("cache"), vocab_size=300)
    return cfg, prepare_dataset(cfg, progress=False)


# --- sources


def test_builtin_corpus_is_stdlib_code_without_tests() -> None:
    docs = BuiltinCorpus().documents()
    assert len(docs) > 500
    assert all(d.name.endswith(".py") for d in docs)
    test_dirs = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
    assert not [d.name for d in docs if test_dirs & set(d.name.split("/")[:-1])]
    assert [d.name for d in docs] == sorted(d.name for d in docs)
    assert "json/decoder.py" in {d.name for d in docs}


def test_local_folder_skips_binary_and_hidden(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep.md").write_text("deep")
    (tmp_path / "top.txt").write_text("top")
    (tmp_path / "blob.bin").write_bytes(b"PK\x00\x01binary")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("hidden")
    source = open_source(str(tmp_path))
    assert [d.name for d in source.documents()] == ["a/b/deep.md", "top.txt"]
    assert source.read_text(source.documents()[0]) == "deep"


def test_local_glob_and_single_file(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "one.md").write_text("one")
    (tmp_path / "docs" / "sub" / "two.md").write_text("two")
    (tmp_path / "docs" / "skip.txt").write_text("skip")
    glob_source = open_source(str(tmp_path / "docs" / "**" / "*.md"))
    assert [d.name for d in glob_source.documents()] == ["one.md", "sub/two.md"]
    single = LocalFiles(str(tmp_path / "docs" / "skip.txt"))
    assert [d.name for d in single.documents()] == ["skip.txt#000000", "skip.txt#000001"]  # see below


def test_invalid_bytes_are_replaced(tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    source = open_source(str(tmp_path))
    assert "".join(source.read_text(d) for d in source.documents()) == "caf\ufffd"


@pytest.mark.parametrize("suffix", ["missing", "nothing/**/*.md"])
def test_missing_path_is_a_usage_error(tmp_path: Path, suffix: str) -> None:
    spec = str(tmp_path / suffix)
    with pytest.raises(UsageError, match="--data") as err:
        open_source(spec)
    assert spec in str(err.value) and "\n" not in str(err.value)


def test_an_s3_uri_is_not_a_text_source() -> None:
    with pytest.raises(UsageError, match=r"python -m llm\.data pull"):
        open_source("s3://bucket/corpus")


# --- prepare


def test_meta_records_every_file(prepared: tuple[DataConfig, Path], corpus: Path) -> None:
    _, path = prepared
    meta = json.loads((path / "meta.json").read_text())
    files = {f["name"]: f for f in meta["files"]}
    assert len(files) == 30
    for name, record in files.items():
        data = (corpus / name).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["bytes"] == len(data)
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 300
    assert meta["splits"]["train"]["tokens"] > 0 and meta["splits"]["val"]["tokens"] > 0
    assert 1.0 < bytes_per_token(meta) < 10.0


def test_split_is_by_file_and_stable(prepared: tuple[DataConfig, Path], tmp_path: Path) -> None:
    cfg, path = prepared
    meta = json.loads((path / "meta.json").read_text())
    splits = {f["name"]: f["split"] for f in meta["files"]}
    assert set(splits.values()) == {"train", "val"}
    other = prepare_dataset(cfg.model_copy(update={"data_cache": tmp_path}), progress=False)
    assert {f["name"]: f["split"] for f in json.loads((other / "meta.json").read_text())["files"]} == splits


def test_train_bin_decodes_to_train_text(prepared: tuple[DataConfig, Path], corpus: Path) -> None:
    _, path = prepared
    ds = load_dataset(path)
    for split in ("train", "val"):
        names = [f["name"] for f in ds.meta["files"] if f["split"] == split]
        expected = "".join((corpus / n).read_text() + EOT for n in names)
        assert ds.tokenizer.decode(ds.split(split).tolist()) == expected
        assert len(ds.split(split)) == ds.meta["splits"][split]["tokens"]
    text = "def f(x):\n    return x  # ünïcode, emoji 🐍, <|endoftext|> as text"
    ids = ds.tokenizer.encode(text)
    assert ds.tokenizer.decode(ids) == text and ds.tokenizer.eot_id not in ids


def test_prepare_reuses_and_content_change_gives_new_dir(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", n=4)
    cfg = DataConfig(data=str(corpus), data_cache=tmp_path / "cache", vocab_size=260)
    first = prepare_dataset(cfg, progress=False)
    assert dataset_dir(cfg) == first
    stamp = (first / "meta.json").stat().st_mtime_ns
    assert prepare_dataset(cfg, progress=False) == first
    assert (first / "meta.json").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no temp folder left
    (corpus / "part0" / "doc00.txt").write_text("changed")
    assert prepare_dataset(cfg, progress=False) != first


def expected_split_text(meta: dict, root: Path, split: str) -> str:
    """A split's text as documents: whole files, or whole chunks; a separator where a text ends."""
    records = [r for r in meta["files"] if r["split"] == split]
    text = ""
    for i, record in enumerate(records):
        data = (root / record["name"].split("#")[0]).read_bytes()
        text += data[record["offset"] : record["offset"] + record["bytes"]].decode()
        following = records[i + 1] if i + 1 < len(records) else None
        continued = following is not None and following["name"].split("#")[0] == record["name"].split("#")[0]
        if not (continued and following["offset"] == record["offset"] + record["bytes"]):
            text += EOT
    return text


def test_lone_file_is_cut_into_chunks_at_line_boundaries(tmp_path: Path) -> None:
    path = write_one_file(tmp_path / "one.txt")
    data = path.read_bytes()
    docs = open_source(str(path)).documents()
    assert [d.name for d in docs] == [f"one.txt#{i:06d}" for i in range(len(docs))]
    assert 18 <= len(docs) <= 21  # ~SINGLE_FILE_CHUNKS of ~len/20 bytes each
    assert b"".join(data[d.offset : d.offset + d.size] for d in docs) == data
    assert all(data[d.offset - 1 : d.offset] == b"\n" for d in docs[1:])  # each chunk starts a line
    assert all(b.continues(a) for a, b in itertools.pairwise(docs))
    # the same rule for a folder or glob that holds one file
    assert [d.name for d in open_source(str(tmp_path)).documents()] == [d.name for d in docs]


@pytest.mark.parametrize(
    ("size", "chunk"),
    [(100 << 20, 1 << 20), (1 << 20, (1 << 20) // 20), (20_000, 4096), (5_000, 2_500), (3, 1), (1, 1)],
)
def test_lone_file_chunk_size(size: int, chunk: int) -> None:
    """About 20 chunks, at most 1 MiB and at least 4 KiB each, but never fewer than two chunks."""
    assert single_file_chunk_bytes(size) == chunk


def test_small_lone_file_still_holds_out_a_chunk(tmp_path: Path) -> None:
    path = write_one_file(tmp_path / "small.txt", lines=70)  # ~5 KB: under two 4 KiB chunks
    docs = open_source(str(path)).documents()
    assert len(docs) == 2 and path.stat().st_size < 2 * corpus_module.MIN_CHUNK_BYTES
    cfg = DataConfig(data=str(path), data_cache=tmp_path / "cache", vocab_size=260)
    meta = load_dataset(prepare_dataset(cfg, progress=False)).meta
    assert sorted(r["split"] for r in meta["files"]) == ["train", "val"]


def test_large_file_in_a_folder_is_chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus_module, "CHUNK_BYTES", 16 << 10)
    write_one_file(tmp_path / "big.txt", lines=1000)  # ~70 KB: ~5 chunks of 16 KiB
    (tmp_path / "small.txt").write_text("small\n")
    names = [d.name for d in open_source(str(tmp_path)).documents()]
    assert names[-1] == "small.txt" and len(names) >= 5
    assert names[:-1] == [f"big.txt#{i:06d}" for i in range(len(names) - 1)]


def test_a_line_longer_than_the_search_is_cut_between_characters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus_module, "NEWLINE_SEARCH_BYTES", 100)
    path = tmp_path / "line.txt"
    path.write_text("b" + "aé€🐍" * 20_000)  # one 200 KB line of 1-, 2-, 3- and 4-byte characters
    docs = open_source(str(path)).documents()
    assert len(docs) >= 18
    source = open_source(str(path))
    # strict decoding: no chunk starts or ends inside a character
    assert "".join(source.read_bytes(d).decode("utf-8", errors="strict") for d in docs) == path.read_text()


def test_lone_file_prepares_with_whole_chunks_split_by_name(tmp_path: Path) -> None:
    path = write_one_file(tmp_path / "corpus" / "one.txt")
    cfg = DataConfig(data=str(path), data_cache=tmp_path / "cache", vocab_size=300, val_fraction=0.2)
    ds = load_dataset(prepare_dataset(cfg, progress=False))
    records = ds.meta["files"]
    assert len(records) >= 18 and all("#" in r["name"] for r in records)
    # each chunk lands where the hash of its name says (not, say, the last 5% of the file)...
    assert {r["name"]: r["split"] for r in records} == {r["name"]: split_of(r["name"], 0.2) for r in records}
    assert {"train", "val"} == {r["split"] for r in records}
    # ...and each split holds whole chunks, one text per run of consecutive chunks
    for split in ("train", "val"):
        assert ds.tokenizer.decode(ds.split(split).tolist()) == expected_split_text(
            ds.meta, path.parent, split
        )
    # a changed line gives a new dataset
    path.write_text(path.read_text().replace("00007", "seven", 1))
    assert prepare_dataset(cfg, progress=False) != ds.path


def test_too_little_text_to_split_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "only.txt").write_text("x")
    cfg = DataConfig(data=str(tmp_path / "only.txt"), data_cache=tmp_path / "cache")
    with pytest.raises(UsageError, match="too little text") as err:
        prepare_dataset(cfg, progress=False)
    assert "\n" not in str(err.value)


def test_many_small_batches_keep_document_order(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches encode concurrently; the token file still follows the document order exactly."""
    monkeypatch.setattr(encode_module, "ENCODE_BATCH_BYTES", 2000)  # a batch per document or two
    cfg = DataConfig(data=str(corpus), data_cache=tmp_path, vocab_size=300)
    ds = load_dataset(prepare_dataset(cfg, progress=False))
    for split in ("train", "val"):
        assert ds.tokenizer.decode(ds.split(split).tolist()) == expected_split_text(ds.meta, corpus, split)


def test_tokenizer_sample_is_bounded_and_stable(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = [Document(name=f"d{i:03d}", path="", size=100) for i in range(100)]
    assert tokenizer_sample(docs) == docs  # under the cap: every train document
    monkeypatch.setattr(prepare_module, "TOKENIZER_TRAIN_BYTES", 2_550)
    sample = tokenizer_sample(docs)
    assert len(sample) == 25 and sample == sorted(sample, key=lambda d: d.name)
    assert sample != docs[:25] and tokenizer_sample(list(reversed(docs))) == sample


def test_tokenizer_trains_off_the_main_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The merges run in Rust for up to minutes; the main thread must stay free to act on Ctrl-C."""
    threads = []
    train = prepare_module.train_tokenizer

    def recording(*args: object, **kwargs: Any) -> Tokenizer:
        threads.append(threading.current_thread())
        return train(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(prepare_module, "train_tokenizer", recording)
    path = write_one_file(tmp_path / "one.txt", lines=300)
    prepare_dataset(DataConfig(data=str(path), data_cache=tmp_path / "a", vocab_size=260), progress=False)
    assert threads and threads[0] is not threading.main_thread()

    def failing(*args: object, **kwargs: object) -> Tokenizer:
        raise ValueError("trainer failed")

    monkeypatch.setattr(prepare_module, "train_tokenizer", failing)
    with pytest.raises(ValueError, match="trainer failed"):  # reaches the caller, not lost in the thread
        prepare_dataset(DataConfig(data=str(path), data_cache=tmp_path / "b", vocab_size=260), progress=False)


def test_progress_shows_each_phase_in_bytes_per_second(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_one_file(tmp_path / "one.txt", lines=300)
    cfg = DataConfig(data=str(path), data_cache=tmp_path / "cache", vocab_size=260)
    prepare_dataset(cfg, progress=True)
    err = capsys.readouterr().err
    for phase in ("hashing", "tokenizer", "encoding"):
        assert re.search(rf"{phase}[^\r\n]*100%[^\r\n]*B/s", err), f"no {phase} bar with B/s in {err!r}"
    prepare_dataset(cfg.model_copy(update={"data_cache": tmp_path / "quiet"}), progress=False)
    assert capsys.readouterr().err == ""


def test_one_text_file_trains(tmp_path: Path) -> None:
    """The real trainer, one process, on `--data one_file.txt` (it was refused before chunking)."""
    path = write_one_file(tmp_path / "one_file.txt")
    run_dir = tmp_path / "run"
    args = [*tiny_args(run_dir), "--data", path, "--data-cache", tmp_path / "cache", "--vocab-size", "300"]
    done = run_train([*args, "--max-steps", "3", "--eval-every", "3", "--eval-batches", "1"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["step"] for r in metrics(run_dir, "train")][-1] == 3
    assert metrics(run_dir, "eval")
    dataset = json.loads((run_dir / "run.json").read_text())["dataset"]
    assert "one_file.txt" in dataset["meta"]["source"]


def test_load_without_meta_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"meta\.json"):
        load_dataset(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(UsageError, match="invalid JSON"):
        load_dataset(tmp_path)


# --- samplers

TOKENS = np.arange(1000, dtype=np.uint16)


def sampler(rank: int = 0, seed: int = 7) -> BatchSampler:
    return BatchSampler(TOKENS, block_size=16, micro_batch=4, rank=rank, world_size=2, seed=seed)


def test_batch_is_shifted_window() -> None:
    x, y = sampler().next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)


def test_sampler_is_a_function_of_seed_rank_position() -> None:
    a, b = sampler(), sampler()
    for _ in range(3):
        assert all(torch.equal(u, v) for u, v in zip(a.next_batch(), b.next_batch(), strict=True))
    assert not torch.equal(sampler(rank=0).next_batch()[0], sampler(rank=1).next_batch()[0])
    assert not torch.equal(sampler(seed=1).next_batch()[0], sampler(seed=2).next_batch()[0])


def test_sampler_resumes_exactly() -> None:
    full = sampler()
    stream = [full.next_batch()[0] for _ in range(10)]
    first = sampler()
    for _ in range(4):
        first.next_batch()
    resumed = sampler()
    resumed.load_state_dict(first.state_dict())
    assert resumed.position == 16  # samples drawn: 4 micro-batches of 4
    assert all(torch.equal(resumed.next_batch()[0], expected) for expected in stream[4:])
    with pytest.raises(UsageError, match="seed"):
        sampler(seed=8).load_state_dict(first.state_dict())


def test_the_stream_does_not_depend_on_the_micro_batch_split() -> None:
    """Micro-batch 4 x 2 draws the very samples of micro-batch 8 x 1 (gradient accumulation is exact)."""
    small = BatchSampler(TOKENS, block_size=16, micro_batch=4, rank=1, world_size=2, seed=3)
    large = BatchSampler(TOKENS, block_size=16, micro_batch=8, rank=1, world_size=2, seed=3)
    halves = torch.cat([small.next_batch()[0], small.next_batch()[0]])
    assert torch.equal(halves, large.next_batch()[0])
    assert small.position == large.position == 8


def test_too_short_split_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--block-size"):
        BatchSampler(TOKENS[:16], block_size=16, micro_batch=1, rank=0, world_size=1, seed=0)
    with pytest.raises(UsageError, match="--block-size"):
        eval_batches(TOKENS[:10], block_size=16, micro_batch=1, num_batches=1, rank=0, world_size=1)


def test_eval_batches_fixed_and_disjoint_across_ranks() -> None:
    kwargs = {"block_size": 16, "micro_batch": 3, "num_batches": 2, "world_size": 2}
    rank0 = eval_batches(TOKENS, rank=0, **kwargs)
    assert len(rank0) == 2 and rank0[0][0].shape == (3, 16)
    again = eval_batches(TOKENS, rank=0, **kwargs)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(rank0, again, strict=True))
    starts = [{int(s) for x, _ in eval_batches(TOKENS, rank=r, **kwargs) for s in x[:, 0]} for r in (0, 1)]
    assert not starts[0] & starts[1] and len(starts[0] | starts[1]) == 12
    assert max(starts[0] | starts[1]) == len(TOKENS) - 17  # the windows reach the end of the split
