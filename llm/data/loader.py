"""Batches of token windows: random for training (deterministic, resumable, per rank), fixed for eval.

Training sample number `i` on rank `r` is a window whose start is a pure function of (seed, r, i), as
in nanoGPT's random windows but with a counter-based generator: restoring `position` (samples drawn)
from a checkpoint reproduces the stream exactly, with no generator state to save; every rank draws
different windows; and the stream does not depend on how it is cut into micro-batches, so
micro-batch 4 x accumulation 2 sees exactly the samples of micro-batch 8 x accumulation 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from llm.errors import UsageError

Batch = tuple[torch.Tensor, torch.Tensor]


def _check_length(tokens: np.ndarray, block_size: int) -> None:
    if len(tokens) < block_size + 1:
        raise UsageError(
            f"the split has {len(tokens):,} tokens, fewer than block size {block_size} + 1; "
            "lower --block-size or give more data"
        )


def _check_rank(rank: int, world_size: int) -> None:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")


def _windows(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> Batch:
    """Windows of block_size + 1 tokens at `starts`; y is x shifted left by one."""
    buf = np.stack([tokens[s : s + block_size + 1] for s in starts]).astype(np.int64)  # (B, T+1)
    x = torch.from_numpy(buf[:, :-1].copy())  # (B, T)
    y = torch.from_numpy(buf[:, 1:].copy())  # (B, T)
    return x, y


class BatchSampler:
    """Random windows of `block_size` tokens for one rank; `position` counts samples drawn."""

    def __init__(
        self, tokens: np.ndarray, *, block_size: int, micro_batch: int, rank: int, world_size: int, seed: int
    ) -> None:
        if seed < 0 or micro_batch < 1 or block_size < 1:
            raise ValueError(
                f"need seed >= 0, micro_batch >= 1, block_size >= 1; "
                f"got {seed=}, {micro_batch=}, {block_size=}"
            )
        _check_rank(rank, world_size)
        _check_length(tokens, block_size)
        self.tokens = tokens
        self.block_size = block_size
        self.micro_batch = micro_batch
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.position = 0

    def start_of(self, sample: int) -> int:
        """Where sample number `sample` of this rank begins."""
        rng = np.random.default_rng([self.seed, self.rank, sample])
        # highest start leaves room for the shifted target: start + block_size + 1 <= len(tokens)
        return int(rng.integers(0, len(self.tokens) - self.block_size))

    def batch_at(self, position: int) -> Batch:
        """The micro-batch of samples position .. position + micro_batch - 1, without moving the stream."""
        starts = np.array([self.start_of(i) for i in range(position, position + self.micro_batch)])
        return _windows(self.tokens, starts, self.block_size)

    def next_batch(self) -> Batch:
        batch = self.batch_at(self.position)
        self.position += self.micro_batch
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed:
            raise UsageError(
                f"the checkpoint's data stream used seed {state['seed']}, this run uses {self.seed}; "
                f"resume with --seed {state['seed']}"
            )
        self.position = int(state["position"])


def eval_batches(
    tokens: np.ndarray, *, block_size: int, micro_batch: int, num_batches: int, rank: int, world_size: int
) -> list[Batch]:
    """`num_batches` fixed batches for this rank: evenly spaced windows over the whole split.

    Every rank gets the same number of batches (ZeRO-3 needs every rank in every forward), ranks
    take disjoint windows (global batch k goes to rank k % world_size) and each call returns the same.
    """
    _check_length(tokens, block_size)
    _check_rank(rank, world_size)
    total = num_batches * world_size * micro_batch
    starts = np.linspace(0, len(tokens) - block_size - 1, num=total).round().astype(np.int64)
    starts = starts.reshape(num_batches * world_size, micro_batch)  # (global batches, B)
    return [_windows(tokens, row, block_size) for row in starts[rank::world_size]]
