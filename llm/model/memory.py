"""GPU memory a GPT needs to train in fp16 mixed precision with ZeRO-2 on one GPU: the arithmetic.

The formulas and their sources are in docs/architecture.md ("The `3090` preset: memory
arithmetic"); this module is the one place that computes them, for the tests and the docs alike.
A projection, not a measurement: `make gpu-check` measures the real peak.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm.model.config import GPTConfig
from llm.model.gpt import GPT

GIB = 2**30
# per parameter, in bytes: fp16 weights 2 + fp16 gradients 2 + fp32 master weights 4 + AdamW m, v 8
STEADY_BYTES_PER_PARAM = 16
# at the optimizer step DeepSpeed also holds a flat fp16 copy of the gradients (2) and its fp32 cast (4)
STEP_BYTES_PER_PARAM = 22
CUDA_CONTEXT_GIB = 1.5  # CUDA context, kernels, cuBLAS and NCCL workspaces, the display
FRAGMENTATION_GIB = 1.0  # the caching allocator's fragmentation
# activations one transformer block keeps per token and channel (Korthikanti et al. 2022, without
# the T x T attention term that flash / memory-efficient attention never stores)
BLOCK_ACTIVATION_BYTES = 34


@dataclass(frozen=True)
class TrainingMemory:
    """GiB for one training process; `total` is what the card must hold."""

    parameters: int
    steady_state: float  # weights, gradients, master weights and optimizer state
    activations: float
    reduce_bucket: float
    end_of_backward: float
    optimizer_step: float
    reserved: float  # CUDA context + fragmentation allowance

    @property
    def peak(self) -> float:
        """Live tensors at their highest: the two peaks never overlap, so the larger of them."""
        return max(self.end_of_backward, self.optimizer_step)

    @property
    def total(self) -> float:
        return self.peak + self.reserved

    def headroom(self, card_gib: float) -> float:
        """The fraction of a `card_gib` card left over (negative: it does not fit)."""
        return 1.0 - self.total / card_gib


def training_memory(
    cfg: GPTConfig, *, micro_batch: int, reduce_bucket_elements: float = 5e8
) -> TrainingMemory:
    """fp16 + ZeRO-2 + AdamW on one GPU, by the sums in docs/architecture.md.

    `reduce_bucket_elements` is DeepSpeed's reduce bucket (fp16 elements held during backward);
    the default is DeepSpeed's own 5e8, larger than ds_configs/3090.json's, so the sum errs high.
    """
    n = GPT.parameter_count(cfg)
    B, T, C, V, L = micro_batch, cfg.block_size, cfg.n_embd, cfg.vocab_size, cfg.n_layer
    if cfg.activation_checkpointing:
        # saved block inputs (fp16), and one block recomputed in backward with its gradients
        blocks = L * B * T * C * 2 + 2 * BLOCK_ACTIVATION_BYTES * B * T * C
    else:
        blocks = L * BLOCK_ACTIVATION_BYTES * B * T * C + BLOCK_ACTIVATION_BYTES * B * T * C
    logits = 2 * B * T * V * (2 + 4)  # fp16 output and fp32 copy, x2 for log-softmax and gradient
    activations = (blocks + logits) / GIB
    bucket = reduce_bucket_elements * 2 / GIB
    steady = STEADY_BYTES_PER_PARAM * n / GIB
    return TrainingMemory(
        parameters=n,
        steady_state=steady,
        activations=activations,
        reduce_bucket=bucket,
        end_of_backward=steady + activations + bucket,
        optimizer_step=STEP_BYTES_PER_PARAM * n / GIB,
        reserved=CUDA_CONTEXT_GIB + FRAGMENTATION_GIB,
    )
