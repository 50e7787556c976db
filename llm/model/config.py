"""Model shape and the named presets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositionalEncoding = Literal["learned", "rope", "sinusoidal"]
Activation = Literal["gelu", "gelu_tanh"]
# Fields added after model records were first stored (checkpoint manifests, run.json, exports): a record
# without one was written by code that behaved as this value (the MLP used GELU's tanh approximation).
PREDATING_DEFAULTS: dict[str, Any] = {"activation": "gelu_tanh"}


class GPTConfig(BaseModel):
    """The shape of a GPT. Frozen: a changed shape is a new config (`model_copy(update=...)`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vocab_size: int = Field(8192, ge=2, description="tokens in the vocabulary (set by the tokenizer)")
    n_layer: int = Field(4, ge=1, description="transformer blocks")
    n_head: int = Field(4, ge=1, description="attention heads per block")
    n_embd: int = Field(128, ge=1, description="residual stream width")
    block_size: int = Field(256, ge=1, description="longest sequence the model sees (context length)")
    pos_encoding: PositionalEncoding = Field("learned", description="learned | rope | sinusoidal")
    activation: Activation = Field(
        "gelu", description="MLP nonlinearity: gelu (exact) | gelu_tanh (GPT-2's tanh approximation)"
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on attention, residual and embeddings")
    bias: bool = Field(True, description="biases in linear layers and LayerNorms, as in GPT-2")
    activation_checkpointing: bool = Field(False, description="recompute block activations in backward")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPTConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.pos_encoding == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError("rope needs an even head size (n_embd / n_head)")
        return self


def stored_config(record: dict[str, Any]) -> GPTConfig:
    """A model record as stored by any version of this code (a checkpoint manifest, run.json, an
    export), with the fields it predates filled in as that code behaved. Raises ValidationError."""
    return GPTConfig.model_validate({**PREDATING_DEFAULTS, **record})


def stored_model(record: dict[str, Any]) -> dict[str, Any]:
    """`stored_config` as a dict, to compare with `GPTConfig.model_dump()`."""
    return stored_config(record).model_dump()


# Shapes only: the vocabulary comes from the tokenizer. The memory arithmetic behind the 24 GB
# presets is in docs/architecture.md and llm/model/memory.py.
PRESETS: dict[str, dict[str, object]] = {
    "tiny": dict(n_layer=2, n_head=4, n_embd=128, block_size=128),
    "gpt2-small": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024),
    # one 24 GB card with >= 20% of it to spare by the arithmetic (774M params at V=8192): the default
    "3090": dict(n_layer=15, n_head=16, n_embd=2048, block_size=1024, activation_checkpointing=True),
    # the largest the arithmetic fits on a 24 GB card, with ~0.5 GiB to spare (1.03B at V=8192): opt-in
    "1b-24gb-tight": dict(n_layer=20, n_head=16, n_embd=2048, block_size=1024, activation_checkpointing=True),
}


def from_preset(name: str, **overrides: object) -> GPTConfig:
    """A GPTConfig from a named preset, with fields replaced by `overrides` (e.g. vocab_size).

    `from_preset("gpt2-small", vocab_size=50257)`; an unknown name raises KeyError listing the valid ones.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return GPTConfig.model_validate({**PRESETS[name], **overrides})
