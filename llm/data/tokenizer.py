"""Byte-level BPE (GPT-2 style) trained with the `tokenizers` library; saved as `tokenizer.json`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

EOT = "<|endoftext|>"  # the document separator, as in GPT-2


class Tokenizer:
    """A thin wrapper: text <-> token ids, with `<|endoftext|>` as the only special token."""

    def __init__(self, inner: HFTokenizer) -> None:
        eot_id = inner.token_to_id(EOT)
        if eot_id is None:
            raise ValueError(f"tokenizer has no {EOT} token")
        # text that happens to contain "<|endoftext|>" is encoded as plain text, never as the separator
        inner.encode_special_tokens = True
        self._inner = inner
        self.eot_id: int = eot_id

    @classmethod
    def from_file(cls, path: Path) -> Tokenizer:
        return cls(HFTokenizer.from_file(str(path)))

    def save(self, path: Path) -> None:
        self._inner.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self._inner.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._inner.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts in parallel (Rust threads)."""
        return [e.ids for e in self._inner.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._inner.decode(ids, skip_special_tokens=False)


def train_tokenizer(
    texts: Iterable[str], *, vocab_size: int, num_texts: int | None = None, progress: bool = False
) -> Tokenizer:
    """Train a byte-level BPE; every byte is in the vocabulary, so any text round-trips exactly."""
    inner = HFTokenizer(models.BPE())
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    inner.train_from_iterator(texts, trainer=trainer, length=num_texts)
    return Tokenizer(inner)


def tokenizer_hash(path: Path) -> str:
    """sha256 of `tokenizer.json`: checkpoints record it so a resume cannot silently switch tokenizers."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
