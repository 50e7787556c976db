"""Every bad input ends the real entry point with one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm.errors import SILENT_RANK_GRACE_S
from tests.helpers import CPU_CONFIG, REPO, child_env, ds_config, run_train, tiny_args


def _assert_usage_error(done, *fragments: str) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip() and "[WARNING]" not in line]
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "accelerator" not in done.stderr  # DeepSpeed's banner: not imported before the checks
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
    """Even when the silent rank finds the problem first: the launcher ends the job on its exit.

    Local rank 0 starts late here (a sitecustomize that sleeps), as it did at random under load.
    """
    (tmp_path / "sitecustomize.py").write_text(
        "import os, time\nif os.environ.get('LOCAL_RANK') == '0':\n    time.sleep(5)\n"
    )
    done = run_train(
        ["--deepspeed", "ds_configs/3090.json", *tiny_args(tmp_path / "r")], nproc=2,
        env=child_env(PYTHONPATH=str(tmp_path)),
    )  # fmt: skip
    _assert_usage_error(done, '"fp16" needs a CUDA GPU')


def test_a_silent_rank_says_the_problem_if_no_other_rank_does(tmp_path: Path) -> None:
    started = time.monotonic()
    args = ["--deepspeed", "ds_configs/3090.json", *tiny_args(tmp_path / "r")]
    done = subprocess.run(
        [sys.executable, "launch/train.py", *args], cwd=REPO,
        env=child_env(LOCAL_RANK="1", RANK="1", WORLD_SIZE="2"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    _assert_usage_error(done, '"fp16" needs a CUDA GPU')
    assert time.monotonic() - started >= SILENT_RANK_GRACE_S  # waited for local rank 0 to say it first


def test_flags_are_never_abbreviated(tmp_path: Path) -> None:
    """--max-step 3 once started a full run as --max-steps 3's prefix; now it is refused, with the fix."""
    _assert_usage_error(
        run_train(["--max-step", "3", *tiny_args(tmp_path / "r")]),
        "unrecognized arguments: --max-step 3",
        "did you mean --max-steps?",
    )
    assert not (tmp_path / "r").exists()


def test_a_deepspeed_json_given_to_config(tmp_path: Path) -> None:
    _assert_usage_error(
        run_train(["--config", str(CPU_CONFIG), *tiny_args(tmp_path / "r")]),
        "this is a DeepSpeed config",
        "pass it to --deepspeed",
    )


def test_a_block_size_no_memory_can_carry(tmp_path: Path) -> None:
    """--block-size 100000 on tiny once ran a ten-minute evaluation; now it is refused before any work."""
    _assert_usage_error(
        run_train(["--block-size", "100000", *tiny_args(tmp_path / "r")]),
        "--block-size 100000",
        "GiB of activations",
        "lower --block-size",
    )
    assert not (tmp_path / "r").exists()


def test_a_reused_run_dir_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "run.json").write_text('{"run_id": "r"}\n')
    (run_dir / "metrics.jsonl").write_text('{"type": "train", "step": 1}\n')
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    _assert_usage_error(
        run_train(tiny_args(run_dir)),
        f"--run-dir {run_dir} already holds a run",
        "--resume auto",
        "new --run-dir",
    )
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_resume_is_checked_before_deepspeed_and_says_when_nothing_is_left(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    done = run_train([*tiny_args(run_dir), "--max-steps", "2", "--save-every", "2", "--eval-every", "100"])
    assert done.returncode == 0, done.stderr[-2000:]
    # another shape: refused from the manifest, before DeepSpeed is even imported
    cmd = [sys.executable, "-X", "importtime", "launch/train.py", *tiny_args(run_dir), "--resume", "auto"]
    other = subprocess.run(
        [*cmd, "--n-layer", "3"], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300
    )
    assert other.returncode == 2, other.stderr[-2000:]
    assert "checkpoint's model has n_layer=2 (asked: 3)" in other.stderr
    imported = [
        line.split("|")[-1].strip() for line in other.stderr.splitlines() if line.startswith("import time:")
    ]
    assert "torch" in imported and not any(name.startswith("deepspeed") for name in imported)
    # at or past --max-steps: says so and leaves the run alone
    metrics_before = (run_dir / "metrics.jsonl").read_bytes()
    done = run_train([*tiny_args(run_dir), "--max-steps", "2", "--resume", "auto"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "is at step 2, --max-steps is 2: nothing to train; raise --max-steps" in done.stdout
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics_before
