"""`python -m llm.generate` and `python -m llm.export` on real ZeRO-1 and ZeRO-3 runs of the tiny model.

Two 6-step single-process runs (one per ZeRO stage, ~6 s each) on a small generated corpus are made
once for the module; every test reads them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, load_model

from llm.checkpoints.trained import load_trained
from llm.checkpoints.weights import load_model_weights
from llm.data.tokenizer import Tokenizer
from llm.errors import UsageError
from llm.export import load_exported
from llm.export import main as export_main
from llm.generate import complete
from llm.model.config import GPTConfig
from llm.model.gpt import GPT
from tests.helpers import DATA_CACHE, REPO, child_env, ds_config, run_train, tiny_args, write_code_corpus

pytestmark = pytest.mark.slow

PROMPT = "def "
STEPS = 6


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Path]]:
    """ZeRO stage -> a finished run directory with checkpoints at steps 3 and 6."""
    tmp = tmp_path_factory.mktemp("runs")
    corpus = write_code_corpus(tmp_path_factory.mktemp("corpus"), seed=0)
    made = {}
    for stage in (1, 3):  # one after the other: the machine is small
        # Plain SGD: the update is lr x gradient, so both stages end at the same weights up to float
        # rounding (Adam's early steps are ~lr x sign(g) and flip on near-zero gradients).
        config = ds_config(
            tmp, f"zero{stage}.json", zero_optimization={"stage": stage}, scheduler=None,
            optimizer={"type": "SGD", "params": {"lr": 0.5}}, zero_allow_untested_optimizer=True,
        )  # fmt: skip
        run_dir = tmp / f"zero{stage}"
        args = tiny_args(
            run_dir, "--max-steps", STEPS, "--eval-every", 3, "--save-every", 3, "--eval-batches", 2,
            "--data", corpus, "--vocab-size", 300, "--block-size", 32,
        )  # fmt: skip
        done = run_train(["--deepspeed", str(config), *args], timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        made[stage] = run_dir
    yield made
    # the corpus lives in a temporary folder, so its prepared copy would never be reused: drop it
    dataset = Path(json.loads((made[1] / "run.json").read_text())["dataset"]["path"])
    if dataset.parent == DATA_CACHE:
        shutil.rmtree(dataset, ignore_errors=True)


def run_cli(module: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=child_env(), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert all(word in lines[0] for word in words), lines[0]


def checkpoint_folder(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}"


# --- generate


def test_generate_cli_from_a_run_dir_and_from_a_checkpoint_folder(runs: dict[int, Path]) -> None:
    sample = ("--prompt", PROMPT, "--max-new-tokens", "24", "--seed", "7", "--device", "cpu")
    from_run = run_cli("llm.generate", "--checkpoint", runs[1], *sample)
    assert from_run.returncode == 0, from_run.stderr
    text = from_run.stdout.removesuffix("\n")
    assert text.startswith(PROMPT) and len(text) > len(PROMPT)

    again = run_cli("llm.generate", "--checkpoint", runs[1], *sample)
    assert again.stdout == from_run.stdout  # a fixed seed repeats the sample

    # the run directory means its `latest` checkpoint: the last one, step 6
    latest = run_cli("llm.generate", "--checkpoint", checkpoint_folder(runs[1], STEPS), *sample)
    assert latest.stdout == from_run.stdout
    earlier = run_cli("llm.generate", "--checkpoint", checkpoint_folder(runs[3], 3), *sample)
    assert earlier.returncode == 0, earlier.stderr
    assert earlier.stdout.startswith(PROMPT) and len(earlier.stdout.strip()) > len(PROMPT)


def test_generate_python_api_gives_exactly_the_tokens_asked_for(runs: dict[int, Path]) -> None:
    trained = load_trained(runs[3])
    assert trained.checkpoint == checkpoint_folder(runs[3], STEPS) and trained.step == STEPS
    done = complete(trained, PROMPT, max_new_tokens=5, seed=0)
    assert len(done.new_ids) == 5
    assert done.prompt_ids == trained.tokenizer.encode(PROMPT)
    assert done.text == trained.tokenizer.decode(done.prompt_ids + done.new_ids)
    assert done.text.startswith(PROMPT)
    assert complete(trained, PROMPT, max_new_tokens=5, seed=0) == done
    assert len(complete(trained, "", max_new_tokens=3, temperature=0).new_ids) == 3  # empty prompt
    assert complete(trained, PROMPT, max_new_tokens=0).text == PROMPT


def test_zero1_and_zero3_checkpoints_load_the_same_model(runs: dict[int, Path]) -> None:
    reference = GPT(load_trained(runs[1]).config).state_dict()
    loaded = {stage: load_trained(run_dir) for stage, run_dir in runs.items()}
    for trained in loaded.values():
        state = trained.model.state_dict()
        assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.items()}
        assert all(v.dtype == torch.float32 for v in state.values())
        assert trained.model.lm_head.weight is trained.model.wte.weight  # still tied after loading
        weights = load_model_weights(trained.checkpoint)
        assert all(torch.equal(state[k], weights[k]) for k in state)

    # ZeRO-1 keeps whole weights in its model file: exactly what the engine held at step 6
    engine_file = checkpoint_folder(runs[1], STEPS) / "mp_rank_00_model_states.pt"
    engine_held = torch.load(engine_file, map_location="cpu", weights_only=False)["module"]
    zero1, zero3 = (loaded[s].model.state_dict() for s in (1, 3))
    assert all(torch.equal(zero1[k], engine_held[k].float()) for k in zero1)
    # ZeRO-3 shards them (its model file holds empty placeholders); the same seed, data and fp32 SGD
    # steps give the same weights up to the order of floating-point sums
    worst = max((zero3[k] - zero1[k]).abs().max().item() for k in zero1)
    assert worst < 1e-5
    torch.manual_seed(1337)  # the trainer's default --seed: its initial weights
    initial = GPT(loaded[3].config).state_dict()
    assert max((zero3[k] - initial[k]).abs().max().item() for k in zero3) > 1e-3  # trained, not fresh


# --- export


def test_export_writes_weights_config_and_tokenizer_that_reload(
    runs: dict[int, Path], tmp_path: Path
) -> None:
    out = tmp_path / "export"
    done = run_cli("llm.export", runs[3], out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert all(str(out / name) in done.stdout for name in ("config.json", "model.safetensors"))

    trained = load_trained(runs[3])
    stored = load_file(out / "model.safetensors")
    assert set(stored) == set(trained.model.state_dict()) - {"lm_head.weight"}  # the tied matrix once
    fresh = GPT(trained.config)
    load_model(fresh, out / "model.safetensors")
    idx = torch.tensor([trained.tokenizer.encode("def f1_2(x):\n    return count")])
    with torch.no_grad():
        expected, _ = trained.model(idx)
        assert torch.equal(fresh.eval()(idx)[0], expected)
        assert torch.equal(load_exported(out)(idx)[0], expected)

    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "llm-gpt"
    assert GPTConfig.model_validate(config["model"]) == trained.config
    assert config["parameters"] == trained.model.num_parameters() == GPT.parameter_count(trained.config)
    assert config["source"]["checkpoint"] == f"step_{STEPS:08d}" and config["source"]["step"] == STEPS

    tokenizer = Tokenizer.from_file(out / "tokenizer.json")
    text = "def total(x):\n    return value  # ünïcode"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode(text) == trained.tokenizer.encode(text)


def test_export_refuses_to_overwrite_without_force(
    runs: dict[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"an earlier export")
    refused = run_cli("llm.export", runs[1], out)
    assert_one_line_error(refused, str(out / "model.safetensors"), "--force")
    assert (out / "model.safetensors").read_bytes() == b"an earlier export"
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]

    assert export_main([str(runs[1]), str(out), "--force"]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    assert set(load_file(out / "model.safetensors")) >= {"wte.weight"}


# --- bad input: one line, exit 2


def test_generate_on_a_missing_run_dir_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-run"
    assert_one_line_error(run_cli("llm.generate", "--checkpoint", missing), str(missing))
    negative = run_cli("llm.generate", "--checkpoint", missing, "--max-new-tokens", "-3")
    assert_one_line_error(negative, "--max-new-tokens")


def test_a_run_without_a_complete_checkpoint_is_refused(runs: dict[int, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    unfinished = run_dir / "checkpoints" / "step_00000003"
    unfinished.mkdir(parents=True)
    shutil.copy(runs[1] / "run.json", run_dir / "run.json")
    with pytest.raises(UsageError, match="no complete checkpoint"):
        load_trained(run_dir)
    with pytest.raises(UsageError, match=r"not a usable checkpoint, no manifest\.json"):
        load_trained(unfinished)


def test_a_run_whose_latest_save_did_not_finish_falls_back(runs: dict[int, Path], tmp_path: Path) -> None:
    run_dir = shutil.copytree(runs[3], tmp_path / "run")
    (checkpoint_folder(run_dir, STEPS) / "manifest.json").unlink()  # `latest` names an unfinished save
    assert load_trained(run_dir).checkpoint == checkpoint_folder(run_dir, 3)
    with pytest.raises(UsageError, match=f"use {checkpoint_folder(run_dir, 3)}"):
        load_trained(checkpoint_folder(run_dir, STEPS))


def test_a_run_is_self_contained_and_refused_only_without_any_tokenizer(
    runs: dict[int, Path], tmp_path: Path
) -> None:
    run_dir = shutil.copytree(runs[1], tmp_path / "moved-run")
    record = json.loads((run_dir / "run.json").read_text())
    record["dataset"]["path"] = str(tmp_path / "deleted-dataset")
    (run_dir / "run.json").write_text(json.dumps(record))
    assert load_trained(run_dir).tokenizer_path == run_dir / "tokenizer.json"  # the run's own copy
    (run_dir / "tokenizer.json").unlink()
    with pytest.raises(
        UsageError, match=r"not in .*moved-run, and the dataset folder .*deleted-dataset is gone"
    ):
        load_trained(run_dir)


@pytest.mark.parametrize("stage", [1, 3])
def test_our_zero_reader_matches_deepspeeds_zero_to_fp32(runs: dict[int, Path], stage: int) -> None:
    """llm/checkpoints/weights.py rebuilds the weights without DeepSpeed; DeepSpeed's own tool agrees."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    folder = checkpoint_folder(runs[stage], STEPS)
    ours = load_model_weights(folder)
    theirs = get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
