"""The dashboard's learning-rate multiplier composes with the DeepSpeed JSON's schedule.

A real one-rank engine: the scaled run's LR at every later step is the schedule's LR times the
multiplier (warm-up and cosine keep their shape), earlier steps are untouched, and without a scheduler
the multiplier applies to the optimizer's LR. The pause/save/stop commands are exercised end to end
through the sidecar and a browser (tests/e2e).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, child_env, ds_config

SCRIPT = """
import json, sys
from pathlib import Path
import torch
from llm.ds_config import load_ds_config
from llm.model.config import from_preset
from llm.model.gpt import GPT
from llm.train.control import LrScale
from llm.train.engine import build_engine, init_distributed

init_distributed(timeout_s=60)
settings = load_ds_config(Path(sys.argv[1]), world_size=1, cuda_available=False, max_steps=12)
cfg = from_preset("tiny", vocab_size=256, block_size=32)

def lrs(scale_at):
    torch.manual_seed(0)
    engine = build_engine(GPT(cfg), settings)
    scale = LrScale(engine)
    seen = []
    data = torch.Generator().manual_seed(1)
    for step in range(1, 9):
        x, y = torch.randint(0, 256, (2, 4, 32), generator=data)
        _, loss = engine(x, y)
        engine.backward(loss)
        engine.step()
        seen.append(engine.get_lr()[0])  # the LR the next step will use
        if step == scale_at:
            scale.set(0.25)
            seen[-1] = engine.get_lr()[0]
    return seen

print(json.dumps({"reference": lrs(None), "scaled": lrs(3)}))
"""


@pytest.mark.parametrize("scheduler", ["WarmupCosineLR", None])
def test_a_new_learning_rate_multiplies_the_schedule_from_the_next_step(
    tmp_path: Path, scheduler: str | None
) -> None:
    overrides: dict[str, object] = {"zero_optimization": {"stage": 1}, "train_micro_batch_size_per_gpu": 4}
    if scheduler is None:
        overrides["scheduler"] = None
    else:  # warm-up over the first 4 steps, then cosine over 12: the LR moves every step
        overrides["scheduler"] = {"type": scheduler, "params": {"warmup_num_steps": 4, "total_num_steps": 12}}
    config = ds_config(tmp_path, **overrides)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(config)], cwd=REPO, env=child_env(), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    reference, scaled = result["reference"], result["scaled"]
    print(f"\n{scheduler}: reference {reference}\nscaled    {scaled}")
    assert scaled[:2] == reference[:2]  # before the change
    assert scaled[2:] == pytest.approx([0.25 * lr for lr in reference[2:]], rel=1e-12)
    if scheduler is not None:
        assert len(set(reference)) == len(reference)  # the schedule moved at every step
