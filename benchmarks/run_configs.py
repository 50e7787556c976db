"""Run the real trainer once per DeepSpeed config and tabulate what it measured.

    .venv/bin/python benchmarks/run_configs.py --config ds_configs/3090.json --config ds_configs/bf16.json \
        --max-steps 100 --name gpu_check

Each config runs through the `deepspeed` launcher (`--nproc N` ranks; default: the launcher's own
choice, i.e. every visible GPU) on the built-in corpus. From each run's metrics.jsonl it takes the
median tokens/s, TFLOP/s and MFU of the logged steps after the first 20% (warm-up), the peak memory,
the final validation loss, and the device and precision from run.json. Writes
benchmarks/results/<name>.json and .md. On a CPU it runs too (use ds_configs/cpu.json), which is how
it is tested; GPU figures come from a machine that has one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def run_one(config: Path, *, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    run_dir = workdir / config.stem
    launcher = [str(Path(sys.executable).parent / "deepspeed"), "--master_port", str(args.master_port)]
    if args.nproc:
        launcher += ["--num_gpus", str(args.nproc)]
    cmd = [
        *launcher, "launch/train.py", "--deepspeed", str(config), "--max-steps", str(args.max_steps),
        "--log-every", str(args.log_every), "--eval-every", str(args.max_steps), "--save-every", "1000000000",
        "--sample-tokens", "0", "--no-progress", "--run-dir", str(run_dir), *args.extra,
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {
            "config": str(config),
            "error": (done.stderr or done.stdout).strip().splitlines()[-1:],
            "exit": done.returncode,
        }
    record = json.loads((run_dir / "run.json").read_text())
    events = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    train = [e for e in events if e["type"] == "train" and e["step"] > 0.2 * args.max_steps]
    evals = [e for e in events if e["type"] == "eval"]
    memory = [e["memory_gb"] for e in train if e.get("memory_gb") is not None]
    return {
        "config": str(config),
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
        "peak_memory_gb": max(memory) if memory else None,
        "peak_flops_used_for_mfu": record["peak_flops"],
        "first_val_loss": evals[0]["val_loss"] if evals else None,
        "last_val_loss": evals[-1]["val_loss"] if evals else None,
        "wall_seconds": wall,
    }


def write_report(rows: list[dict[str, Any]], *, out: Path, name: str, command: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"command": command, "runs": rows}, indent=2) + "\n")
    lines = [
        f"# {name}",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} by `{command}`.",
        "",
        "| config | device | ranks | precision | ZeRO | parameters | tokens/s | TFLOP/s | MFU | peak memory "
        "(GB) |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['config']} | failed (exit {r['exit']}): {' '.join(r['error'])} | | | | | | | | |"
            )
            continue
        memory = "-" if r["peak_memory_gb"] is None else f"{r['peak_memory_gb']:.1f}"
        lines.append(
            f"| {r['config']} | {r['device']} | {r['world_size']} | {r['precision']} | {r['zero_stage']} | "
            f"{r['parameters'] / 1e6:,.1f} M | {r['tokens_per_s']:,.0f} | {r['tflops']:.2f} | "
            f"{r['mfu']:.1%} | {memory} |"
        )
    text = "\n".join([*lines, ""])
    (out / f"{name}.md").write_text(text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", action="append", type=Path, required=True, help="a DeepSpeed JSON (repeatable)"
    )
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=5)
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
        rows = [run_one(config, args=args, workdir=Path(tmp)) for config in args.config]
    print(write_report(rows, out=args.out, name=args.name, command=command))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
