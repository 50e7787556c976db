"""The GPT: token embedding, position signal, a stack of blocks, final LayerNorm, tied output head.

Follows GPT-2 (Radford et al. 2019) and nanoGPT's model.py; docs/architecture.md walks through it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from llm.model.config import GPTConfig
from llm.model.layers import Block, sinusoidal_table
from llm.model.loss import cross_entropy


class GPT(nn.Module):
    """A decoder-only transformer. `forward(idx, targets=None) -> (logits, loss)`."""

    sinusoid: Tensor | None

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos_encoding == "learned" else None
        table = sinusoidal_table(cfg.block_size, cfg.n_embd) if cfg.pos_encoding == "sinusoidal" else None
        self.register_buffer("sinusoid", table, persistent=False)  # fixed, so kept out of checkpoints
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # weight tying (Press & Wolf 2017): one matrix reads tokens in and scores them out
        self.lm_head.weight = self.wte.weight

        self.apply(_init_weights)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                # Each block adds two residual projections (attention, MLP) to the stream, so its
                # variance grows with 2 * n_layer; scaling their init by 1/sqrt(2 * n_layer) keeps
                # the residual stream at unit scale at init, as in GPT-2.
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits for every position, and the mean cross-entropy when targets are given.

        idx and targets are (B, T) token ids; targets equal to -1 are ignored by the loss.
        """
        if idx.size(1) > self.cfg.block_size:
            raise ValueError(
                f"sequence of {idx.size(1)} tokens is longer than block_size={self.cfg.block_size}; "
                "crop the input or build the model with a larger block_size"
            )
        B, T = idx.shape
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))  # (T, C) broadcast over B
        elif self.sinusoid is not None:
            x = x + self.sinusoid[:T].to(x.dtype)  # (T, C) broadcast over B
        x = self.drop(x)
        for block in self.blocks:
            if self.cfg.activation_checkpointing and self.training:
                # keep only the block input; recompute the block's activations during backward
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.ln_f(x)
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        # the loss in fp32: a softmax over V classes in fp16 loses the small probabilities
        loss = cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T))  # (B*T, V), (B*T,)
        return logits, loss

    def num_parameters(self) -> int:
        """Trainable numbers in this model; the tied wte/lm_head matrix counts once."""
        return sum(p.numel() for p in self.parameters())  # parameters() yields a shared one once

    @staticmethod
    def parameter_count(cfg: GPTConfig) -> int:
        """Parameters of a GPT of this shape, in closed form (no model is built).

        V vocabulary, C width, L layers, T block size, b = 1 with biases else 0:
          embeddings   V*C (wte, shared with lm_head) + T*C (wpe, learned positions only)
          per block    attention  C*3C + 3C*b  +  C*C + C*b      (c_attn, c_proj)
                       MLP        C*4C + 4C*b  +  4C*C + C*b     (c_fc, c_proj)
                       LayerNorms 2 * (C + C*b)                  (ln_1, ln_2)
                       = 12*C^2 + 2C + 11C*b
          final        C + C*b                                   (ln_f)
        GPT-2 small (V=50257, T=1024, C=768, L=12, biases, learned) gives 124,439,808.
        """
        V, C, L, T = cfg.vocab_size, cfg.n_embd, cfg.n_layer, cfg.block_size
        b = 1 if cfg.bias else 0
        layer_norm = C + C * b
        attention = (C * 3 * C + 3 * C * b) + (C * C + C * b)
        mlp = (C * 4 * C + 4 * C * b) + (4 * C * C + C * b)
        per_block = attention + mlp + 2 * layer_norm
        embeddings = V * C + (T * C if cfg.pos_encoding == "learned" else 0)
        return embeddings + L * per_block + layer_norm

    @staticmethod
    def flops_per_token(cfg: GPTConfig) -> float:
        """Training FLOPs per token (forward + backward), the PaLM / nanoGPT estimate.

            6 * N  +  12 * L * C * T

        N is the parameter count without position embeddings (a lookup, no matmul; wte stays in
        because it is also lm_head). Each weight costs 2 FLOPs per token forward (multiply, add)
        and 4 backward (gradient for the input and for the weight): 6N. Attention adds the
        q.k^T scores and the weighted sum over v, 2 * T * C multiply-adds per layer per token
        forward, tripled for backward: 12 * L * C * T (causal masking is not subtracted).
        Divide tokens/s * this by the GPU's peak FLOP/s to get model FLOPs utilisation (MFU).
        """
        position_params = cfg.block_size * cfg.n_embd if cfg.pos_encoding == "learned" else 0
        n = GPT.parameter_count(cfg) - position_params
        return 6.0 * n + 12.0 * cfg.n_layer * cfg.n_embd * cfg.block_size


def _init_weights(module: nn.Module) -> None:
    """GPT-2 initialisation: weights N(0, 0.02), biases zero; LayerNorms keep (1, 0)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
