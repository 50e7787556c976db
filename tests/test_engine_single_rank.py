"""One rank trains at ZeRO-0, without DeepSpeed's all-reduce of the gradients with itself, and the same.

The all-reduce of one rank is an identity that still flattens and copies back every gradient each
step (benchmarks/results/trainer_vs_plain.md); llm.train.engine.build_engine turns it off there. A
JSON at ZeRO 1 or 2 runs at ZeRO-0 on one fp32 rank (llm.ds_config.one_rank_stage): those stages
partition nothing there and cost 1.39-1.56x ZeRO-0's step at gpt2-small's shape (benchmarks/engine_ab.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, child_env, ds_config

# Builds the engine twice from the same seed: as build_engine leaves it, and at the JSON's own stage
# with the all-reduce forced back on; trains both on the same micro-batches (accumulation 2) and
# compares the weights.
SCRIPT = """
import dataclasses, json, sys
from pathlib import Path
import torch
from llm.ds_config import load_ds_config
from llm.model.config import from_preset
from llm.model.gpt import GPT
from llm.train.engine import build_engine, init_distributed

init_distributed(timeout_s=60)
settings = load_ds_config(Path(sys.argv[1]), world_size=1, cuda_available=False, max_steps=10)
cfg = from_preset("tiny", vocab_size=256, block_size=32)

def train(reference):
    torch.manual_seed(0)
    chosen = settings
    if reference:
        stage = settings.json_zero_stage
        zero = {**settings.config["zero_optimization"], "stage": stage}
        chosen = dataclasses.replace(settings, config={**settings.config, "zero_optimization": zero})
    engine = build_engine(GPT(cfg), chosen)
    reduces = engine.enable_backward_allreduce
    engine.enable_backward_allreduce = reduces or reference
    data = torch.Generator().manual_seed(1)
    for _ in range(6):
        x, y = torch.randint(0, 256, (2, 4, 32), generator=data)
        _, loss = engine(x, y)
        engine.backward(loss)
        engine.step()
    weights = [p.detach().clone() for p in engine.module.parameters()]
    norm = engine.get_global_grad_norm()
    norms.append(None if norm is None else float(norm))
    return engine.zero_optimization_stage(), reduces, engine.global_steps, weights

norms = []  # the gradient norm each engine reports for its last step (before clipping)
torch.manual_seed(0)
initial = list(GPT(cfg).parameters())
stage, reduces, steps, weights = train(False)
reference_stage, _, _, reference = train(True)
diff = max((a - b).abs().max().item() for a, b in zip(weights, reference))
moved = max((a - b).abs().max().item() for a, b in zip(weights, initial))
print(json.dumps({
    "stage": stage, "reference_stage": reference_stage, "reduces": reduces, "steps": steps,
    "max_diff": diff, "moved": moved, "grad_norms": norms,
}))
"""


def _run(tmp_path: Path, stage: int) -> dict[str, object]:
    config = ds_config(
        tmp_path,
        f"zero{stage}.json",
        train_micro_batch_size_per_gpu=4,
        gradient_accumulation_steps=2,
        zero_optimization={"stage": stage},
        scheduler=None,  # a constant LR: the warm-up's first steps would barely move the weights
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(config)],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_zero0_on_one_rank_skips_the_self_allreduce_and_trains_the_same(tmp_path: Path) -> None:
    result = _run(tmp_path, 0)
    assert result["reduces"] is False  # build_engine turned the identity all-reduce off
    assert result["stage"] == result["reference_stage"] == 0
    assert result["steps"] == 3  # 6 micro-batches, accumulation 2
    assert result["max_diff"] == 0.0, result  # bit for bit what the all-reduce gave
    assert result["moved"] > 1e-4, result  # and the weights did train


@pytest.mark.parametrize("stage", [1, 2])
def test_a_zero1_or_2_json_trains_at_zero0_on_one_rank_as_its_own_stage_would(
    tmp_path: Path, stage: int
) -> None:
    result = _run(tmp_path, stage)
    assert (result["stage"], result["reference_stage"]) == (0, stage)
    assert result["reduces"] is False
    assert result["steps"] == 3
    # the same optimizer on the same numbers; ZeRO sums the gradient norm in another order, which Adam's
    # division by sqrt(v) amplifies where v is small: 2.5e-6 after 3 steps that moved the weights 3e-3
    assert result["max_diff"] < 1e-5, result
    assert result["moved"] > 1e-4, result
    # DeepSpeed's ZeRO-0 fp32 step drops the norm it clips with; build_engine keeps it (train records)
    ours, zero_stage = result["grad_norms"]
    assert ours is not None and ours == pytest.approx(zero_stage, rel=1e-4), result
