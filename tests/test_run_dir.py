"""A single-process run writes a reproducible run directory and feeds DeepSpeed's own monitors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from llm.telemetry.schema import parse_event
from tests.helpers import ds_config, run_train, tiny_args


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("run")
    config = ds_config(tmp, csv_monitor={"enabled": True, "output_path": str(tmp / "csv"), "job_name": "job"})
    run_dir = tmp / "run"
    args = ["--deepspeed", str(config), "--max-steps", "6", "--log-every", "2", "--eval-every", "3"]
    done = run_train([*args, *tiny_args(run_dir), "--sample-tokens", "30"])
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, tmp / "csv" / "job", done.stdout


def test_metrics_follow_the_schema(run: tuple[Path, Path, str]) -> None:
    run_dir, _, _ = run
    events = [parse_event(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e.seq for e in events] == list(range(len(events)))
    train = [e for e in events if e.type == "train"]
    assert [e.step for e in train] == [2, 4, 6]
    assert [e.step for e in events if e.type == "eval"] == [0, 3, 6]
    assert all(e.tokens_per_s > 0 and e.mfu > 0 and e.grad_norm and e.loss_scale == 1.0 for e in train)
    assert train[-1].tokens_seen == 6 * 8 * 128  # steps x micro-batch x block size, 1 rank
    assert {e.run_id for e in events} == {"run"}


def test_run_directory_records_what_is_needed_to_reproduce(run: tuple[Path, Path, str]) -> None:
    run_dir, _, _ = run
    record = json.loads((run_dir / "run.json").read_text())
    assert record["settings"]["max_steps"] == 6 and record["model"]["n_layer"] == 2
    assert record["code"]["git_sha"] and len(record["code"]["git_sha"]) == 40
    assert isinstance(record["code"]["dirty"], bool)
    assert record["versions"]["torch"] and record["versions"]["deepspeed"]
    assert record["hardware"]["world_size"] == 1 and record["hardware"]["cpu_count"]
    assert record["parameters"] > 0 and record["peak_flops"] > 1e9
    used = json.loads((run_dir / "run.ds_config.json").read_text())
    assert used["train_batch_size"] == 8 and used["scheduler"]["params"]["total_num_steps"] == 6


def test_deepspeed_csv_monitor_receives_our_metrics(run: tuple[Path, Path, str]) -> None:
    _, csv_dir, _ = run
    loss_file = csv_dir / "Train_loss.csv"
    assert loss_file.is_file(), sorted(p.name for p in csv_dir.iterdir())
    rows = list(csv.reader(loss_file.open()))
    assert [int(r[0]) for r in rows[1:]] == [2, 4, 6]
    assert (csv_dir / "Eval_val_bpb.csv").is_file() and (csv_dir / "Train_mfu.csv").is_file()


def test_the_run_ends_by_printing_a_sample(run: tuple[Path, Path, str]) -> None:
    _, _, stdout = run
    assert "--- sample (30 tokens) ---" in stdout and "--- end of sample ---" in stdout


def test_checkpoint_manifest_is_complete(run: tuple[Path, Path, str]) -> None:
    run_dir, _, _ = run
    folder = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["step"] == 6 and manifest["tokens_seen"] == 6 * 8 * 128
    assert manifest["sampler"]["position"] == 6 * 8
    assert manifest["rng_files"] == ["rng_state_rank0.pt"]
    assert set(manifest["files"]) == {p.name for p in folder.iterdir() if p.name != "manifest.json"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert manifest["config_hash"] and manifest["tokenizer_hash"]
    assert manifest["code"]["git_sha"] == json.loads((run_dir / "run.json").read_text())["code"]["git_sha"]
