"""The pieces of a GPT: positional encodings, causal self-attention, the MLP and the block.

Shapes use fixed names: B batch, T time (sequence), C channels (n_embd), nh heads, hs head size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llm.model.config import GPTConfig


def sinusoidal_table(block_size: int, n_embd: int) -> Tensor:
    """The fixed sine/cosine position table of "Attention Is All You Need", shape (block_size, C).

    Even channels hold sin(pos / 10000^(2i/C)), odd channels the matching cos. The table is scaled
    so its RMS is 0.02, the std of the token embeddings at init: unscaled (RMS ~0.7) it would drown
    the token signal, which GPT-2 initialisation keeps small.
    """
    position = torch.arange(block_size, dtype=torch.float32).unsqueeze(1)  # (block_size, 1)
    inv_freq = torch.exp(torch.arange(0, n_embd, 2, dtype=torch.float32) * (-math.log(10000.0) / n_embd))
    angles = position * inv_freq  # (block_size, ceil(C / 2))
    table = torch.zeros(block_size, n_embd)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : n_embd // 2])
    return table * (0.02 * math.sqrt(2.0))


class Rotary(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021), applied to q and k inside attention.

    Channel i of the first half of a head and channel i of the second half form a pair that is
    rotated by the angle pos * base^(-2i/hs) (the "rotate half" layout of GPT-NeoX and Llama), so the
    q.k product depends only on the distance between the two positions.
    """

    cos: Tensor
    sin: Tensor

    def __init__(self, head_size: int, block_size: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs/2,)
        angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (block_size, hs/2)
        angles = torch.cat((angles, angles), dim=-1)  # (block_size, hs)
        # derived from the shape, so kept out of checkpoints
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        T = x.size(-2)
        cos = self.cos[:T].to(x.dtype)  # (T, hs), broadcast over (B, nh)
        sin = self.sin[:T].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) each
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin  # (B, nh, T, hs)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees only itself and the positions before it."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        head_size = cfg.n_embd // cfg.n_head
        self.rotary = Rotary(head_size, cfg.block_size) if cfg.pos_encoding == "rope" else None

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        nh = self.n_head
        hs = C // nh
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        # flash / memory-efficient kernels where available: the (T, T) score matrix is never stored
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: widen 4x, GELU (exact, or GPT-2's tanh approximation), project back."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.approximate = "tanh" if cfg.activation == "gelu_tanh" else "none"

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.c_fc(x), approximate=self.approximate)  # (B, T, 4C)
        return self.dropout(self.c_proj(h))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))
