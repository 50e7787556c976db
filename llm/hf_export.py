"""Export to Hugging Face `transformers`: `python -m llm.export RUN_DIR OUT_DIR --format hf`.

OUT_DIR then opens with `AutoModelForCausalLM.from_pretrained(OUT_DIR)` and
`AutoTokenizer.from_pretrained(OUT_DIR)` and computes the same logits as our GPT:

    learned positions -> GPT-2 (`GPT2LMHeadModel`): the same block, but its Conv1D layers store
                         weights as (in, out) where nn.Linear stores (out, in), so each is transposed
    rope              -> GPT-NeoX (`GPTNeoXForCausalLM`) with sequential residuals, full rotary (base
                         10000, the same "rotate half" layout as ours) and tied embeddings; its fused
                         query_key_value is laid out head by head ([q, k, v] of head 0, then head 1, ...)
                         where ours is [all q | all k | all v], so its rows are permuted
    sinusoidal        -> refused: neither architecture has fixed sinusoidal positions

The MLP's activation goes across by name: exact GELU is HF's "gelu", the tanh approximation
(`--activation gelu_tanh`) its "gelu_new". Both use LayerNorm eps 1e-5, torch's default and ours. A
model trained with bias=False gets zero biases where the HF layer always has one (every layer of GPT-2;
NeoX's MLP and LayerNorms): adding zero changes nothing, so the logits match.
torch and transformers are imported only when an export runs: transformers is not needed to train
(`pip install -e '.[hf]'`).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor
    from transformers import GPT2Config, GPTNeoXConfig, PreTrainedModel

    from llm.checkpoints.trained import TrainedModel
    from llm.model.config import GPTConfig

EOT = "<|endoftext|>"  # llm.data.tokenizer.EOT, spelled here so the module needs no tokenizers import
# our activation -> HF's name for the same function (ACT2FN): "gelu" is F.gelu (erf), "gelu_new" is
# F.gelu(approximate="tanh") under its GPT-2 name
HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which our model uses
ROPE_BASE = 10000.0  # llm.model.layers.Rotary's default base
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def check_exportable(cfg: GPTConfig) -> None:
    if cfg.pos_encoding == "sinusoidal":
        raise UsageError(
            "--format hf cannot export a sinusoidal-position model: neither GPT-2 nor GPT-NeoX has fixed "
            "sinusoidal positions; use --format llm, or train with --pos-encoding learned or rope"
        )


def require_transformers() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UsageError(
            "--format hf needs Hugging Face transformers, which training does not: pip install -e '.[hf]'"
        ) from None


# --- config builders


def gpt2_config(cfg: GPTConfig, *, eot_id: int) -> GPT2Config:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=4 * cfg.n_embd, activation_function=HF_ACTIVATION[cfg.activation],
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        layer_norm_epsilon=LAYER_NORM_EPS, scale_attn_weights=True, tie_word_embeddings=True,
        bos_token_id=eot_id, eos_token_id=eot_id, architectures=["GPT2LMHeadModel"],
    )  # fmt: skip


def neox_config(cfg: GPTConfig, *, eot_id: int) -> GPTNeoXConfig:
    from transformers import GPTNeoXConfig

    # rotary_pct / rotary_emb_base are the names transformers 4.x reads; 5.x turns them into
    # rope_parameters (partial_rotary_factor, rope_theta) and writes those
    full_rotary: dict[str, Any] = {"rotary_pct": 1.0, "rotary_emb_base": ROPE_BASE}
    return GPTNeoXConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head, intermediate_size=4 * cfg.n_embd,
        hidden_act=HF_ACTIVATION[cfg.activation], max_position_embeddings=cfg.block_size,
        attention_dropout=cfg.dropout, hidden_dropout=cfg.dropout, layer_norm_eps=LAYER_NORM_EPS,
        use_parallel_residual=False, attention_bias=True, tie_word_embeddings=True,
        bos_token_id=eot_id, eos_token_id=eot_id, architectures=["GPTNeoXForCausalLM"], **full_rotary,
    )  # fmt: skip


# --- state-dict mappings: our names and layouts -> theirs


def _bias(state: dict[str, Tensor], name: str, size: int) -> Tensor:
    """Our bias, or zeros where the model has none (bias=False) and the HF layer always has one."""
    import torch

    return state[name] if name in state else torch.zeros(size)


def gpt2_state_dict(state: dict[str, Tensor], cfg: GPTConfig) -> dict[str, Tensor]:
    """Our GPT's state dict -> GPT2LMHeadModel's (without the tied lm_head.weight)."""
    C = cfg.n_embd
    out = {"transformer.wte.weight": state["wte.weight"], "transformer.wpe.weight": state["wpe.weight"]}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for norm in ("ln_1", "ln_2"):
            out[f"{theirs}{norm}.weight"] = state[f"{ours}{norm}.weight"]
            out[f"{theirs}{norm}.bias"] = _bias(state, f"{ours}{norm}.bias", C)
        for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            weight = state[f"{ours}{layer}.weight"]  # (out, in), as nn.Linear stores it
            out[f"{theirs}{layer}.weight"] = weight.t()  # (in, out), as Conv1D stores it
            out[f"{theirs}{layer}.bias"] = _bias(state, f"{ours}{layer}.bias", weight.size(0))
    out["transformer.ln_f.weight"] = state["ln_f.weight"]
    out["transformer.ln_f.bias"] = _bias(state, "ln_f.bias", C)
    return out


def neox_qkv(tensor: Tensor, n_head: int) -> Tensor:
    """Rows of our fused qkv ([all q | all k | all v], head by head inside each) in NeoX's order.

    NeoX views the projection's output as (nh, 3 * hs) and chunks each head's slice into q, k, v, so
    its rows run q_0 k_0 v_0 q_1 k_1 v_1 ...; works for the weight (3C, C) and the bias (3C,).
    """
    three_c = tensor.size(0)
    hs = three_c // (3 * n_head)
    rest = tensor.shape[1:]
    grouped = tensor.reshape(3, n_head, hs, *rest)  # (3, nh, hs, ...): [q | k | v], each head by head
    return grouped.transpose(0, 1).reshape(three_c, *rest)  # (nh, 3, hs, ...) flattened: per head q k v


def neox_state_dict(state: dict[str, Tensor], cfg: GPTConfig) -> dict[str, Tensor]:
    """Our GPT's state dict -> GPTNeoXForCausalLM's (without the tied output head)."""
    C, nh = cfg.n_embd, cfg.n_head
    out = {"gpt_neox.embed_in.weight": state["wte.weight"]}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        for mine, name in (("ln_1", "input_layernorm"), ("ln_2", "post_attention_layernorm")):
            out[f"{theirs}{name}.weight"] = state[f"{ours}{mine}.weight"]
            out[f"{theirs}{name}.bias"] = _bias(state, f"{ours}{mine}.bias", C)
        out[f"{theirs}attention.query_key_value.weight"] = neox_qkv(state[f"{ours}attn.c_attn.weight"], nh)
        out[f"{theirs}attention.query_key_value.bias"] = neox_qkv(
            _bias(state, f"{ours}attn.c_attn.bias", 3 * C), nh
        )
        for mine, name, size in (
            ("attn.c_proj", "attention.dense", C),
            ("mlp.c_fc", "mlp.dense_h_to_4h", 4 * C),
            ("mlp.c_proj", "mlp.dense_4h_to_h", C),
        ):
            out[f"{theirs}{name}.weight"] = state[f"{ours}{mine}.weight"]  # both nn.Linear: (out, in)
            out[f"{theirs}{name}.bias"] = _bias(state, f"{ours}{mine}.bias", size)
    out["gpt_neox.final_layer_norm.weight"] = state["ln_f.weight"]
    out["gpt_neox.final_layer_norm.bias"] = _bias(state, "ln_f.bias", C)
    return out


def hf_model(state: dict[str, Tensor], cfg: GPTConfig, *, eot_id: int) -> PreTrainedModel:
    """The transformers model holding our weights (eval mode, fp32, CPU)."""
    import torch
    from transformers import GPT2LMHeadModel, GPTNeoXForCausalLM

    check_exportable(cfg)
    state = {name: tensor.detach().to("cpu", torch.float32) for name, tensor in state.items()}
    model: PreTrainedModel
    if cfg.pos_encoding == "learned":
        model = GPT2LMHeadModel(gpt2_config(cfg, eot_id=eot_id))
        mapped = gpt2_state_dict(state, cfg)
    else:
        model = GPTNeoXForCausalLM(neox_config(cfg, eot_id=eot_id))
        mapped = neox_state_dict(state, cfg)
    head = model.get_output_embeddings()
    assert head is not None and head.weight is model.get_input_embeddings().weight, "head is not tied"
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    # the only key left out is the output head (lm_head / embed_out, by version): it is the embedding
    untouched = [key for key in missing if model.get_parameter(key) is not head.weight]
    if untouched or unexpected:
        raise RuntimeError(f"state-dict mapping is incomplete: missing {untouched}, unexpected {unexpected}")
    return model.eval()


# --- the folder


def tokenizer_config(*, block_size: int) -> dict[str, Any]:
    return {
        # the generic fast tokenizer loads tokenizer.json as it is; GPT2Tokenizer would rebuild it
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "model_max_length": block_size,
        # as llm.data.tokenizer.Tokenizer: "<|endoftext|>" inside text is plain text, not the separator
        "split_special_tokens": True,
        # decode must give back the text, not "tidy" its spaces
        "clean_up_tokenization_spaces": False,
    }


def write_tokenizer(tokenizer_json: Path, folder: Path, *, block_size: int) -> None:
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    files = {
        "tokenizer_config.json": tokenizer_config(block_size=block_size),
        "special_tokens_map.json": {"bos_token": EOT, "eos_token": EOT},
    }
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, indent=2) + "\n")


def add_legacy_rope_keys(config_json: Path) -> None:
    """Also name the rotary settings as transformers 4.x reads them.

    transformers 5 writes only rope_parameters; 4.x ignores those and would fall back to its defaults,
    rotary_pct 0.25 (a quarter of each head rotated): a different model. 5.x ignores these two.
    """
    config = json.loads(config_json.read_text())
    config.setdefault("rotary_pct", 1.0)
    config.setdefault("rotary_emb_base", ROPE_BASE)
    config_json.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def export_hf(trained: TrainedModel, out_dir: Path) -> list[Path]:
    """Write a transformers folder (config, weights, generation config, tokenizer); returns the paths.

    Everything is written into a temporary folder inside out_dir, then each file is renamed into
    place, so a reader never sees half a file.
    """
    check_exportable(trained.config)
    require_transformers()
    model = hf_model(trained.model.state_dict(), trained.config, eot_id=trained.tokenizer.eot_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".hf-export.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        save_quietly(model, staging)
        if trained.config.pos_encoding == "rope":
            add_legacy_rope_keys(staging / "config.json")
        write_tokenizer(trained.tokenizer_path, staging, block_size=trained.config.block_size)
        # safetensors writes its file owner-only (0600); give every file the mode a plain write gets
        mode = stat.S_IMODE((staging / "tokenizer_config.json").stat().st_mode)
        written = []
        for path in sorted(staging.iterdir()):
            path.chmod(mode)
            os.replace(path, out_dir / path.name)
            written.append(out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def save_quietly(model: PreTrainedModel, folder: Path) -> None:
    """save_pretrained without its "Writing model shards" progress bar on stderr."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
