"""`python -m benchmarks.run` end to end, short (what `make bench` runs, smaller): the real launcher
with 1 and 2 ranks, one rank compiled (--compile), and the multi-rank run again at ZeRO-2, the baselines
beside them; then the report is held to the JSON, the JSON to the trainer's own records, and each plot
to the data it claims."""

from __future__ import annotations

import json
import re
import statistics
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from benchmarks.report import GIB, TIMER_LABELS
from benchmarks.run import TIMERS, theory_bytes_per_parameter
from tests.helpers import DATA_CACHE, REPO, child_env

pytestmark = [pytest.mark.dist, pytest.mark.slow]

WARMUP, STEPS, LOG_EVERY = 2, 4, 2
BUCKET = 200_000  # elements: the tiny model's gradients in several buckets
OVERLAP = ("zero2-no-overlap", "zero2-overlap", "zero2-overlap-buckets")
FIRST_SERIES = (0x1F, 0x77, 0xB4)  # matplotlib's C0, the colour of the first series in every plot


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("bench")
    readme = tmp / "README.md"
    readme.write_text((REPO / "benchmarks" / "README.md").read_text())
    before = readme.read_text()
    cmd = [
        sys.executable, "-m", "benchmarks.run", "--scenarios", "single,multi-rank", "--model", "tiny",
        "--steps", str(STEPS), "--warmup", str(WARMUP), "--log-every", str(LOG_EVERY), "--zero-stages", "3",
        "--data-cache", str(DATA_CACHE), "--out", str(tmp / "out"), "--readme", str(readme),
        "--port", "29571", "--compile", "--overlap-comm", "--bucket-elements", str(BUCKET),
    ]  # fmt: skip
    done = subprocess.run(
        cmd,
        cwd=REPO,
        env=child_env(BENCH_WORKDIR=str(tmp / "work")),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (json_path,) = (tmp / "out").glob("*.json")
    return {
        "tmp": tmp, "result": json.loads(json_path.read_text()), "json": json_path,
        "md": json_path.with_suffix(".md").read_text(), "readme_before": before, "readme": readme.read_text(),
    }  # fmt: skip


def test_the_result_is_named_by_date_host_and_commit_and_records_the_environment(
    bench: dict[str, Any],
) -> None:
    result, env = bench["result"], bench["result"]["environment"]
    sha = env["code"]["git_sha"][:8]
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d-\d{{4}}-[\w-]+-{sha}(-dirty)?\.json", bench["json"].name)
    assert env["torch"] and env["deepspeed"] and env["cpu_count"] >= 1
    (config,) = env["files"].values()
    assert config["content"] == (REPO / "ds_configs" / "cpu.json").read_text()
    assert list(result["scenarios"]) == ["single", "multi-rank", "compiled", *OVERLAP, "zero3"]


def test_figures_are_the_trainers_own_records_after_warmup(bench: dict[str, Any]) -> None:
    scen = bench["result"]["scenarios"]
    for name, row in scen.items():
        run_dir = bench["tmp"] / "work" / f"{name}-r0"
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        after = [r for r in records if r["type"] == "train" and r["step"] - LOG_EVERY >= row["warmup_steps"]]
        warmup, steps = row["warmup_steps"], row["steps"]
        assert (warmup, steps) == ((LOG_EVERY, LOG_EVERY) if name == "zero3" else (WARMUP, STEPS))
        assert [r["step"] for r in after] == list(range(warmup + LOG_EVERY, warmup + steps + 1, LOG_EVERY))
        assert row["tokens_per_s"] == pytest.approx(statistics.median(r["tokens_per_s"] for r in after))
        assert row["mfu"] == pytest.approx(statistics.median(r["mfu"] for r in after))
        assert row["tokens_per_s_per_device"] == pytest.approx(row["tokens_per_s"] / row["ranks"])
        stats = json.loads((run_dir / "rank_stats.json").read_text())["ranks"]
        assert [r["memory"]["peak_bytes"] for r in stats] == row["peak_memory_bytes"]
        assert len(stats) == row["ranks"] and all(v > 0 for v in row["peak_memory_bytes"])
        fwd = statistics.fmean(statistics.median(r["timers_ms"]["fwd"][warmup:]) for r in stats)
        assert row["breakdown_ms"]["fwd"] == pytest.approx(fwd)
        assert all(len(r["timers_ms"]["fwd"]) == warmup + steps for r in stats)  # one per optimizer step
        assert row["breakdown_ms"]["bwd_inner"] > 0 and row["breakdown_ms"]["step"] > 0
    assert scen["single"]["scaling_efficiency"] == pytest.approx(1.0)
    multi = scen["multi-rank"]
    assert multi["scaling_efficiency"] == pytest.approx(
        multi["tokens_per_s"] / (2 * scen["single"]["tokens_per_s"])
    )
    assert set(scen["single"]["baselines"]) == {"plain", "nanogpt", "accelerate"}
    assert set(multi["baselines"]) == {"ddp", "accelerate"}
    assert set(scen["compiled"]["baselines"]) == {"plain", "nanogpt-compiled"}
    for row in scen.values():
        for base in row["baselines"].values():
            assert base["tokens_per_s"] > 0
            assert base["ours_over_baseline"] == pytest.approx(row["tokens_per_s"] / base["tokens_per_s"])
    theory = bench["result"]["memory_theory"]
    assert theory["zero3"]["bytes_per_parameter"] == theory_bytes_per_parameter(3, 2, "fp32") == 16 / 2
    zero2 = theory["zero2-overlap"]["bytes_per_parameter"]
    assert zero2 == theory_bytes_per_parameter(2, 2, "fp32") == 4 + 12 / 2
    assert theory["single"]["model_states_bytes"] == 16 * scen["single"]["parameters"]


def _table(md: str, heading: str) -> list[list[str]]:
    section = md.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]  # without the header


def _near(text: str, value: float, unit: float = 1.0) -> None:
    """The printed `text` is `value` rounded to the digits it shows."""
    number = text.replace(",", "").rstrip("%")
    decimals = len(number.split(".")[1]) if "." in number else 0
    assert abs(float(number) * unit - value) <= 0.5 * 10**-decimals * unit * (1 + 1e-9), (text, value)


def test_the_reports_numbers_are_the_jsons(bench: dict[str, Any]) -> None:
    result, md = bench["result"], bench["md"]
    scen = result["scenarios"]
    rows = _table(md, "Throughput")
    assert [r[0] for r in rows] == list(scen)
    for r in rows:
        row = scen[r[0]]
        assert [int(r[1]), int(r[2]), int(r[3])] == [row["ranks"], row["nodes"], row["zero_stage"]]
        _near(r[4], row["tokens_per_s"])
        _near(r[5], row["tokens_per_s_per_device"])
        _near(r[6], row["tflops"])
        _near(r[7], row["mfu"], 0.01)
        _near(r[8], row["step_ms"])
        for text, value in zip(r[9].split(" / "), row["peak_memory_bytes"], strict=True):
            _near(text, value, GIB)
        _near(r[10], row["scaling_efficiency"])
    baselines = _table(md, "Ours ÷ baselines")
    assert len(baselines) == 7
    for r in baselines:
        base = scen[r[0]]["baselines"][r[1]]
        _near(r[2], base["tokens_per_s"])
        _near(r[3], base["mfu"], 0.01)
        _near(r[5], base["ours_over_baseline"])
    for r in _table(md, "Step-time breakdown"):
        row = scen[r[0]]
        for text, timer in zip(r[1:6], TIMER_LABELS, strict=True):
            _near(text, row["breakdown_ms"][timer])
    for r in _table(md, "Memory per rank"):
        _near(r[3], max(scen[r[0]]["peak_memory_bytes"]), GIB)
        _near(r[5], result["memory_theory"][r[0]]["model_states_bytes"], GIB)


def test_overlap_runs_hand_deepspeed_their_options_and_are_reported_against_the_run_without(
    bench: dict[str, Any],
) -> None:
    scen, md = bench["result"]["scenarios"], bench["md"]
    expected = {
        "zero2-no-overlap": {"overlap_comm": False},
        "zero2-overlap": {"overlap_comm": True},
    }
    buckets = {"reduce_bucket_size": BUCKET, "allgather_bucket_size": BUCKET}
    expected["zero2-overlap-buckets"] = {"overlap_comm": True, **buckets}
    for name, options in expected.items():
        ran = json.loads((bench["tmp"] / "work" / f"{name}-r0" / "run.ds_config.json").read_text())
        zero = ran["zero_optimization"]  # what the trainer handed DeepSpeed
        assert zero["stage"] == 2 and {k: zero.get(k) for k in options} == options, zero
        assert scen[name]["zero_options"] == options and scen[name]["ranks"] == 2
    rows = _table(md, "overlap_comm and bucket sizes")
    assert [r[0] for r in rows] == list(OVERLAP)
    off = scen["zero2-no-overlap"]["tokens_per_s"]
    for r in rows:
        row = scen[r[0]]
        assert r[3] == ("yes" if row["zero_options"]["overlap_comm"] else "no")
        assert r[4] == (f"{BUCKET:,}" if r[0] == "zero2-overlap-buckets" else "the JSON’s")
        _near(r[5], row["tokens_per_s"])
        _near(r[6], row["breakdown_ms"]["bwd_inner"])
        _near(r[9], row["tokens_per_s"] / off)
    assert rows[0][9] == "1.000"


def _settings(bench: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(json.loads((bench["tmp"] / "work" / f"{name}-r0" / "run.json").read_text())["settings"])


def test_the_compiled_scenario_compiles_and_reports_compile_time_apart(bench: dict[str, Any]) -> None:
    scen, md = bench["result"]["scenarios"], bench["md"]
    assert _settings(bench, "compiled")["compile"] is True  # the trainer ran with --compile
    assert _settings(bench, "single")["compile"] is False
    compiled = scen["compiled"]
    assert compiled["compiled"] is True and scen["single"]["compiled"] is False
    bases = compiled["baselines"]
    assert bases["nanogpt-compiled"]["compiled"] is True and bases["plain"]["compiled"] is False
    for name in ("single", "compiled"):
        # the first step beyond a measured one, from rank 0's DeepSpeed timers
        (rank0, *_) = json.loads((bench["tmp"] / "work" / f"{name}-r0" / "rank_stats.json").read_text())[
            "ranks"
        ]
        steps = [sum(rank0["timers_ms"][t][i] for t in TIMERS) for i in range(WARMUP + STEPS)]
        extra = (steps[0] - statistics.median(steps[WARMUP:])) / 1000
        assert scen[name]["first_step_extra_s"] == pytest.approx(extra)
    rows = _table(md, "torch.compile")
    runs = {(r[0], r[1]): r for r in rows}
    assert set(runs) == {("single", k) for k in ["trainer", *scen["single"]["baselines"]]} | {
        ("compiled", k) for k in ["trainer", *bases]
    }
    for (name, kind), r in runs.items():
        run = scen[name] if kind == "trainer" else scen[name]["baselines"][kind]
        assert r[2] == ("yes" if run["compiled"] else "no")
        _near(r[3], run["tokens_per_s"])
        _near(r[4], run["first_step_extra_s"])


def _png(path: Path) -> tuple[int, int, dict[str, str], bytes]:
    """Width, height, text chunks and the decompressed image data of a PNG, read chunk by chunk."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    pos, text, idat, size = 8, {}, b"", (0, 0)
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind, data = blob[pos + 4 : pos + 8], blob[pos + 8 : pos + 8 + length]
        assert zlib.crc32(kind + data) == struct.unpack(">I", blob[pos + 8 + length : pos + 12 + length])[0]
        if kind == b"IHDR":
            size = struct.unpack(">II", data[:8])
        elif kind == b"tEXt":
            key, _, value = data.partition(b"\0")
            text[key.decode()] = value.decode("latin-1")
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    return size[0], size[1], text, zlib.decompress(idat)


def test_each_plot_is_a_png_of_the_jsons_data(bench: dict[str, Any]) -> None:
    result, scen = bench["result"], bench["result"]["scenarios"]
    stem = bench["json"].with_suffix("")
    plotted = {}
    for kind in ("throughput", "memory", "breakdown"):
        path = Path(f"{stem}-{kind}.png")
        assert path.name in bench["md"]  # the report shows it
        width, height, text, _ = _png(path)
        assert width >= 400 and height >= 150
        # data in it: the first series' bars (matplotlib's first colour, C0) fill part of the picture
        with Image.open(path) as image:
            colours = dict((rgb, n) for n, rgb in image.convert("RGB").getcolors(maxcolors=width * height))
        assert colours.get(FIRST_SERIES, 0) > 0.01 * width * height, f"{path.name}: no bars drawn"
        plotted[kind] = json.loads(text["Description"])
    assert plotted["throughput"]["tokens_per_s"]["trainer"] == {n: r["tokens_per_s"] for n, r in scen.items()}
    assert plotted["throughput"]["tokens_per_s"]["ddp"] == {
        "multi-rank": scen["multi-rank"]["baselines"]["ddp"]["tokens_per_s"]
    }
    assert plotted["throughput"]["mfu"]["trainer"] == {n: r["mfu"] for n, r in scen.items()}
    memory = plotted["memory"]
    assert memory["peak_gib"] == [max(scen[n]["peak_memory_bytes"]) / GIB for n in memory["scenarios"]]
    assert memory["theory_gib"] == [
        result["memory_theory"][n]["model_states_bytes"] / GIB for n in memory["scenarios"]
    ]
    breakdown = plotted["breakdown"]
    assert breakdown["ms"]["fwd"] == [scen[n]["breakdown_ms"]["fwd"] for n in breakdown["scenarios"]]


def test_the_readme_gains_one_row_at_the_top_of_its_table(bench: dict[str, Any]) -> None:
    before, after = bench["readme_before"].splitlines(), bench["readme"].splitlines()
    assert len(after) == len(before) + 1
    header = after.index("| --- | --- | --- | --- |")
    new = after[header + 1]
    assert after[header + 2] == before[header + 1]  # the previous newest row comes next
    single = bench["result"]["scenarios"]["single"]
    assert bench["result"]["date"] in new and bench["json"].with_suffix(".md").name in new
    assert f"**{single['tokens_per_s']:,.1f}** tokens/s" in new


def test_the_projection_is_checked_against_the_measured_multi_rank_run(bench: dict[str, Any]) -> None:
    result, scen = bench["result"], bench["result"]["scenarios"]
    multi, single = scen["multi-rank"], scen["single"]
    link = multi["link"]  # benchmarks/linkprobe.py through the same launcher
    assert link["ranks"] == 2 and link["backend"] == "gloo" and link["busbw_bytes_per_s"] > 0
    c = result["projection_check"]["multi-rank"]
    flops_per_token = single["tflops"] * 1e12 / single["tokens_per_s"]
    tokens = result["micro_batch"] * result["model"]["block_size"]
    rank_peak = multi["peak_flops"] / 2
    assert c["compute_ms"] == pytest.approx(1000 * tokens * flops_per_token / (single["mfu"] * rank_peak))
    # fp32 gradients, ZeRO-1, 2 ranks on one node: 2(G-1)/G = 1 times the bytes, over the bus bandwidth
    assert c["comm_ms"] == pytest.approx(1000 * multi["parameters"] * 4 / link["busbw_bytes_per_s"])
    assert c["predicted_step_ms"] == pytest.approx(c["compute_ms"] + c["comm_ms"])
    assert c["step_error"] == pytest.approx(c["predicted_step_ms"] / multi["step_ms"] - 1)
    (row,) = _table(bench["md"], "The projection checked")
    _near(row[3], c["predicted_step_ms"])
    _near(row[4], multi["step_ms"])
    _near(row[5], 100 * c["step_error"])


def _project(*flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "benchmarks.project", *flags]
    return subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120)


def test_the_projection_tool_prints_a_labelled_projection_and_its_check(bench: dict[str, Any]) -> None:
    from llm.model.config import from_preset
    from llm.model.gpt import GPT

    done = _project(
        "--gpus", "1x3090", "--nodes", "4", "--gpus-per-node", "8", "--link", "100Gbit", "--mfu", "0.4",
        "--result", str(bench["json"]),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.startswith("PROJECTION, not a measurement") and "NVIDIA GeForce RTX 3090" in out
    assert "t_comm = k * Psi * b" in out  # the formula is shown
    rows = [
        line.split("|")[1:-1] for line in out.splitlines() if "× " in line and line.strip().startswith("|")
    ]
    assert [r[0].strip() for r in rows] == ["1 node(s) × 1 3090", "1 node(s) × 8 3090", "4 node(s) × 8 3090"]
    cfg = from_preset("gpt2-small", vocab_size=8192)
    compute_ms = 1000 * 8 * 1024 * GPT.flops_per_token(cfg) / (0.4 * 71e12)
    _near(rows[0][1].strip(), compute_ms)
    assert float(rows[0][2]) == 0.0  # one device: nothing to communicate
    # across nodes: the 100 Gbit/s link carries 2(n-1)/n of the fp16 gradients each step
    comm_ms = 1000 * GPT.parameter_count(cfg) * 2 * (2 * 7 / 8 / 16e9 + 2 * 3 / 4 / 12.5e9)
    _near(rows[2][2].strip(), comm_ms)
    assert "check against measured runs" in out
    error = bench["result"]["projection_check"]["multi-rank"]["step_error"]
    assert f"error {error:+.1%}" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gpus", "1x9999"], "no data-sheet peak for '9999'; known devices: NVIDIA GeForce RTX 3090"),
        (["--gpus", "3090"], "expected COUNTxDEVICE"),
        (["--link", "fast"], "expected a bandwidth such as 100Gbit"),
        (["--mfu", "40"], "expected a fraction in (0, 1]"),
    ],
)
def test_the_projection_tool_refuses_bad_input_with_exit_2(flags: list[str], message: str) -> None:
    done = _project(*flags)
    assert done.returncode == 2 and message in done.stderr, done.stderr
