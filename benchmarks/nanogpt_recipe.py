"""nanoGPT's training recipe, re-implemented as a baseline for benchmarks/trainer_vs_plain.py.

Our own code, written to match what nanoGPT's model.py and train.py do per step, with no DeepSpeed:
a GPT of wte + wpe, pre-LayerNorm blocks (fused c_attn for q, k, v; SDPA with is_causal; MLP 4x with
exact GELU), tied lm_head; AdamW with weight decay on 2-D weights only (fused where torch has a fused
kernel for the device), clipping at 1.0, `zero_grad(set_to_none=True)`, a warm-up + cosine LR set on
every step, and random windows read from the token memmap (the next batch drawn while the step's
gradients are pending, as nanoGPT does). fp32 on the CPU here, so no autocast and no GradScaler.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.step_profile import phase


@dataclass(frozen=True)
class NanoConfig:
    vocab_size: int
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = True


class SelfAttention(nn.Module):
    def __init__(self, cfg: NanoConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v fused
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class FeedForward(nn.Module):
    def __init__(self, cfg: NanoConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()  # exact (erf) GELU, as nanoGPT; ours uses the tanh approximation
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C) via (B, T, 4C)


class Block(nn.Module):
    def __init__(self, cfg: NanoConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = SelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = FeedForward(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, cfg: NanoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        T = idx.size(1)
        t = self.transformer
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        x = t.drop(t.wte(idx) + t.wpe(pos))  # (B, T, C)
        for block in t.h:
            x = block(x)
        logits = self.lm_head(t.ln_f(x))  # (B, T, V)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


def fused_adamw_supported(device: torch.device) -> bool:
    """torch has a fused AdamW kernel for this device type (CUDA always; the CPU since torch 2.4)."""
    if "fused" not in inspect.signature(torch.optim.AdamW).parameters:
        return False
    try:
        probe = torch.zeros(1, device=device, requires_grad=True)
        torch.optim.AdamW([probe], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


def configure_optimizer(
    model: nn.Module, *, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW, decay on matrices (embeddings, linear weights) only; fused when the device has it."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = fused_adamw_supported(device)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)


def lr_at(step: int, *, peak: float, warmup: int, total: int, floor_ratio: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to floor_ratio * peak (nanoGPT's get_lr)."""
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor_ratio + (1 - floor_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


class RandomWindows:
    """nanoGPT's get_batch: `batch` random windows of block_size + 1 tokens from a memmap."""

    def __init__(self, tokens: np.ndarray, *, block_size: int, batch: int, seed: int) -> None:
        self.tokens, self.block_size, self.batch = tokens, block_size, batch
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> tuple[Tensor, Tensor]:
        starts = self.rng.integers(0, len(self.tokens) - self.block_size, size=self.batch)
        T = self.block_size
        x = torch.stack([torch.from_numpy(self.tokens[i : i + T].astype(np.int64)) for i in starts])
        y = torch.stack([torch.from_numpy(self.tokens[i + 1 : i + 1 + T].astype(np.int64)) for i in starts])
        return x, y  # (B, T) each


class NanoRecipe:
    """One nanoGPT training step at a time; `loss.item()` only when the caller logs."""

    def __init__(
        self, cfg: NanoConfig, tokens: np.ndarray, *, batch: int, total_steps: int, seed: int = 1337
    ) -> None:
        torch.manual_seed(seed)
        self.device = torch.device("cpu")
        self.model = NanoGPT(cfg).to(self.device)
        self.optimizer = configure_optimizer(self.model, lr=1e-3, weight_decay=0.1, device=self.device)
        self.fused = bool(self.optimizer.defaults.get("fused"))
        self.data = RandomWindows(tokens, block_size=cfg.block_size, batch=batch, seed=seed)
        self.total_steps = total_steps
        self.step_num = 0
        self.batch = self.data.next_batch()

    def step(self) -> Tensor:
        """Forward, backward, clip, AdamW; returns the (unsynchronised) loss tensor."""
        lr = lr_at(self.step_num, peak=1e-3, warmup=20, total=self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self.batch
        with phase("forward"):
            _, loss = self.model(x, y)
        with phase("next_batch"):
            self.batch = self.data.next_batch()  # nanoGPT draws the next batch before backward
        with phase("backward"):
            loss.backward()
        with phase("clip"):
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        with phase("optimizer"):
            self.optimizer.step()
        with phase("zero_grad"):
            self.optimizer.zero_grad(set_to_none=True)
        self.step_num += 1
        return loss.detach()
