"""Documents -> a token file: uint16 ids, `<|endoftext|>` after each document's text ends.

Batches of about ENCODE_BATCH_BYTES are handed to the Rust encoder, which releases the GIL; up to
ENCODE_BATCHES_IN_FLIGHT of them are encoded at once, so its threads stay busy across the end of a
batch (where one long document would otherwise leave cores idle) while this thread reads files and
writes tokens. Memory is bounded by those few batches, however large the corpus.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm.data.corpus import Document, TextSource, decode_text
from llm.data.tokenizer import Tokenizer

TOKEN_DTYPE = np.uint16  # vocabularies up to 65,536 tokens; DataConfig caps vocab_size below that
ENCODE_BATCH_BYTES = 1 << 20  # encode-phase peak RSS on the built-in corpus: 202 MB (2 MiB: 239 MB)
ENCODE_BATCHES_IN_FLIGHT = 2


@dataclass(frozen=True)
class _Batch:
    texts: list[str]
    ends: list[bool]  # True where the document's text ends (not continued by the next chunk)
    disk_bytes: int


@dataclass(frozen=True)
class _Encoded:
    ids: np.ndarray  # (tokens,) uint16, separators included
    text_bytes: int  # utf-8 bytes of the decoded text (separators excluded)
    disk_bytes: int


def write_tokens(
    path: Path,
    source: TextSource,
    docs: list[Document],
    tokenizer: Tokenizer,
    *,
    on_bytes: Callable[[int], object] = lambda n: None,
) -> dict[str, int]:
    """Encode `docs` in order into `path`; returns token, byte and document counts.

    `on_bytes` is told the on-disk size of each batch as it is written (a progress bar's update).
    """
    tokens = text_bytes = 0
    with path.open("wb") as f:
        for batch in _encoded_batches(source, docs, tokenizer):
            f.write(batch.ids.tobytes())
            tokens += len(batch.ids)
            text_bytes += batch.text_bytes
            on_bytes(batch.disk_bytes)
    # bytes of the text the tokens stand for (utf-8, separators excluded): the bits-per-byte denominator
    return {"tokens": tokens, "bytes": text_bytes, "documents": len(docs)}


def _batches(source: TextSource, docs: list[Document]) -> Iterator[_Batch]:
    texts: list[str] = []
    ends: list[bool] = []
    size = 0
    for i, doc in enumerate(docs):
        texts.append(decode_text(source.read_bytes(doc)))
        # a chunk followed by the next chunk of its file is one text: no separator between them
        ends.append(i + 1 == len(docs) or not docs[i + 1].continues(doc))
        size += doc.size
        if size >= ENCODE_BATCH_BYTES:
            yield _Batch(texts, ends, size)
            texts, ends, size = [], [], 0
    if texts:
        yield _Batch(texts, ends, size)


def _encode(tokenizer: Tokenizer, batch: _Batch) -> _Encoded:
    separator = np.array([tokenizer.eot_id], dtype=TOKEN_DTYPE)
    parts: list[np.ndarray] = []
    for ids, end in zip(tokenizer.encode_batch(batch.texts), batch.ends, strict=True):
        parts.append(np.array(ids, dtype=TOKEN_DTYPE))
        if end:
            parts.append(separator)
    text_bytes = sum(len(t.encode("utf-8")) for t in batch.texts)
    return _Encoded(np.concatenate(parts), text_bytes, batch.disk_bytes)


def _encoded_batches(source: TextSource, docs: list[Document], tokenizer: Tokenizer) -> Iterator[_Encoded]:
    """Encoded batches in document order, up to ENCODE_BATCHES_IN_FLIGHT encoding at a time."""
    pool = ThreadPoolExecutor(max_workers=ENCODE_BATCHES_IN_FLIGHT, thread_name_prefix="encode")
    pending: deque[Future[_Encoded]] = deque()
    try:
        for batch in _batches(source, docs):
            pending.append(pool.submit(_encode, tokenizer, batch))
            if len(pending) >= ENCODE_BATCHES_IN_FLIGHT:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # on an error or Ctrl-C: drop queued batches rather than encode them first
        pool.shutdown(wait=False, cancel_futures=True)
