"""Text -> token memmaps: split by file, train the tokenizer on train files, encode, write `meta.json`.

A prepared dataset lives in `cache_dir/<fingerprint>/`: `train.bin` and `val.bin` (raw uint16 token ids,
each document followed by `<|endoftext|>`), `tokenizer.json` and `meta.json`. The fingerprint covers
the source, the sha256 of every file, the vocabulary size, the validation share and the format version,
so changing any of them gives a new folder and an unchanged source is never prepared twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from tqdm import tqdm

from llm.config import DataConfig
from llm.data.corpus import Document, TextSource, decode_text, open_source
from llm.data.tokenizer import EOT, Tokenizer, tokenizer_hash, train_tokenizer
from llm.errors import UsageError, read_json

DATASET_FORMAT_VERSION = 1
TOKEN_DTYPE = np.uint16  # vocabularies up to 65,536 tokens; DataConfig caps vocab_size below that
ENCODE_BATCH_BYTES = 4 << 20  # texts handed to the Rust encoder at once: parallel, yet bounded memory
TOKEN_BYTES = np.dtype(TOKEN_DTYPE).itemsize
SPLITS = ("train", "val")


@dataclass(frozen=True)
class PreparedDataset:
    path: Path
    meta: dict[str, Any]
    train: np.memmap
    val: np.memmap
    tokenizer: Tokenizer

    def split(self, name: str) -> np.memmap:
        return {"train": self.train, "val": self.val}[name]


def _file_hashes(source: TextSource, docs: list[Document]) -> list[str]:
    return [hashlib.sha256(source.read_bytes(doc)).hexdigest() for doc in docs]


def _fingerprint(cfg: DataConfig, source: TextSource, docs: list[Document], hashes: list[str]) -> str:
    key = {
        "format_version": DATASET_FORMAT_VERSION,
        "source": source.describe(),
        "files": [[doc.name, sha] for doc, sha in zip(docs, hashes, strict=True)],
        "vocab_size": cfg.vocab_size,
        "val_fraction": cfg.val_fraction,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def dataset_dir(cfg: DataConfig) -> Path:
    """Where the dataset for `cfg` lives (or will): `cfg.cache_dir / <fingerprint>`. Reads every file."""
    source = open_source(cfg.source)
    docs = source.documents()
    return Path(cfg.cache_dir) / _fingerprint(cfg, source, docs, _file_hashes(source, docs))


def split_of(name: str, val_fraction: float) -> str:
    """A hash of the name decides, so a file keeps its split when other files come or go."""
    return "val" if _unit_hash(name) < val_fraction else "train"


def _unit_hash(name: str) -> float:
    return int(hashlib.sha256(name.encode()).hexdigest()[:15], 16) / 16**15


def split_by_file(
    docs: list[Document], val_fraction: float, *, spec: str | None
) -> dict[str, list[Document]]:
    """Train/val split by whole files, with at least one file in each."""
    if len(docs) < 2:
        raise UsageError(
            f"--data {spec}: only one file; validation is split by file, so give at least two files "
            "(a folder or a glob)"
        )
    splits: dict[str, list[Document]] = {"train": [], "val": []}
    for doc in docs:
        splits[split_of(doc.name, val_fraction)].append(doc)
    # too few files for the share to land anywhere: move the closest file across
    if not splits["val"]:
        nearest = min(splits["train"], key=lambda d: _unit_hash(d.name))
        splits["train"].remove(nearest)
        splits["val"].append(nearest)
    if not splits["train"]:
        nearest = max(splits["val"], key=lambda d: _unit_hash(d.name))
        splits["val"].remove(nearest)
        splits["train"].append(nearest)
    return splits


def is_prepared(path: Path) -> bool:
    """True when `path` holds a finished dataset of the current format (meta.json is written last)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        return meta["format_version"] == DATASET_FORMAT_VERSION and all(
            (path / f"{s}.bin").stat().st_size == meta["splits"][s]["tokens"] * TOKEN_BYTES for s in SPLITS
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def prepare_dataset(cfg: DataConfig, *, progress: bool = True) -> Path:
    """Prepare the dataset for `cfg` unless it already exists; returns its folder.

    Built in a temporary sibling folder and renamed into place, so a crash never leaves a half
    dataset and two processes racing on a shared cache both end with the same complete folder.
    """
    source = open_source(cfg.source)
    docs = source.documents()
    hashes = _file_hashes(source, docs)
    final = Path(cfg.cache_dir) / _fingerprint(cfg, source, docs, hashes)
    if is_prepared(final):
        return final
    splits = split_by_file(docs, cfg.val_fraction, spec=cfg.source)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _build(tmp, cfg, source, splits, dict(zip((d.name for d in docs), hashes, strict=True)), progress)
        _move_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _move_into_place(tmp: Path, final: Path) -> None:
    if final.exists() and not is_prepared(final):
        shutil.rmtree(final)  # a leftover of an older format or a damaged copy
    try:
        os.rename(tmp, final)
    except OSError:
        if not is_prepared(final):  # lost a race only if the winner's copy is whole
            raise


def _build(
    out: Path,
    cfg: DataConfig,
    source: TextSource,
    splits: dict[str, list[Document]],
    sha256: dict[str, str],
    progress: bool,
) -> None:
    started = time.perf_counter()
    train_docs = splits["train"]
    tokenizer = train_tokenizer(
        (source.read_text(d) for d in train_docs),
        vocab_size=cfg.vocab_size,
        num_texts=len(train_docs),
        progress=progress,
    )
    tokenizer.save(out / "tokenizer.json")
    total = sum(d.size for docs in splits.values() for d in docs)
    stats: dict[str, dict[str, int]] = {}
    with tqdm(total=total, unit="B", unit_scale=True, desc="encoding", disable=not progress) as bar:
        for name in SPLITS:
            stats[name] = _encode_split(out / f"{name}.bin", source, splits[name], tokenizer, bar)
    meta = {
        "format_version": DATASET_FORMAT_VERSION,
        "source": source.describe(),
        "created_unix": int(time.time()),
        "prepare_seconds": round(time.perf_counter() - started, 2),
        "dtype": np.dtype(TOKEN_DTYPE).name,
        "separator": f"{EOT} after each document",
        "requested_vocab_size": cfg.vocab_size,
        "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.eot_id,
        "val_fraction": cfg.val_fraction,
        "tokenizer_sha256": tokenizer_hash(out / "tokenizer.json"),
        "tokenizers_version": tokenizers.__version__,
        "splits": stats,
        "files": _file_records(splits, sha256),
    }
    # meta.json last: its presence marks the folder complete
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _file_records(splits: dict[str, list[Document]], sha256: dict[str, str]) -> list[dict[str, Any]]:
    split_of_doc = {d.name: (d, split) for split, docs in splits.items() for d in docs}
    return [
        {"name": name, "sha256": sha256[name], "bytes": doc.size, "split": split}
        for name, (doc, split) in sorted(split_of_doc.items())
    ]


def _batches(source: TextSource, docs: list[Document]) -> Iterator[tuple[list[str], int]]:
    """Documents in groups of about ENCODE_BATCH_BYTES: (texts, bytes on disk)."""
    texts: list[str] = []
    size = 0
    for doc in docs:
        texts.append(decode_text(source.read_bytes(doc)))
        size += doc.size
        if size >= ENCODE_BATCH_BYTES:
            yield texts, size
            texts, size = [], 0
    if texts:
        yield texts, size


def _encode_split(
    path: Path, source: TextSource, docs: list[Document], tokenizer: Tokenizer, bar: tqdm
) -> dict[str, int]:
    """Stream the split's documents to `path` as uint16 ids; returns token, byte and file counts."""
    tokens = text_bytes = 0
    with path.open("wb") as f:
        for texts, disk_bytes in _batches(source, docs):
            for ids in tokenizer.encode_batch(texts):
                ids.append(tokenizer.eot_id)
                f.write(np.asarray(ids, dtype=TOKEN_DTYPE).tobytes())
                tokens += len(ids)
            text_bytes += sum(len(t.encode("utf-8")) for t in texts)
            bar.update(disk_bytes)
    # bytes of the text the tokens stand for (utf-8, separators excluded): the bits-per-byte denominator
    return {"tokens": tokens, "bytes": text_bytes, "files": len(docs)}


def bytes_per_token(meta: dict[str, Any], split: str = "val") -> float:
    """Text bytes per token: bits per byte = loss in nats / ln(2) / bytes_per_token."""
    counts = meta["splits"][split]
    return counts["bytes"] / counts["tokens"]


def load_dataset(path: Path) -> PreparedDataset:
    """Open a prepared dataset: memory-mapped token files, its meta and its tokenizer."""
    path = Path(path)
    meta_path = path / "meta.json"
    redo = f"delete {path} and prepare it again"
    meta = read_json(meta_path, what="prepared dataset's meta.json", fix=redo)
    if not isinstance(meta, dict) or meta.get("format_version") != DATASET_FORMAT_VERSION:
        raise UsageError(f"{meta_path}: not format version {DATASET_FORMAT_VERSION}; {redo}")
    if not is_prepared(path):
        raise UsageError(f"{path}: token files missing or of the wrong size; {redo}")
    tokenizer_path = path / "tokenizer.json"
    if tokenizer_hash(tokenizer_path) != meta.get("tokenizer_sha256"):
        raise UsageError(f"{tokenizer_path}: sha256 differs from meta.json; {redo}")
    train, val = (np.memmap(path / f"{s}.bin", dtype=TOKEN_DTYPE, mode="r") for s in SPLITS)
    return PreparedDataset(path, meta, train, val, Tokenizer.from_file(tokenizer_path))
