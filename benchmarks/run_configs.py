"""Run the real trainer once per DeepSpeed config (and model preset) and tabulate what it measured.

    .venv/bin/python benchmarks/run_configs.py --config ds_configs/3090.json --config ds_configs/bf16.json \
        --model 3090 --model 1b-24gb-tight --memory-cap-gib 22.5 --max-steps 50 --name gpu_check

Each config runs, with each `--model` preset (default: the trainer's own choice), through the
`deepspeed` launcher (`--nproc N` ranks; default: the launcher's own choice, i.e. every visible GPU)
on the built-in corpus. From each run's metrics.jsonl it takes the median tokens/s, TFLOP/s and MFU
of the logged steps after the first 20% (warm-up), the final validation loss, and the device and
precision from run.json. On a GPU every rank also reports its allocator's peak memory, allocated and
reserved (llm/telemetry/gpu_memory.py, through GPU_MEMORY_REPORT_DIR), even when the run fails for
lack of memory; `--memory-cap-gib` caps every rank's allocator as a smaller card would
(GPU_MEMORY_CAP_GIB), and a run fails unless its peak stays under the cap. Writes
benchmarks/results/<name>.json and .md. On a CPU it runs too (use ds_configs/cpu.json), which is how
it is tested; GPU figures come from a machine that has one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def run_one(config: Path, model: str | None, *, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    run_dir = workdir / (config.stem if model is None else f"{config.stem}-{model}")
    reports = run_dir.with_name(run_dir.name + "-memory")
    env = {**os.environ, "GPU_MEMORY_REPORT_DIR": str(reports)}
    if args.memory_cap_gib is not None:
        env["GPU_MEMORY_CAP_GIB"] = str(args.memory_cap_gib)
    launcher = [str(Path(sys.executable).parent / "deepspeed"), "--master_port", str(args.master_port)]
    if args.nproc:
        launcher += ["--num_gpus", str(args.nproc)]
    cmd = [
        *launcher, "launch/train.py", "--deepspeed", str(config), "--max-steps", str(args.max_steps),
        "--log-every", str(args.log_every), "--eval-every", str(args.max_steps), "--save-every", "1000000000",
        "--sample-tokens", "0", "--no-progress", "--run-dir", str(run_dir),
        *(["--model", model] if model else []), *args.extra,
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    memory = _memory(reports, cap_gib=args.memory_cap_gib)
    if done.returncode != 0:
        return {
            "config": str(config),
            "model_preset": model,
            "error": (done.stderr or done.stdout).strip().splitlines()[-1:],
            "exit": done.returncode,
            **memory,
        }
    record = json.loads((run_dir / "run.json").read_text())
    events = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    train = [e for e in events if e["type"] == "train" and e["step"] > 0.2 * args.max_steps]
    evals = [e for e in events if e["type"] == "eval"]
    row = {
        "config": str(config),
        "model_preset": model,
        "device": ", ".join(record["hardware"]["gpus"]) or f"CPU ({record['hardware']['cpu_count']} cores)",
        "world_size": record["hardware"]["world_size"],
        "precision": record["precision"],
        "zero_stage": record["zero_stage"],
        "model": record["settings"]["model"],
        "parameters": record["parameters"],
        "steps": args.max_steps,
        "tokens_per_s": statistics.median(e["tokens_per_s"] for e in train),
        "tflops": statistics.median(e["tflops"] for e in train),
        "mfu": statistics.median(e["mfu"] for e in train),
        "peak_flops_used_for_mfu": record["peak_flops"],
        "first_val_loss": evals[0]["val_loss"] if evals else None,
        "last_val_loss": evals[-1]["val_loss"] if evals else None,
        "wall_seconds": wall,
        **memory,
    }
    if memory["over_cap"]:
        row.update(error=[f"peak reserved memory above the {args.memory_cap_gib} GiB cap"], exit=0)
    return row


def _memory(reports: Path, *, cap_gib: float | None) -> dict[str, Any]:
    """The highest allocator peaks over the ranks' reports (None where no rank wrote one: no GPU)."""
    ranks = [json.loads(p.read_text()) for p in sorted(reports.glob("rank*.json"))]
    allocated = max((r["max_allocated_gib"] for r in ranks), default=None)
    reserved = max((r["max_reserved_gib"] for r in ranks), default=None)
    return {
        "memory_cap_gib": cap_gib,
        "gpu_memory_gib": ranks[0]["total_gib"] if ranks else None,
        "peak_allocated_gib": allocated,
        "peak_reserved_gib": reserved,
        # the cap binds the allocator; a peak above it would mean the cap was not applied
        "over_cap": bool(cap_gib is not None and reserved is not None and reserved > cap_gib),
    }


def write_report(rows: list[dict[str, Any]], *, out: Path, name: str, command: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"command": command, "runs": rows}, indent=2) + "\n")
    lines = [
        f"# {name}",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} by `{command}`.",
        "",
        "| config | device | preset | ranks | precision | ZeRO | parameters | tokens/s | TFLOP/s | MFU | "
        "peak allocated / reserved (GiB) | cap (GiB) |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        memory = _gib(r["peak_allocated_gib"]) + " / " + _gib(r["peak_reserved_gib"])
        cap = _gib(r["memory_cap_gib"])
        preset = r["model_preset"] or "auto"
        if "tokens_per_s" not in r:
            lines.append(
                f"| {r['config']} | failed (exit {r['exit']}): {' '.join(r['error'])} | {preset} "
                f"| | | | | | | | {memory} | {cap} |"
            )
            continue
        flag = f" ({' '.join(r['error'])})" if "error" in r else ""
        lines.append(
            f"| {r['config']} | {r['device']}{flag} | {preset} | {r['world_size']} | {r['precision']} | "
            f"{r['zero_stage']} | {r['parameters'] / 1e6:,.1f} M | {r['tokens_per_s']:,.0f} | "
            f"{r['tflops']:.2f} | {r['mfu']:.1%} | {memory} | {cap} |"
        )
    text = "\n".join([*lines, ""])
    (out / f"{name}.md").write_text(text)
    return text


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", action="append", type=Path, required=True, help="a DeepSpeed JSON (repeatable)"
    )
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument(
        "--model", action="append", default=None, help="a model preset (repeatable; default: the trainer's)"
    )
    parser.add_argument(
        "--memory-cap-gib",
        type=float,
        default=None,
        help="cap every rank's GPU allocator at this many GiB, as on a smaller card (GPU_MEMORY_CAP_GIB)",
    )
    parser.add_argument("--nproc", type=int, default=None, help="ranks (default: every visible GPU)")
    parser.add_argument("--master-port", type=int, default=29533)
    parser.add_argument("--name", default="run_configs", help="report name")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="report folder (default: benchmarks/results)"
    )
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more flags for launch/train.py")
    args = parser.parse_args()
    args.extra = [a for a in args.extra if a != "--"]
    command = "benchmarks/run_configs.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            run_one(config, model, args=args, workdir=Path(tmp))
            for config in args.config
            for model in args.model or [None]
        ]
    print(write_report(rows, out=args.out, name=args.name, command=command))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
