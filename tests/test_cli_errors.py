"""Every bad input ends the real entry point with one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import CPU_CONFIG, child_env, ds_config, run_train, tiny_args


def _assert_usage_error(done, *fragments: str) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip() and "[WARNING]" not in line]
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "train_micro_batch_size_per_gpu": 8,\n}\n')
    _assert_usage_error(
        run_train(["--deepspeed", str(path), *tiny_args(tmp_path / "r")]), f"{path}:3:1: invalid JSON"
    )


def test_misspelt_key(tmp_path: Path) -> None:
    config = json.loads(CPU_CONFIG.read_text())
    config["gradient_acumulation_steps"] = 2
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(config))
    _assert_usage_error(
        run_train(["--deepspeed", str(path), *tiny_args(tmp_path / "r")]),
        'unknown key "gradient_acumulation_steps"',
        'did you mean "gradient_accumulation_steps"',
    )


def test_misspelt_optimizer_param(tmp_path: Path) -> None:
    """A typo DeepSpeed would pass to the optimizer (a 25-line TypeError, exit 1) is one line, exit 2."""
    config = json.loads(CPU_CONFIG.read_text())
    config["optimizer"]["params"]["weight_decy"] = config["optimizer"]["params"].pop("weight_decay")
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(config))
    done = run_train(["--deepspeed", str(path), *tiny_args(tmp_path / "r")])
    error = _assert_usage_error(
        done, 'unknown key "optimizer.params.weight_decy"', 'did you mean "optimizer.params.weight_decay"'
    )
    assert done.stderr.splitlines() == [error]  # exactly one line on stderr
    assert not (tmp_path / "r").exists()  # refused before any work


def test_batch_sizes_that_do_not_multiply_out(tmp_path: Path) -> None:
    path = ds_config(tmp_path, train_batch_size=24)  # 8 x 1 x 2 ranks = 16
    env = child_env(RANK="0", LOCAL_RANK="0", WORLD_SIZE="2")  # as the launcher would set for rank 0 of 2
    done = run_train(["--deepspeed", str(path), *tiny_args(tmp_path / "r")], env=env)
    _assert_usage_error(done, '"train_batch_size" 24', "2 ranks = 16", "set it to 16")


def test_fp16_on_a_machine_without_cuda(tmp_path: Path) -> None:
    _assert_usage_error(
        run_train(["--deepspeed", "ds_configs/3090.json", *tiny_args(tmp_path / "r")]),
        '"fp16" needs a CUDA GPU',
        "use ds_configs/cpu.json",
    )


def test_missing_deepspeed_config(tmp_path: Path) -> None:
    _assert_usage_error(
        run_train(["--deepspeed", "ds_configs/nope.json", *tiny_args(tmp_path / "r")]), "nope.json"
    )


def test_data_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-corpus"
    _assert_usage_error(run_train([*tiny_args(tmp_path / "r"), "--data", str(missing)]), str(missing))


def test_preset_that_does_not_exist(tmp_path: Path) -> None:
    args = [a for a in tiny_args(tmp_path / "r") if a != "tiny"]
    args[args.index("--model")] = "--model=gpt2-smal"
    _assert_usage_error(run_train(args), "no such preset", 'did you mean "gpt2-small"')


def test_resume_pointing_at_nothing(tmp_path: Path) -> None:
    _assert_usage_error(
        run_train([*tiny_args(tmp_path / "r"), "--resume", str(tmp_path / "gone")]),
        "no such run directory or checkpoint",
    )


def test_resume_from_an_incomplete_checkpoint(tmp_path: Path) -> None:
    """A checkpoint whose save never finished (no manifest) is refused, and nothing is changed."""
    run_dir = tmp_path / "r"
    done = run_train([*tiny_args(run_dir), "--max-steps", "2", "--save-every", "1", "--eval-every", "100"])
    assert done.returncode == 0, done.stderr[-2000:]
    partial = run_dir / "checkpoints" / "step_00000002"
    (partial / "manifest.json").unlink()
    before = sorted(p.name for p in partial.iterdir())
    message = _assert_usage_error(
        run_train([*tiny_args(run_dir), "--resume", str(partial)]),
        "not a usable checkpoint",
        "use ",
        "step_00000001",
    )
    assert "no manifest.json (the save did not finish)" in message
    assert sorted(p.name for p in partial.iterdir()) == before

    # a corrupt shard (right size, wrong bytes) is caught by its sha256 before loading
    good = run_dir / "checkpoints" / "step_00000001"
    shard = good / "mp_rank_00_model_states.pt"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    _assert_usage_error(run_train([*tiny_args(run_dir), "--resume", str(good)]), "sha256", "corrupt")


@pytest.mark.dist
def test_the_launcher_passes_exit_code_2_through(tmp_path: Path) -> None:
    shutil.copy(CPU_CONFIG, tmp_path / "cpu.json")
    done = run_train(["--deepspeed", "ds_configs/3090.json", *tiny_args(tmp_path / "r")], nproc=2)
    _assert_usage_error(done, '"fp16" needs a CUDA GPU')
