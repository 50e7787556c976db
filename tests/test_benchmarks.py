"""The benchmark scripts run end to end (on the CPU here; the same scripts measure GPUs elsewhere)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DATA_CACHE, REPO, child_env, free_port


@pytest.mark.dist
def test_run_configs_tabulates_a_real_run(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "benchmarks/run_configs.py", "--config", "ds_configs/cpu.json", "--max-steps", "6",
        "--log-every", "2", "--nproc", "1", "--master-port", str(free_port()), "--out", str(tmp_path),
        "--name", "smoke", "--", "--model", "tiny", "--data-cache", str(DATA_CACHE),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (row,) = json.loads((tmp_path / "smoke.json").read_text())["runs"]
    assert row["precision"] == "fp32" and row["world_size"] == 1 and row["steps"] == 6
    assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1
    assert row["last_val_loss"] < row["first_val_loss"]
    assert "| ds_configs/cpu.json | CPU" in (tmp_path / "smoke.md").read_text()


# a row of the printed table: | loop | tokens/s | trainer's own log | MFU | ÷ plain | ÷ nanoGPT |
ROW = re.compile(
    r"^\| (?P<loop>[^|]+?) \| (?P<tokens>[\d,]+) \| (?P<logged>[^|]+?) \| (?P<mfu>[^|]+?) \| "
    r"\*\*(?P<over_plain>[\d.]+)\*\* \| \*\*(?P<over_nanogpt>[\d.]+)\*\* \|$"
)


def json_rate(runs: dict[str, Any], name: str) -> float:
    return float(runs[name]["tokens_per_s"])


@pytest.mark.slow
def test_trainer_vs_plain_ratios_are_the_printed_rates_divided(tmp_path: Path) -> None:
    """A short run: each ratio in the JSON is tokens/s ÷ tokens/s, as printed and as stored."""
    cmd = [
        sys.executable, "benchmarks/trainer_vs_plain.py", "--steps", "3", "--warmup", "1", "--rounds", "1",
        "--zero-stages", "0", "--out", str(tmp_path), "--data-cache", str(DATA_CACHE), "--dashboard-variants",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    printed = {m["loop"]: m for m in map(ROW.match, done.stdout.splitlines()) if m}
    result = json.loads((tmp_path / "trainer_vs_plain.json").read_text())
    runs = result["runs"]
    names = {"plain loop (our GPT)": "plain", "nanoGPT recipe": "nanogpt", "trainer, ZeRO-0": "trainer_zero0",
             "trainer, ZeRO-0, reporting to the dashboard": "trainer_zero0_dashboard"}  # fmt: skip
    assert set(printed) == set(names), done.stdout
    shown = {names[k]: float(m["tokens"].replace(",", "")) for k, m in printed.items()}
    for loop, name in names.items():
        run, row = runs[name], printed[loop]
        assert shown[name] == round(run["tokens_per_s"]), (name, shown[name], run["tokens_per_s"])
        for base in ("plain", "nanogpt"):
            stored, shown_ratio = run[f"over_{base}"], float(row[f"over_{base}"])
            # the JSON ratio is the JSON rates divided ...
            assert stored == pytest.approx(run["tokens_per_s"] / runs[base]["tokens_per_s"], rel=1e-9)
            # ... and the printed rates divided, within their rounding to whole tokens/s
            from_printed = shown[name] / shown[base]
            slack = from_printed * (0.5 / shown[name] + 0.5 / shown[base]) + 5e-4
            assert abs(stored - from_printed) <= slack, (name, base, stored, from_printed)
            # the printed ratio is the stored one, to its three decimals
            assert abs(shown_ratio - stored) <= 5e-4 + 1e-12, (name, base, shown_ratio, stored)
    assert runs["trainer_zero0"]["tokens_per_s_as_logged"] > 0
    # the reporter's cost: on ÷ off, stored and printed
    on_off = runs["trainer_zero0_dashboard"]["over_reporter_off"]
    rate_on, rate_off = json_rate(runs, "trainer_zero0_dashboard"), json_rate(runs, "trainer_zero0")
    assert on_off == pytest.approx(rate_on / rate_off)
    assert f"reporting to the dashboard: **{on_off:.3f}**" in done.stdout
    assert len(result["load_before"]) == len(result["load_after"]) == 3
    assert "--zero-stages 0" in result["command"] and result["profile"] is None
    table = [line for line in done.stdout.splitlines() if ROW.match(line)]
    assert table == [
        line for line in (tmp_path / "trainer_vs_plain.md").read_text().splitlines() if ROW.match(line)
    ]


@pytest.mark.slow
def test_checkpoint_stall_times_real_saves_and_its_table_is_its_json(tmp_path: Path) -> None:
    from llm.model.config import from_preset
    from llm.model.gpt import GPT

    args = ["--n-embd", "64", "--rounds", "1", "--steps", "6", "--save-every", "3", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "benchmarks/checkpoint_stall.py", *args], cwd=REPO, env=child_env(),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "checkpoint_stall.json").read_text())
    (row,) = result["rows"]
    parameters = GPT.parameter_count(from_preset("tiny", n_layer=4, n_embd=64, n_head=8, vocab_size=8192))
    for mode in ("sync", "async"):  # both modes, from this checkout
        (run,) = result["runs"][mode]["64"]
        assert len(run["blocked_s"]) == 1  # the save at step 3 (the one at step 6 follows the last eval)
        assert min(run["blocked_s"][0], run["write_s"], run["durable_write_s"], run["read_back_hash_s"]) > 0
        assert run["loop_s"] > run["blocked_s"][0]
        assert run["checkpoint_async"] is (mode == "async")  # what the trainer ran with (its run.json)
        assert run["bytes"] >= 12 * parameters  # fp32 weights and Adam's two moments: a whole checkpoint
        assert row[f"{mode}_blocked_median_s"] == run["blocked_s"][0]
        assert row[f"{mode}_blocked_over_write"] == row[f"{mode}_blocked_median_s"] / row["write_median_s"]
    assert row["write_median_s"] == result["runs"]["sync"]["64"][0]["write_s"]  # the first mode's files
    assert row["async_loop_over_sync"] == row["async_loop_median_s"] / row["sync_loop_median_s"]
    table_row = (
        f"| 64 | {row['checkpoint_mb']:.0f} | {row['write_median_s']:.3f} | "
        f"{row['durable_write_median_s']:.3f} | {row['read_back_hash_median_s']:.3f} | "
        f"{row['sync_blocked_median_s']:.3f} | "
        f"{row['sync_blocked_over_write']:.2f} | {row['sync_blocked_over_durable_write']:.2f} | "
        f"{row['sync_loop_median_s']:.2f} | {row['async_blocked_median_s']:.3f} |"
    )
    assert table_row in (tmp_path / "checkpoint_stall.md").read_text()


def test_every_other_round_runs_in_reverse_so_drift_favours_no_run() -> None:
    from benchmarks.run import Scenario, run_order

    single = Scenario("single", ranks=1, nodes=1, zero_stage=1, warmup=2, steps=4)
    multi = Scenario("multi-rank", ranks=2, nodes=1, zero_stage=1, warmup=2, steps=4)
    names = [[(s.name, kind or "trainer") for s, kind in run_order([single, multi], r)] for r in range(4)]
    first = [
        ("single", "trainer"), ("single", "plain"), ("single", "nanogpt"), ("single", "accelerate"),
        ("multi-rank", "trainer"), ("multi-rank", "ddp"), ("multi-rank", "accelerate"),
    ]  # fmt: skip
    assert names == [first, first[::-1], first, first[::-1]]
    # over each pair of rounds every run sits at the same mean position: a steady drift cancels
    for run in first:
        assert names[0].index(run) + names[1].index(run) == len(first) - 1
