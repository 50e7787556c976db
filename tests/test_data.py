"""llm/data: sources, tokenizer, prepared datasets and batch samplers, on tiny inputs."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from llm.config import DataConfig
from llm.data.corpus import BuiltinCorpus, LocalFiles, open_source
from llm.data.loader import BatchSampler, eval_batches
from llm.data.prepare import bytes_per_token, dataset_dir, load_dataset, prepare_dataset
from llm.data.tokenizer import EOT
from llm.errors import UsageError

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()


def write_corpus(root: Path, n: int = 30) -> Path:
    rng = random.Random(0)
    for i in range(n):
        path = root / f"part{i % 3}" / f"doc{i:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = (" ".join(rng.choices(WORDS, k=12)) for _ in range(20))
        path.write_text(f"# document {i} — ünïcode\n" + "\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def prepared(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, Path]:
    cfg = DataConfig(source=str(corpus), cache_dir=tmp_path_factory.mktemp("cache"), vocab_size=300)
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
    assert [d.name for d in single.documents()] == ["skip.txt"]


def test_invalid_bytes_are_replaced(tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    source = open_source(str(tmp_path))
    assert source.read_text(source.documents()[0]) == "caf\ufffd"


@pytest.mark.parametrize("suffix", ["missing", "nothing/**/*.md"])
def test_missing_path_is_a_usage_error(tmp_path: Path, suffix: str) -> None:
    spec = str(tmp_path / suffix)
    with pytest.raises(UsageError, match="--data") as err:
        open_source(spec)
    assert spec in str(err.value) and "\n" not in str(err.value)


def test_s3_is_not_supported_yet() -> None:
    with pytest.raises(UsageError, match="not supported yet"):
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
    other = prepare_dataset(cfg.model_copy(update={"cache_dir": tmp_path}), progress=False)
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
    cfg = DataConfig(source=str(corpus), cache_dir=tmp_path / "cache", vocab_size=260)
    first = prepare_dataset(cfg, progress=False)
    assert dataset_dir(cfg) == first
    stamp = (first / "meta.json").stat().st_mtime_ns
    assert prepare_dataset(cfg, progress=False) == first
    assert (first / "meta.json").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no temp folder left
    (corpus / "part0" / "doc00.txt").write_text("changed")
    assert prepare_dataset(cfg, progress=False) != first


def test_single_file_cannot_be_split(tmp_path: Path) -> None:
    (tmp_path / "only.txt").write_text("one file")
    cfg = DataConfig(source=str(tmp_path / "only.txt"), cache_dir=tmp_path / "cache")
    with pytest.raises(UsageError, match="at least two files"):
        prepare_dataset(cfg, progress=False)


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
