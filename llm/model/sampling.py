"""Sampling text from a trained GPT, one token at a time."""

from __future__ import annotations

import torch
from torch import Tensor

from llm.model.gpt import GPT


@torch.no_grad()
def generate(
    model: GPT,
    idx: Tensor,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Extend each row of idx (B, T) by max_new_tokens tokens; returns (B, T + max_new_tokens).

    temperature 0 picks the most likely token (greedy); otherwise logits are divided by the
    temperature, cut to the top_k most likely tokens when top_k is set, and sampled with
    `generator` (on idx's device) so a seeded generator gives a repeatable sample. The model sees
    at most its last block_size tokens. It runs in eval mode (no dropout) and gets its mode back.
    """
    if idx.dim() != 2:
        raise ValueError(f"idx must be (B, T) token ids, got shape {tuple(idx.shape)}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            context = idx[:, -model.cfg.block_size :]  # (B, <= block_size)
            logits, _ = model(context)
            logits = logits[:, -1, :].float()  # (B, V): only the last position predicts what's next
            if temperature == 0:
                next_token = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth_best = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth_best, float("-inf"))
                probs = torch.softmax(logits, dim=-1)  # (B, V)
                next_token = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, next_token), dim=1)  # (B, T + 1)
    finally:
        model.train(was_training)
    return idx
