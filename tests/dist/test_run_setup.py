"""What a 2-rank run sets up: every process group bounded by --dist-timeout, a self-contained run
directory that `llm.generate` reads from any folder without DeepSpeed, and how the MFU peak was taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    REPO,
    child_env,
    ds_config,
    free_port,
    kill_tree,
    rank_processes,
    run_train,
    start_train,
    tiny_args,
    train_losses,
    wait_for,
)

pytestmark = [pytest.mark.dist, pytest.mark.slow]

DIST_TIMEOUT = 77.0
SPARE_TIMEOUT = 24 * 3600.0  # the one group meant to outlast data preparation (llm/train/session.py)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("setup")
    config = ds_config(tmp, zero_optimization={"stage": 2})  # ZeRO-2 makes DeepSpeed's own groups
    run_dir = tmp / "run"
    args = tiny_args(run_dir, "--max-steps", "2", "--eval-every", "100", "--dist-timeout", DIST_TIMEOUT)
    args[args.index("--data-cache") + 1] = ".cache/test-data"  # relative to the checkout, as users type it
    done = run_train(["--deepspeed", str(config), *args], nproc=2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run_dir


def test_every_process_group_has_the_jobs_timeout(run_dir: Path) -> None:
    timeouts = json.loads((run_dir / "run.json").read_text())["process_group_timeouts_s"]
    print(timeouts)
    assert len(timeouts) >= 3  # the world, our spare group, DeepSpeed's ZeRO groups
    assert sorted(set(timeouts.values())) == [DIST_TIMEOUT, SPARE_TIMEOUT]
    assert list(timeouts.values()).count(SPARE_TIMEOUT) == 1


def test_nccl_groups_default_to_the_jobs_timeout_too() -> None:
    """NCCL groups made without a timeout take torch's NCCL default (10 min), not gloo's: both are set."""
    code = (
        "from llm.train.engine import init_distributed; init_distributed(timeout_s=33);"
        "from torch.distributed import distributed_c10d as c;"
        "print(c._get_default_timeout(c.Backend.NCCL).total_seconds(),"
        " c._get_default_timeout(c.Backend.GLOO).total_seconds())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["33.0", "33.0"]


def test_generate_from_another_folder_without_deepspeed(run_dir: Path, tmp_path: Path) -> None:
    record = json.loads((run_dir / "run.json").read_text())
    assert Path(record["dataset"]["path"]).is_absolute()
    assert (run_dir / "tokenizer.json").read_bytes() == (
        Path(record["dataset"]["path"]) / "tokenizer.json"
    ).read_bytes()
    cmd = [
        sys.executable, "-X", "importtime", "-m", "llm.generate", "--checkpoint", str(run_dir), "--prompt",
        "def ", "--max-new-tokens", "8", "--seed", "1",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("def ")
    imported = [
        line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
    ]
    assert "torch" in imported and not any(name.startswith("deepspeed") for name in imported)


def test_run_json_says_how_the_peak_was_taken(run_dir: Path) -> None:
    record = json.loads((run_dir / "run.json").read_text())
    # DeepSpeed's launcher set CUDA_VISIBLE_DEVICES=0,1 for the ranks; on the CPU accelerator the
    # trainer hides CUDA again, so a GPU the machine has cannot change a CPU run
    assert record["hardware"]["cuda_visible_devices"] == ""
    how = record["peak_flops_how"]
    assert how["source"] in ("measured", "cache") and how["flops"] > 0 and how["shapes"]
    assert record["peak_flops"] > 0


@pytest.mark.parametrize("stage", [2, 3])
def test_our_zero_reader_matches_deepspeed_on_three_ranks(tmp_path: Path, stage: int) -> None:
    """Three ranks: the tiny model's 128-wide tensors do not split evenly, so ZeRO pads its partitions
    (and ZeRO-2 aligns each group to 2 x ranks); the reader that needs no DeepSpeed must undo both."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from llm.checkpoints.catalogue import newest_complete
    from llm.checkpoints.weights import load_model_weights

    config = ds_config(tmp_path, zero_optimization={"stage": stage})
    run_dir = tmp_path / "run"
    done = run_train(
        ["--deepspeed", str(config), *tiny_args(run_dir, "--max-steps", "1", "--eval-every", "100")], nproc=3
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = newest_complete(run_dir / "checkpoints")
    assert folder is not None
    ours = load_model_weights(folder)
    theirs = get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert any(v.numel() % 3 for v in ours.values())  # padding was really exercised


def test_ranks_leave_no_shared_memory_behind_even_when_killed(tmp_path: Path) -> None:
    """DeepSpeed's CPU all-reduce maps a 69 MB /dev/shm file per rank and never removes it; every rank
    unlinks its own once all have mapped them, so nothing is left even after kill -9."""
    port = free_port()
    run_dir = tmp_path / "run"
    args = tiny_args(run_dir, "--max-steps", "100000", "--log-every", "1", "--eval-every", "100000")
    launcher = start_train(args, nproc=2, log=tmp_path / "log", master_port=port)
    try:
        wait_for(lambda: max(train_losses(run_dir), default=0) >= 2, timeout=300, what="step 2", proc=launcher)
        ranks = rank_processes(launcher)
        assert len(ranks) == 2
        # each rank still maps every rank's buffer (so DeepSpeed really uses them), by now nameless
        for rank in ranks:
            lines = [line for line in Path(f"/proc/{rank.pid}/maps").read_text().splitlines() if f"_{port}_" in line]
            mapped = {line[line.index("/dev/shm/") :].removesuffix(" (deleted)") for line in lines}
            prefix = f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_127.0.0.1_{port}"
            assert mapped == {f"{prefix}_0", f"{prefix}_1"}
            assert all(line.endswith("(deleted)") for line in lines), lines
        for rank in ranks:
            rank.kill()
        launcher.wait(timeout=120)
    finally:
        kill_tree(launcher)
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
