"""Text -> token memmaps: split by document, train the tokenizer on train text, encode, write `meta.json`.

A prepared dataset lives in `data_cache/<fingerprint>/`: `train.bin` and `val.bin` (raw uint16 token ids,
each document's text followed by `<|endoftext|>`), `tokenizer.json` and `meta.json`. A document is a
file or, for a lone or a large file, a chunk of it cut at a line boundary (llm/data/corpus.py); the
split assigns whole documents by a hash of their names, so validation text is never a slice of one.
The fingerprint covers the source, the sha256 of every document, the vocabulary size, the validation
share, the tokenizer's sample cap and the format version, so changing any of them gives a new folder
and an unchanged source is never prepared twice. Memory stays bounded however large the corpus: files
are read one document at a time, encoded in a few bounded batches (llm/data/encode.py), and the
tokenizer is trained on at most TOKENIZER_TRAIN_BYTES of the train documents.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import tokenizers
from tqdm import tqdm

from llm.config import DataConfig
from llm.data.corpus import Document, TextSource, open_source
from llm.data.encode import TOKEN_DTYPE, write_tokens
from llm.data.tokenizer import EOT, Tokenizer, tokenizer_hash, train_tokenizer
from llm.errors import UsageError, read_json

DATASET_FORMAT_VERSION = 2  # 2: large and lone files cut into chunks; phase timings in meta
# The BPE trainer's memory and time grow with its input: past this share of train text, it learns from
# a sample of whole documents (chosen by name hash), which changes a vocabulary of 8k tokens very little.
TOKENIZER_TRAIN_BYTES = 64 << 20
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


class _PhaseClock:
    """Wall-clock and CPU seconds (all threads of the process) of each phase of a preparation."""

    def __init__(self) -> None:
        self._start = (time.perf_counter(), time.process_time())
        self._phases: dict[str, tuple[float, float]] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self._phases[phase] = (time.perf_counter() - wall, time.process_time() - cpu)

    def wall(self) -> dict[str, float]:
        return self._rounded(0, time.perf_counter())

    def cpu(self) -> dict[str, float]:
        return self._rounded(1, time.process_time())

    def _rounded(self, which: int, now: float) -> dict[str, float]:
        phases = {name: times[which] for name, times in self._phases.items()}
        return {k: round(v, 3) for k, v in {**phases, "total": now - self._start[which]}.items()}


def _byte_bar(desc: str, total: int, *, progress: bool) -> tqdm:
    """A progress bar in bytes: it shows MB done and MB/s."""
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress)


def _hash_documents(source: TextSource, docs: list[Document], *, progress: bool) -> list[str]:
    hashes = []
    with _byte_bar("hashing", sum(d.size for d in docs), progress=progress) as bar:
        for doc in docs:
            hashes.append(hashlib.sha256(source.read_bytes(doc)).hexdigest())
            bar.update(doc.size)
    return hashes


def _fingerprint(cfg: DataConfig, source: TextSource, docs: list[Document], hashes: list[str]) -> str:
    key = {
        "format_version": DATASET_FORMAT_VERSION,
        "source": source.describe(),
        "files": [[doc.name, sha] for doc, sha in zip(docs, hashes, strict=True)],
        "vocab_size": cfg.vocab_size,
        "val_fraction": cfg.val_fraction,
        "tokenizer_train_bytes": TOKENIZER_TRAIN_BYTES,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def dataset_dir(cfg: DataConfig) -> Path:
    """Where the dataset for `cfg` lives (or will): `cfg.data_cache / <fingerprint>`. Reads every file."""
    source = open_source(cfg.data)
    docs = source.documents()
    hashes = _hash_documents(source, docs, progress=False)
    return Path(cfg.data_cache) / _fingerprint(cfg, source, docs, hashes)


def split_of(name: str, val_fraction: float) -> str:
    """A hash of the name decides, so a document keeps its split when other documents come or go."""
    return "val" if _unit_hash(name) < val_fraction else "train"


def _unit_hash(name: str) -> float:
    return int(hashlib.sha256(name.encode()).hexdigest()[:15], 16) / 16**15


def split_documents(
    docs: list[Document], val_fraction: float, *, spec: str | None
) -> dict[str, list[Document]]:
    """Train/val split by whole documents (files, or chunks of a file), with at least one in each."""
    if len(docs) < 2:
        raise UsageError(
            f"--data {spec}: {docs[0].size} bytes in one piece is too little text to hold out a "
            "validation split; give more text"
        )
    splits: dict[str, list[Document]] = {"train": [], "val": []}
    for doc in docs:
        splits[split_of(doc.name, val_fraction)].append(doc)
    # too few documents for the share to land anywhere: move the closest one across
    if not splits["val"]:
        nearest = min(splits["train"], key=lambda d: _unit_hash(d.name))
        splits["train"].remove(nearest)
        splits["val"].append(nearest)
    if not splits["train"]:
        nearest = max(splits["val"], key=lambda d: _unit_hash(d.name))
        splits["val"].remove(nearest)
        splits["train"].append(nearest)
    return splits


def tokenizer_sample(train_docs: list[Document]) -> list[Document]:
    """The train documents the tokenizer learns from: all, or a stable sample of TOKENIZER_TRAIN_BYTES."""
    if sum(d.size for d in train_docs) <= TOKENIZER_TRAIN_BYTES:
        return train_docs
    chosen: list[Document] = []
    size = 0
    for doc in sorted(train_docs, key=lambda d: _unit_hash(f"tokenizer:{d.name}")):
        if chosen and size + doc.size > TOKENIZER_TRAIN_BYTES:
            break
        chosen.append(doc)
        size += doc.size
    return sorted(chosen, key=lambda d: d.name)


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
    clock = _PhaseClock()
    source = open_source(cfg.data)
    docs = source.documents()
    with clock("hashing"):
        hashes = _hash_documents(source, docs, progress=progress)
    final = Path(cfg.data_cache) / _fingerprint(cfg, source, docs, hashes)
    if is_prepared(final):
        return final
    splits = split_documents(docs, cfg.val_fraction, spec=cfg.data)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        sha256 = dict(zip((d.name for d in docs), hashes, strict=True))
        _build(tmp, cfg, source, splits, sha256, progress=progress, clock=clock)
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
    *,
    progress: bool,
    clock: _PhaseClock,
) -> None:
    sample = tokenizer_sample(splits["train"])
    with clock("tokenizer"):
        tokenizer = _train_tokenizer(source, sample, vocab_size=cfg.vocab_size, progress=progress)
        tokenizer.save(out / "tokenizer.json")
    total = sum(d.size for docs in splits.values() for d in docs)
    stats: dict[str, dict[str, int]] = {}
    with clock("encoding"), _byte_bar("encoding", total, progress=progress) as bar:
        for name in SPLITS:
            stats[name] = write_tokens(
                out / f"{name}.bin", source, splits[name], tokenizer, on_bytes=bar.update
            )
    meta = {
        "format_version": DATASET_FORMAT_VERSION,
        "source": source.describe(),
        "created_unix": int(time.time()),
        # per phase and in all; CPU seconds count every thread (on a busy machine wall time stretches)
        "prepare_seconds": clock.wall(),
        "prepare_cpu_seconds": clock.cpu(),
        "dtype": np.dtype(TOKEN_DTYPE).name,
        "separator": f"{EOT} after each document's text (consecutive chunks of a file are one text)",
        "requested_vocab_size": cfg.vocab_size,
        "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.eot_id,
        "val_fraction": cfg.val_fraction,
        "tokenizer_sha256": tokenizer_hash(out / "tokenizer.json"),
        "tokenizer_train_bytes": sum(d.size for d in sample),
        "tokenizers_version": tokenizers.__version__,
        "splits": stats,
        "files": _document_records(splits, sha256),
    }
    # meta.json last: its presence marks the folder complete
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _train_tokenizer(
    source: TextSource, sample: list[Document], *, vocab_size: int, progress: bool
) -> Tokenizer:
    """Train the BPE on `sample`, with a bar: MB/s while the text is read and counted, then the merges.

    The trainer runs in a daemon thread while this (the main) thread redraws the bar every second and
    stays free to run signal handlers: the merges run in Rust for seconds to minutes, and a Ctrl-C
    or SIGTERM would otherwise wait for them to end.
    """
    outcome: dict[str, Any] = {}
    with _byte_bar("tokenizer", sum(d.size for d in sample), progress=progress) as bar:

        def texts() -> Iterator[str]:
            for doc in sample:
                yield source.read_text(doc)
                bar.update(doc.size)
            bar.set_description("tokenizer (merges)")

        def train() -> None:
            try:
                outcome["tokenizer"] = train_tokenizer(texts(), vocab_size=vocab_size, num_texts=len(sample))
            except BaseException as err:  # re-raised in the main thread
                outcome["error"] = err

        thread = threading.Thread(target=train, name="tokenizer", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(timeout=1.0)
            bar.refresh()  # the clock keeps running during the merges
    if "error" in outcome:
        raise outcome["error"]
    return cast(Tokenizer, outcome["tokenizer"])


def _document_records(splits: dict[str, list[Document]], sha256: dict[str, str]) -> list[dict[str, Any]]:
    """One record per document: name (`file#NNNNNN` for a chunk), sha256, bytes, offset, split."""
    split_of_doc = {d.name: (d, split) for split, docs in splits.items() for d in docs}
    return [
        {"name": name, "sha256": sha256[name], "bytes": doc.size, "offset": doc.offset, "split": split}
        for name, (doc, split) in sorted(split_of_doc.items())
    ]


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
