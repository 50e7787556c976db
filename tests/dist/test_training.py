"""Real 2-rank runs through the deepspeed launcher on the CPU: the model learns, accumulation is real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm.checkpoints.catalogue import newest_complete
from llm.checkpoints.weights import load_model_weights
from llm.data.loader import BatchSampler
from llm.data.prepare import load_dataset
from llm.model.config import from_preset
from llm.model.gpt import GPT
from tests.helpers import REPO, SECOND_CORPUS, ds_config, metrics, run_train, tiny_args

pytestmark = [pytest.mark.dist, pytest.mark.slow]

LR = 0.5  # plain SGD's learning rate in the accumulation test


def _val_losses(run_dir: Path) -> list[float]:
    return [r["val_loss"] for r in metrics(run_dir, "eval")]


@pytest.mark.parametrize("corpus", ["builtin", "folder"])
def test_two_ranks_lower_validation_loss_by_30_percent(tmp_path: Path, corpus: str) -> None:
    run_dir = tmp_path / "run"
    data = [] if corpus == "builtin" else ["--data", str(SECOND_CORPUS)]
    args = tiny_args(run_dir, "--max-steps", "200", "--eval-every", "50", "--log-every", "25", *data)
    done = run_train(["--deepspeed", "ds_configs/cpu.json", *args], nproc=2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    losses = _val_losses(run_dir)
    assert [r["step"] for r in metrics(run_dir, "eval")] == [0, 50, 100, 150, 200]
    print(f"{corpus}: val loss {losses[0]:.3f} -> {losses[-1]:.3f} ({1 - losses[-1] / losses[0]:.1%} lower)")
    assert losses[-1] <= 0.7 * losses[0]
    run_json = (run_dir / "run.json").read_text()
    assert '"world_size": 2' in run_json
    train = metrics(run_dir, "train")
    assert {"loss", "lr", "grad_norm", "loss_scale", "tokens_per_s", "mfu"} <= set(train[-1])
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in train)
    # each rank's own figures, gathered by rank 0 at the end; no per-step timers unless the JSON asks
    stats = json.loads((run_dir / "rank_stats.json").read_text())["ranks"]
    assert [r["rank"] for r in stats] == [0, 1]
    assert all(0 < r["memory"]["start_bytes"] < r["memory"]["peak_bytes"] for r in stats)
    assert all(r["memory"]["kind"] == "cpu" and r["timers_ms"] == {} for r in stats)


def _weights_after_one_step(tmp_path: Path, name: str, *, micro: int, accum: int) -> dict[str, torch.Tensor]:
    # Plain SGD (torch.optim.SGD through DeepSpeed), no clipping: the update is lr x gradient, so a
    # gradient scaled by any factor (micro-batches summed instead of averaged, a loss divided twice)
    # moves the weights by that factor. Clipping at 1.0 is active at init, where the norm is ~1.7, and
    # would make every update lr x g/|g|, hiding such a factor (Adam's first step, lr x sign(g), would
    # too). It is turned off with 0: a config without the key gets DeepSpeed 0.19's default, 1.0.
    config = ds_config(
        tmp_path,
        f"{name}.json",
        train_micro_batch_size_per_gpu=micro,
        gradient_accumulation_steps=accum,
        gradient_clipping=0.0,
        optimizer={"type": "SGD", "params": {"lr": LR}},
        scheduler=None,
        zero_optimization={"stage": 2},
        zero_allow_untested_optimizer=True,
    )
    run_dir = tmp_path / name
    args = tiny_args(run_dir, "--max-steps", "1", "--eval-every", "100", "--eval-batches", "1")
    done = run_train(["--deepspeed", str(config), *args], nproc=2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = newest_complete(run_dir / "checkpoints")
    assert folder is not None
    return load_model_weights(folder)


def _reference_step(run_dir: Path, *, micro: int, accum: int, world_size: int = 2) -> dict[str, torch.Tensor]:
    """One SGD step in plain PyTorch (no DeepSpeed) on the windows the trainer's ranks drew in step 1.

    The same initial weights (the trainer seeds with --seed, 1337 by default, then builds the model)
    and the same samples: each rank's BatchSampler, one micro-batch per accumulation step, as the loop
    draws them. The loss is the mean over all world_size x micro x accum windows, as DeepSpeed's
    averaging over micro-batches and ranks should make it.
    """
    dataset_path = Path(json.loads((run_dir / "run.json").read_text())["dataset"]["path"])
    dataset = load_dataset(dataset_path if dataset_path.is_absolute() else REPO / dataset_path)
    torch.manual_seed(1337)
    model = GPT(from_preset("tiny", vocab_size=dataset.tokenizer.vocab_size))
    cfg = model.cfg
    xs, ys = [], []
    for rank in range(world_size):
        sampler = BatchSampler(
            dataset.train, block_size=cfg.block_size, micro_batch=micro, rank=rank, world_size=world_size,
            seed=1337,
        )  # fmt: skip
        for _ in range(accum):
            x, y = sampler.next_batch()
            xs.append(x)
            ys.append(y)
    _, loss = model(torch.cat(xs), torch.cat(ys))  # (16, T): the mean over every window's tokens
    assert loss is not None
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            param -= LR * param.grad
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_gradient_accumulation_matches_a_larger_micro_batch(tmp_path: Path) -> None:
    """micro-batch 4 x accumulation 2 == micro-batch 8 x accumulation 1 == plain PyTorch, after one
    SGD step without clipping (fp32, 2 ranks)."""
    accumulated = _weights_after_one_step(tmp_path, "mb4x2", micro=4, accum=2)
    single = _weights_after_one_step(tmp_path, "mb8x1", micro=8, accum=1)
    assert accumulated.keys() == single.keys()
    worst = max((accumulated[k] - single[k]).abs().max().item() for k in single)
    print(f"mb4x2 vs mb8x1: largest parameter difference {worst:.3e}")
    assert worst <= 1e-6  # fp32 sums in another order differ by ~1e-8 x lr here

    reference = _reference_step(tmp_path / "mb4x2", micro=4, accum=2)
    torch.manual_seed(1337)
    init = GPT(from_preset("tiny", vocab_size=reference["wte.weight"].shape[0])).state_dict()
    assert set(reference) <= set(accumulated), set(reference) - set(accumulated)
    update = max((reference[k] - init[k]).abs().max().item() for k in reference)
    for name, weights in (("mb4x2", accumulated), ("mb8x1", single)):
        moved = max((weights[k] - init[k]).abs().max().item() for k in reference)
        diff = max((weights[k] - reference[k]).abs().max().item() for k in reference)
        print(
            f"{name} vs plain PyTorch: largest parameter difference {diff:.3e}; "
            f"largest update {moved:.3e} (reference {update:.3e})"
        )
        # A gradient off by a factor s moves some weight by (s - 1) x the update: 2x the loss is
        # a difference of `update`, far beyond this bound.
        assert diff <= 1e-3 * update
    assert update > 1e-3  # and the step did something: the weights moved well away from the init
