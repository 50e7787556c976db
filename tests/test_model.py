"""CPU tests of the GPT on tiny shapes (2 layers, width 16): each runs in well under a second,
except the copy-task trainings (1 layer, width 64, marked slow), which take a few seconds each."""

from __future__ import annotations

import math

import pytest
import torch

from llm.model.config import PRESETS, GPTConfig, PositionalEncoding, from_preset
from llm.model.gpt import GPT
from llm.model.layers import Rotary, sinusoidal_table
from llm.model.sampling import generate

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


def test_our_cross_entropy_has_torchs_value_and_gradient() -> None:
    """llm.model.loss takes the softmax's gradient in closed form: it must equal autograd's through
    F.cross_entropy, with ignored targets, an upstream factor (as a loss scale or accumulation gives)
    and in float64 (so any difference is the formula, not rounding)."""
    from llm.model.loss import cross_entropy

    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(64, 50, generator=gen, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, 50, (64,), generator=gen)
    targets[::5] = -1
    ours = cross_entropy(logits, targets)
    (grad_ours,) = torch.autograd.grad(2.5 * ours, logits)
    theirs = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-1)
    (grad_theirs,) = torch.autograd.grad(2.5 * theirs, logits)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=0, atol=1e-12)
    assert grad_ours[::5].abs().max() == 0  # ignored rows get no gradient
    # every target ignored: NaN, as torch's
    assert torch.isnan(cross_entropy(logits.detach(), torch.full((64,), -1)))
    # the saved log-probabilities become the gradient in place: a second backward must be refused
    loss = cross_entropy(logits, targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


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


# The copy task: random tokens, and the target at position t is the token COPY_BACK places back.
# Every earlier token is equally likely a priori, so only knowing *where* each one sits tells which
# to copy: a model without a position signal cannot solve it.
COPY_VOCAB, COPY_BLOCK, COPY_BACK = 16, 16, 3


def copy_batch(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, COPY_VOCAB, (batch, COPY_BLOCK), generator=generator)  # (B, T)
    y = torch.full_like(x, -1)  # positions t < COPY_BACK have nothing to copy: ignored by the loss
    y[:, COPY_BACK:] = x[:, :-COPY_BACK]  # (B, T)
    return x, y


def position_free_floor(x: torch.Tensor, y: torch.Tensor) -> float:
    """The loss, on these sequences, of the best one-layer model that cannot see positions.

    Without a position signal a one-layer causal transformer's output at t is a function of x[t]
    and of the multiset {x[0], ..., x[t]} only: each attention weight depends on the two tokens
    alone, and the weighted average forgets their order. Given that multiset, the token
    COPY_BACK places back is, by symmetry of the i.i.d. positions 0..t-1, a uniform draw from
    x[0..t-1]; the best prediction is its empirical distribution, and no such model's expected
    loss is below the mean of -log(count of the target in x[:t] / t). About 1.76 nats here.
    (Deeper stacks are not bound by it: the causal mask alone can leak position across layers.)
    """
    losses = []
    for t in range(COPY_BACK, x.size(1)):
        counts = torch.nn.functional.one_hot(x[:, :t], COPY_VOCAB).sum(dim=1)  # (B, V)
        p_target = counts.gather(1, y[:, t : t + 1]).squeeze(1).double() / t  # (B,)
        losses.append(-p_target.log())
    return torch.cat(losses).mean().item()


def train_copy_task(model: GPT, *, steps: int = 160, batch: int = 32, lr: float = 1e-2) -> float:
    """Train on fresh copy-task batches; return the loss on held-out sequences."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    data = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    # matmuls this small gain nothing from a second thread, which on a busy machine only spins
    # waiting for a core (measured here: 4x the wall and CPU time at load 8 on 2 cores)
    torch.set_num_threads(1)
    try:
        for step in range(steps):
            for group in optimizer.param_groups:  # constant, then linear decay to 0 over the second half
                group["lr"] = lr * min(1.0, 2.0 * (1.0 - step / steps))
            x, y = copy_batch(batch, data)
            _, loss = model(x, y)
            assert loss is not None
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            _, held_out = model(*copy_batch(256, torch.Generator().manual_seed(99)))
    finally:
        torch.set_num_threads(threads)
    assert held_out is not None
    return held_out.item()


def copy_model(encoding: PositionalEncoding) -> GPT:
    # one layer, so that position_free_floor is a proof, not an estimate, for the position-free model
    cfg = GPTConfig(
        vocab_size=COPY_VOCAB, n_layer=1, n_head=2, n_embd=64, block_size=COPY_BLOCK, pos_encoding=encoding
    )
    return build(cfg)


def test_copy_task_floor() -> None:
    x, y = copy_batch(256, torch.Generator().manual_seed(99))
    assert 1.6 < position_free_floor(x, y) < 1.9  # log(16) = 2.77 is the floor with no context at all


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_encoding_solves_a_task_that_needs_positions(encoding: PositionalEncoding) -> None:
    floor = position_free_floor(*copy_batch(256, torch.Generator().manual_seed(99)))
    loss = train_copy_task(copy_model(encoding))
    print(f"{encoding}: held-out loss {loss:.4f}, position-free floor {floor:.4f}")
    # measured 0.001-0.08 with seeds 0-5 for init and data (sinusoidal the slowest); floor ~1.76
    assert loss < 0.25 * floor


@pytest.mark.slow
def test_a_model_without_positions_fails_that_task() -> None:
    floor = position_free_floor(*copy_batch(256, torch.Generator().manual_seed(99)))
    model = copy_model("learned")
    assert model.wpe is not None
    torch.nn.init.zeros_(model.wpe.weight)  # its only position signal, zeroed and frozen
    model.wpe.weight.requires_grad_(False)
    loss = train_copy_task(model)
    print(f"positions removed: held-out loss {loss:.4f}, position-free floor {floor:.4f}")
    assert not model.wpe.weight.any()  # still zero: the signal stayed off
    # it cannot go below the floor (see position_free_floor); 0.9 leaves room for sampling noise
    assert loss > 0.9 * floor


def test_rope_scores_depend_only_on_the_offset() -> None:
    B, nh, T, hs = 2, 3, 64, 16
    rotary = Rotary(hs, block_size=T)
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(B, nh, 1, hs, dtype=torch.float64), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(B, nh, 1, hs, dtype=torch.float64), dim=-1)
    # the same q at every position i and the same k at every position j: scores[..., i, j]
    q_rotated = rotary(q.expand(B, nh, T, hs))  # (B, nh, T, hs)
    k_rotated = rotary(k.expand(B, nh, T, hs))  # (B, nh, T, hs)
    scores = q_rotated @ k_rotated.transpose(-1, -2)  # (B, nh, T, T)
    by_offset = []
    for offset in range(-(T - 1), T):  # offset = i - j
        diagonal = torch.diagonal(scores, -offset, dim1=-2, dim2=-1)  # (B, nh, T - |offset|)
        torch.testing.assert_close(diagonal, diagonal[..., :1].expand_as(diagonal), rtol=0, atol=1e-5)
        by_offset.append(diagonal[..., 0])
    by_offset_t = torch.stack(by_offset, dim=-1)  # (B, nh, 2T - 1)
    assert (by_offset_t.std(dim=-1) > 0.05).all()  # the offset does change the score
    # and changes it as a rotation by offset * base^(-2i/hs) of each channel pair (i, i + hs/2)
    offsets = torch.arange(-(T - 1), T, dtype=torch.float64)
    theta = 10000.0 ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)  # (hs/2,)
    angles = offsets[:, None] * theta  # (2T - 1, hs/2)
    qa, qb = q[..., 0, : hs // 2], q[..., 0, hs // 2 :]  # (B, nh, hs/2) each
    ka, kb = k[..., 0, : hs // 2], k[..., 0, hs // 2 :]
    expected = (qa * ka + qb * kb) @ angles.cos().T + (qa * kb - qb * ka) @ angles.sin().T
    torch.testing.assert_close(by_offset_t, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n_embd", [64, 7])
def test_sinusoidal_table_matches_its_formula(n_embd: int) -> None:
    T = 128
    table = sinusoidal_table(T, n_embd)
    assert table.shape == (T, n_embd)
    scale = 0.02 * math.sqrt(2.0)  # sin^2 + cos^2 = 1: each channel pair has mean square 1/2
    expected = torch.empty(T, n_embd, dtype=torch.float64)
    for pos in range(T):
        for channel in range(n_embd):
            angle = pos / 10000.0 ** (2 * (channel // 2) / n_embd)
            expected[pos, channel] = scale * (math.sin(angle) if channel % 2 == 0 else math.cos(angle))
    torch.testing.assert_close(table.double(), expected, rtol=0, atol=1e-6)
    if n_embd % 2 == 0:  # the documented RMS, exact when every sin has its cos
        assert table.pow(2).mean().sqrt().item() == pytest.approx(0.02, rel=1e-5)


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
