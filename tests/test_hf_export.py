"""`--format hf`: exported folders open in Hugging Face transformers and compute what our GPT computes.

Freshly built models (every weight and bias perturbed, so no bias or LayerNorm sits at its zero/one
init and a wrong layout cannot hide) go through `export_hf`; two real 4-step runs (learned, rope) and
a sinusoidal relabelling of the rope run go through `python -m llm.export ... --format hf`. Logits
must agree within 1e-4 in fp32, and greedy generation through `transformers` must pick the same
tokens as ours.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")  # the `hf` extra, also in `dev`
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from llm.checkpoints.trained import TrainedModel, load_trained  # noqa: E402
from llm.data.tokenizer import EOT, Tokenizer, train_tokenizer  # noqa: E402
from llm.errors import UsageError  # noqa: E402
from llm.generate import complete  # noqa: E402
from llm.hf_export import export_hf  # noqa: E402
from llm.model.config import GPTConfig  # noqa: E402
from llm.model.gpt import GPT  # noqa: E402
from llm.model.sampling import generate  # noqa: E402
from tests.helpers import (  # noqa: E402
    CPU_CONFIG,
    DATA_CACHE,
    REPO,
    child_env,
    run_train,
    tiny_args,
    write_code_corpus,
)

TOLERANCE = 1e-4  # max |logit difference| in fp32
NEW_TOKENS = 20
WORDS = "lambda yield async await with as try except finally raise assert pass break None".split()
TEXTS = [
    "def total(x):\n    return value  # ünïcode",
    "a <|endoftext|> in the text is plain text",  # as our Tokenizer: not the separator
    "  spaces  .  and , punctuation ",
]
HF_FILES = [
    "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
    "tokenizer.json", "tokenizer_config.json",
]  # fmt: skip


def max_logit_difference(ours: GPT, folder: Path, idx: torch.Tensor) -> float:
    theirs = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        expected, _ = ours.eval()(idx)
        got = theirs(idx).logits
    assert got.shape == expected.shape and got.dtype == torch.float32
    return (got - expected).abs().max().item()


def hf_greedy(folder: Path, idx: torch.Tensor) -> list[int]:
    """NEW_TOKENS greedy tokens from transformers; eos_token_id=None: like ours, never stop early."""
    theirs = AutoModelForCausalLM.from_pretrained(folder).eval()
    out = theirs.generate(
        idx, attention_mask=torch.ones_like(idx), max_new_tokens=NEW_TOKENS, do_sample=False,
        eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    return out[0, idx.size(1) :].tolist()


# --- freshly built models through export_hf


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    texts = [f"def f(x):\n    return {' '.join(rng.choices(WORDS, k=6))}" for _ in range(300)]
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    train_tokenizer([*texts, *TEXTS], vocab_size=300).save(path)
    return path


def fresh_model(cfg: GPTConfig) -> GPT:
    """A GPT whose every parameter is perturbed: at init biases are 0 and LayerNorms (1, 0), which
    would let a bias mapped to the wrong place, or a LayerNorm never copied, go unnoticed."""
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


@pytest.mark.parametrize(
    ("pos_encoding", "bias", "activation", "architecture"),
    [
        ("learned", True, "gelu", "GPT2LMHeadModel"),
        ("learned", False, "gelu", "GPT2LMHeadModel"),
        ("learned", True, "gelu_tanh", "GPT2LMHeadModel"),
        ("rope", True, "gelu", "GPTNeoXForCausalLM"),
        ("rope", False, "gelu", "GPTNeoXForCausalLM"),
        ("rope", True, "gelu_tanh", "GPTNeoXForCausalLM"),
    ],
)
def test_a_fresh_model_exports_with_the_same_logits_and_greedy_tokens(
    pos_encoding: str, bias: bool, activation: str, architecture: str, tokenizer_file: Path, tmp_path: Path
) -> None:
    tokenizer = Tokenizer.from_file(tokenizer_file)
    cfg = GPTConfig(
        vocab_size=tokenizer.vocab_size, n_layer=3, n_head=4, n_embd=48, block_size=64,
        pos_encoding=pos_encoding, bias=bias, activation=activation,
    )  # fmt: skip
    model = fresh_model(cfg)
    trained = TrainedModel(
        model=model, config=cfg, tokenizer=tokenizer, tokenizer_path=tokenizer_file,
        checkpoint=tmp_path / "none", step=0, run_dir=tmp_path,
    )  # fmt: skip
    out = tmp_path / "hf"
    written = export_hf(trained, out)
    assert sorted(p.name for p in out.iterdir()) == HF_FILES == sorted(p.name for p in written)

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [architecture]
    assert config["tie_word_embeddings"] is True
    assert config["eos_token_id"] == config["bos_token_id"] == tokenizer.eot_id
    if pos_encoding == "rope":
        assert config["use_parallel_residual"] is False
        assert config["rotary_pct"] == 1.0 and config["rotary_emb_base"] == 10000.0  # as 4.x reads them

    idx = torch.randint(0, cfg.vocab_size, (2, cfg.block_size), generator=torch.Generator().manual_seed(1))
    difference = max_logit_difference(model, out, idx)
    print(f"\n{pos_encoding} bias={bias} {activation}: max |logit difference| {difference:.2e}")
    assert difference <= TOLERANCE

    prompt = torch.tensor([tokenizer.encode(TEXTS[0])])
    ours = generate(model, prompt, max_new_tokens=NEW_TOKENS, temperature=0)[0, prompt.size(1) :].tolist()
    assert hf_greedy(out, prompt) == ours


def test_the_exported_tokenizer_encodes_and_decodes_as_ours(tokenizer_file: Path, tmp_path: Path) -> None:
    ours = Tokenizer.from_file(tokenizer_file)
    cfg = GPTConfig(vocab_size=ours.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=64)
    trained = TrainedModel(
        model=GPT(cfg), config=cfg, tokenizer=ours, tokenizer_path=tokenizer_file,
        checkpoint=tmp_path / "none", step=0, run_dir=tmp_path,
    )  # fmt: skip
    export_hf(trained, tmp_path / "hf")
    assert (tmp_path / "hf" / "tokenizer.json").read_bytes() == tokenizer_file.read_bytes()

    theirs = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert theirs.is_fast
    assert theirs.eos_token == theirs.bos_token == EOT
    assert theirs.eos_token_id == theirs.bos_token_id == ours.eot_id
    for text in TEXTS:
        ids = theirs(text)["input_ids"]  # add_special_tokens=True, the default: still nothing added
        assert ids == ours.encode(text), text
        assert theirs.decode(ids) == ours.decode(ids) == text
    assert ours.eot_id not in theirs(TEXTS[1])["input_ids"]


def test_a_sinusoidal_model_is_refused(tokenizer_file: Path, tmp_path: Path) -> None:
    cfg = GPTConfig(vocab_size=300, n_layer=1, n_head=2, n_embd=32, block_size=16, pos_encoding="sinusoidal")
    trained = TrainedModel(
        model=GPT(cfg), config=cfg, tokenizer=Tokenizer.from_file(tokenizer_file),
        tokenizer_path=tokenizer_file, checkpoint=tmp_path / "none", step=0, run_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(UsageError, match="neither GPT-2 nor GPT-NeoX has fixed sinusoidal positions"):
        export_hf(trained, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# --- real runs through the CLI


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """pos_encoding -> a finished 4-step single-process run of the tiny model.

    The sinusoidal "run" is a copy of the rope run whose run.json says sinusoidal: the two have the
    same parameters (each keeps its positions in a non-persistent buffer), so its checkpoint loads
    as a sinusoidal model without a third training run.
    """
    tmp = tmp_path_factory.mktemp("hf-runs")
    corpus = write_code_corpus(tmp_path_factory.mktemp("hf-corpus"), seed=5)
    made = {}
    for pos_encoding in ("learned", "rope"):  # one after the other: the machine is small
        run_dir = tmp / pos_encoding
        args = tiny_args(
            run_dir, "--pos-encoding", pos_encoding, "--max-steps", 4, "--eval-every", 4,
            "--save-every", 4, "--eval-batches", 1, "--data", corpus, "--vocab-size", 300,
            "--block-size", 32,
        )  # fmt: skip
        done = run_train(
            ["--deepspeed", str(CPU_CONFIG), *args], timeout=600, env=child_env(CUDA_VISIBLE_DEVICES="")
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        made[pos_encoding] = run_dir
    made["sinusoidal"] = shutil.copytree(made["rope"], tmp / "sinusoidal")
    record = json.loads((made["sinusoidal"] / "run.json").read_text())
    record["model"]["pos_encoding"] = "sinusoidal"
    (made["sinusoidal"] / "run.json").write_text(json.dumps(record))
    yield made
    # the corpus lives in a temporary folder, so its prepared copy would never be reused: drop it
    dataset = Path(json.loads((made["learned"] / "run.json").read_text())["dataset"]["path"])
    if dataset.parent == DATA_CACHE:
        shutil.rmtree(dataset, ignore_errors=True)


def export_cli(run_dir: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm.export", str(run_dir), str(out), "--format", "hf"], cwd=REPO,
        env=child_env(CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True, timeout=180,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("pos_encoding", ["learned", "rope"])
def test_export_cli_format_hf_of_a_real_run(runs: dict[str, Path], pos_encoding: str, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    done = export_cli(runs[pos_encoding], out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == HF_FILES  # and no staging folder left behind
    assert all(str(out / name) in done.stdout for name in HF_FILES)

    trained = load_trained(runs[pos_encoding])
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = "def g3_4(y):\n    yield async"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]  # (1, T)
    assert ids[0].tolist() == trained.tokenizer.encode(text)
    difference = max_logit_difference(trained.model, out, ids)
    print(f"\n{pos_encoding} run, step {trained.step}: max |logit difference| {difference:.2e}")
    assert difference <= TOLERANCE

    # a prompt that leaves room: past block_size ours keeps the last block_size tokens, GPT-2 fails
    prompt = "def g"
    ours = complete(trained, prompt, max_new_tokens=NEW_TOKENS, temperature=0)  # llm.generate's path
    assert len(ours.prompt_ids) + NEW_TOKENS <= trained.config.block_size
    assert hf_greedy(out, tokenizer(prompt, return_tensors="pt")["input_ids"]) == ours.new_ids
    assert trained.tokenizer.decode(ours.prompt_ids + ours.new_ids) == ours.text


@pytest.mark.slow
def test_export_cli_refuses_a_sinusoidal_run_with_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "hf"
    assert load_trained(runs["sinusoidal"]).config.pos_encoding == "sinusoidal"  # it loads; hf refuses it
    refused = export_cli(runs["sinusoidal"], out)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --format hf cannot export"), refused.stderr
    assert "sinusoidal" in lines[0] and "GPT-NeoX" in lines[0]
    assert not out.exists()
