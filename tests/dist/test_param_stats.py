"""The Model panel's `params` records: per-layer norms from each rank's partition are right under ZeRO 0-3.

Two ranks train the same tiny model on the same batches at each ZeRO stage. Without ZeRO every rank holds
whole parameters, so those figures are checked against the checkpoint's weights;
ZeRO-1/2/3 (partitions summed over ranks) must give the same figures, and a total gradient norm equal to
the one DeepSpeed reports (it reports none without ZeRO).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import ds_config, metrics, run_train, tiny_args

pytestmark = [pytest.mark.dist, pytest.mark.slow]

STEPS, EVERY = 6, 3


def _train(tmp: Path, stage: int) -> Path:
    config = ds_config(
        tmp,
        f"zero{stage}.json",
        train_micro_batch_size_per_gpu=4,
        gradient_accumulation_steps=2,
        zero_optimization={"stage": stage},
    )
    run_dir = tmp / f"zero{stage}"
    args = [
        "--deepspeed", str(config), "--max-steps", str(STEPS), "--params-every", str(EVERY), "--log-every", "1",
        "--eval-every", "100", "--eval-batches", "1", "--save-every", str(STEPS),
    ]  # fmt: skip
    done = run_train([*args, *tiny_args(run_dir)], nproc=2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def no_zero(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("params"), 0)


def _records(run_dir: Path) -> dict[int, dict[str, Any]]:
    records = metrics(run_dir, "params")
    assert [r["step"] for r in records] == list(range(EVERY, STEPS + 1, EVERY))
    return {r["step"]: r for r in records}


def test_without_zero_the_norms_match_the_weights(no_zero: Path) -> None:
    from llm.checkpoints.trained import load_trained

    params = _records(no_zero)
    model = load_trained(no_zero).model
    weights = dict(model.named_parameters())
    last = params[STEPS]["layers"]
    assert [layer["name"] for layer in last] == list(weights)
    for layer in last:
        w = weights[layer["name"]].detach().double()
        assert layer["numel"] == w.numel()
        assert layer["weight_norm"] == pytest.approx(w.norm().item(), rel=1e-5)
        assert 0 < layer["update_ratio"] < 1
    assert all(layer["grad_norm"] > 0 for record in params.values() for layer in record["layers"])
    # the histogram of one matrix: every weight counted once; layers taken in turn
    names = []
    for record in params.values():
        histogram = record["histogram"]
        names.append(histogram["name"])
        assert len(histogram["edges"]) == len(histogram["counts"]) + 1
        assert sum(histogram["counts"]) == weights[histogram["name"]].numel()
    assert len(set(names)) == len(names)
    final = params[STEPS]["histogram"]
    values = weights[final["name"]].detach().flatten()
    assert final["edges"][0] == pytest.approx(values.min().item(), abs=1e-6)
    assert final["edges"][-1] == pytest.approx(values.max().item(), abs=1e-6)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_partitioned_norms_match_the_run_without_zero(tmp_path: Path, no_zero: Path, stage: int) -> None:
    got_dir = _train(tmp_path, stage)
    expected, got = _records(no_zero), _records(got_dir)
    for step in expected:
        want = {layer["name"]: layer for layer in expected[step]["layers"]}
        have = {layer["name"]: layer for layer in got[step]["layers"]}
        assert have.keys() == want.keys()
        for name, layer in have.items():
            for key in ("weight_norm", "grad_norm", "update_ratio"):
                if want[name][key] is None:  # a ratio to weights that were still zero (biases)
                    assert layer[key] is None, (step, name, key)
                else:
                    assert layer[key] == pytest.approx(want[name][key], rel=1e-3), (step, name, key)
            assert layer["numel"] == want[name]["numel"]
        # DeepSpeed's global gradient norm (before clipping; ZeRO reports it) from the step's train record
        train = next(r for r in metrics(got_dir, "train") if r["step"] == step)
        total = math.sqrt(sum(layer["grad_norm"] ** 2 for layer in got[step]["layers"]))
        assert total == pytest.approx(train["grad_norm"], rel=1e-4)
        theirs, ours = expected[step]["histogram"], got[step]["histogram"]
        assert ours["name"] == theirs["name"]
        assert torch.allclose(torch.tensor(ours["edges"]), torch.tensor(theirs["edges"]), atol=1e-5)
