"""CPU tests of the GPT on tiny shapes (2 layers, width 16): each runs in well under a second."""

from __future__ import annotations

import pytest
import torch

from llm.model.config import PRESETS, GPTConfig, PositionalEncoding, from_preset
from llm.model.sampling import generate
from llm.model.gpt import GPT

ENCODINGS: list[PositionalEncoding] = ["learned", "rope", "sinusoidal"]
VOCAB, BLOCK = 64, 16


def tiny(**overrides: object) -> GPTConfig:
    shape: dict[str, object] = dict(vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=16, block_size=BLOCK)
    return GPTConfig.model_validate({**shape, **overrides})


def build(cfg: GPTConfig, *, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg)


def pattern_batch(batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows over a repeating pattern where what follows token 1 depends on what came before it."""
    pattern = torch.tensor([1, 2, 1, 3, 1, 4, 5, 6])
    stream = pattern.repeat(8)
    x = torch.stack([stream[i : i + BLOCK] for i in range(batch)])  # (B, T)
    y = torch.stack([stream[i + 1 : i + 1 + BLOCK] for i in range(batch)])  # (B, T)
    return x, y


def test_shapes_with_and_without_targets() -> None:
    model = build(tiny())
    x, y = pattern_batch(batch=3)
    logits, loss = model(x)
    assert logits.shape == (3, BLOCK, VOCAB)
    assert loss is None
    logits, loss = model(x[:, :5], y[:, :5])
    assert logits.shape == (3, 5, VOCAB)
    assert loss is not None and loss.shape == () and loss.dtype == torch.float32


def test_longer_than_block_size_is_refused() -> None:
    model = build(tiny())
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, BLOCK + 1, dtype=torch.long))


def test_ignore_index_minus_one() -> None:
    model = build(tiny())
    x, y = pattern_batch()
    half = BLOCK // 2
    masked = y.clone()
    masked[:, half:] = -1
    _, loss_masked = model(x, masked)
    logits, _ = model(x)
    kept = torch.nn.functional.cross_entropy(logits[:, :half].reshape(-1, VOCAB), y[:, :half].reshape(-1))
    assert loss_masked is not None
    torch.testing.assert_close(loss_masked, kept)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_causal(encoding: PositionalEncoding) -> None:
    model = build(tiny(pos_encoding=encoding)).double().eval()
    idx = torch.randint(0, VOCAB, (2, BLOCK), generator=torch.Generator().manual_seed(1))
    logits, _ = model(idx)
    for t in (0, 5, BLOCK - 2):
        changed = idx.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % VOCAB
        changed_logits, _ = model(changed)
        assert torch.allclose(logits[:, : t + 1], changed_logits[:, : t + 1], rtol=0, atol=1e-12)
        assert not torch.allclose(logits[:, t + 1], changed_logits[:, t + 1])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_parameter_count_formula(encoding: PositionalEncoding, bias: bool) -> None:
    cfg = tiny(pos_encoding=encoding, bias=bias)
    assert build(cfg).num_parameters() == GPT.parameter_count(cfg)


def test_gpt2_small_parameter_count() -> None:
    # the figure nanoGPT prints for GPT-2 small with the lm_head tied to wte
    assert GPT.parameter_count(from_preset("gpt2-small", vocab_size=50257)) == 124_439_808


def test_tied_weights_stay_tied_through_a_step() -> None:
    model = build(tiny())
    assert model.lm_head.weight is model.wte.weight
    before = model.wte.weight.detach().clone()
    x, y = pattern_batch()
    _, loss = model(x, y)
    assert loss is not None
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert model.lm_head.weight is model.wte.weight
    assert torch.equal(model.lm_head.weight, model.wte.weight)
    assert not torch.equal(model.wte.weight, before)


def test_residual_projections_have_scaled_init() -> None:
    cfg = tiny(n_layer=8, n_embd=64)
    model = build(cfg)
    std = model.blocks[0].mlp.c_proj.weight.std().item()
    assert std == pytest.approx(0.02 / (2 * cfg.n_layer) ** 0.5, rel=0.1)
    assert model.blocks[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_encoding_trains(encoding: PositionalEncoding) -> None:
    model = build(tiny(pos_encoding=encoding))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = pattern_batch()
    losses = []
    for _ in range(60):
        _, loss = model(x, y)
        assert loss is not None
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_activation_checkpointing_gives_same_loss_and_grads() -> None:
    x, y = pattern_batch()
    plain = build(tiny(pos_encoding="rope"))
    checkpointed = build(tiny(pos_encoding="rope", activation_checkpointing=True))
    checkpointed.load_state_dict(plain.state_dict())
    results = []
    for model in (plain, checkpointed):
        model.train()
        _, loss = model(x, y)
        assert loss is not None
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], msg=name)


def test_generate_shape_and_block_size_cropping() -> None:
    model = build(tiny())
    prompt = torch.randint(0, VOCAB, (2, BLOCK))  # already a full context: every step must crop
    out = generate(model, prompt, max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, BLOCK + 5)
    assert torch.equal(out[:, :BLOCK], prompt)
    assert int(out.min()) >= 0 and int(out.max()) < VOCAB


def test_generate_greedy_is_deterministic_and_restores_mode() -> None:
    model = build(tiny(dropout=0.5))
    model.train()
    prompt = torch.tensor([[1, 2, 3]])
    first = generate(model, prompt, max_new_tokens=8, temperature=0.0)
    second = generate(model, prompt, max_new_tokens=8, temperature=0.0)
    assert torch.equal(first, second)  # also shows dropout was off while sampling
    assert model.training


def test_top_k_one_equals_greedy() -> None:
    model = build(tiny())
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    greedy = generate(model, prompt, max_new_tokens=8, temperature=0.0)
    top1 = generate(model, prompt, max_new_tokens=8, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(greedy, top1)


def test_seeded_sampling_repeats() -> None:
    model = build(tiny())
    prompt = torch.tensor([[1, 2, 3]])
    a = generate(model, prompt, max_new_tokens=8, top_k=10, generator=torch.Generator().manual_seed(7))
    b = generate(model, prompt, max_new_tokens=8, top_k=10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds(name: str) -> None:
    cfg = from_preset(name)
    params = GPT.parameter_count(cfg)
    assert params > 0
    assert GPT.flops_per_token(cfg) > 6 * params


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="gpt2-small"):
        from_preset("gpt5")
