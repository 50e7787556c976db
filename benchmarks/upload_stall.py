"""How long training waits for checkpoint uploads: the trainer with and without --checkpoint-uri.

    .venv/bin/python benchmarks/upload_stall.py [--rounds 2] [--steps 30] [--save-every 10] [--n-embd 512]

Each round runs the real trainer twice, one process (`python launch/train.py`, ds_configs/cpu.json
at ZeRO-0 as one rank runs it), on the same model and data: once saving locally only, once also uploading each
checkpoint to a `moto_server` started here on loopback (`--checkpoint-uri`); the order alternates
between rounds so a noisy machine slows both alike. From each run's metrics.jsonl:

- blocked by a save (those before the last step): from the train record of a save step to the next
  step's, less that step's own time (`held_after`), i.e. the
  time the loop stops for the save (local shards, hashes, manifest, and with a URI the hand-off to the
  upload thread). Goal: with a URI no more than without (the upload adds nothing to the step path).
- steps while uploading: the median step time of the `--window` steps after each save, when the upload
  runs beside training, over the same steps without a URI (2 cores: the upload competes for them).
- the wait at the end: from the last `checkpoint_saved` to `finished`, the final upload included.

Printed and written to OUT/upload_stall.{json,md}.
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
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.storage import LOCAL_KEY_ID, LOCAL_SECRET, load, moto_server  # noqa: E402
from llm.launchers import trainer_env  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DATA_CACHE = REPO / ".cache" / "bench-data"


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


@dataclass
class SavingRun:
    """What a trainer run that saved checkpoints recorded (metrics.jsonl)."""

    records: list[dict[str, Any]]
    train: dict[int, dict[str, Any]]  # train records by step
    saved: list[dict[str, Any]]  # checkpoint_saved records
    blocked_s: list[float]  # how long each save inside the run held the loop
    stdout: str


def run_with_saves(
    args: argparse.Namespace,
    run_dir: Path,
    *,
    n_embd: int,
    env: dict[str, str],
    extra: tuple[str, ...] = (),
    checkout: Path = REPO,
) -> SavingRun:
    """The real trainer of `checkout`, one process, saving every `args.save_every` of `args.steps`."""
    cmd = [
        sys.executable, str(checkout / "launch" / "train.py"), "--model", "tiny",
        "--n-layer", str(args.n_layer), "--n-embd", str(n_embd), "--n-head", "8",
        "--max-steps", str(args.steps), "--save-every", str(args.save_every), "--keep-last", "2",
        "--log-every", "1", "--eval-every", str(args.steps * 10), "--sample-tokens", "0", "--no-progress",
        "--data-cache", str(DATA_CACHE), "--run-dir", str(run_dir), *extra,
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(
            f"the trainer failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    recs = records(run_dir)
    train = {r["step"]: r for r in recs if r["type"] == "train"}
    saved = [r for r in recs if r["type"] == "run_state" and r["state"] == "checkpoint_saved"]
    # the last save follows the final evaluation: only saves inside the run measure the save alone
    saves = range(args.save_every, args.steps, args.save_every)
    blocked = [held_after(train, s) for s in saves]
    return SavingRun(records=recs, train=train, saved=saved, blocked_s=blocked, stdout=done.stdout)


def held_after(train: dict[int, dict[str, Any]], step: int) -> float:
    """How long the loop was held after `step`'s train record (by a save, with --log-every 1): the time to
    the next record less the next step's own time (its window opens once the save has returned). The same
    for a save that finishes on the step path and one that finishes in the background."""
    after = train[step + 1]
    return float(after["time"] - train[step]["time"] - after["step_time"])


def one_run(
    args: argparse.Namespace, run_dir: Path, *, uri: str | None, env: dict[str, str]
) -> dict[str, Any]:
    run = run_with_saves(
        args, run_dir, n_embd=args.n_embd, env=env, extra=("--checkpoint-uri", uri) if uri else ()
    )
    train, saved = run.train, run.saved
    finished = next(r for r in run.records if r["type"] == "run_state" and r["state"] == "finished")
    after = [
        train[s["step"] + k]["step_time"]
        for s in saved
        for k in range(1, args.window + 1)
        if s["step"] + k in train
    ]
    size = sum(p.stat().st_size for p in (run_dir / "checkpoints").rglob("*") if p.is_file())
    return {
        "blocked_s": run.blocked_s,
        "steps_after_save_s": after,
        "end_wait_s": finished["time"] - saved[-1]["time"],
        "checkpoint_mb": size / 2 / 1e6,  # keep-last 2: two checkpoints on disk
        "uploaded": run.stdout.count(" uploaded to s3://"),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "blocked_median_s": statistics.median(b for r in runs for b in r["blocked_s"]),
        "steps_after_save_median_s": statistics.median(s for r in runs for s in r["steps_after_save_s"]),
        "end_wait_median_s": statistics.median(r["end_wait_s"] for r in runs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--window", type=int, default=3, help="steps after each save compared")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    command = " ".join(
        [".venv/bin/python", "benchmarks/upload_stall.py", *(sys.argv[1:] if argv is None else argv)]
    )
    env = trainer_env(
        cpu=True, drop=("AWS_",), AWS_ACCESS_KEY_ID=LOCAL_KEY_ID,
        AWS_SECRET_ACCESS_KEY=LOCAL_SECRET, AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )  # fmt: skip
    load_before = load()
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "s3": []}
    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="llm-bench-stall-") as tmp:
        env["LLM_S3_ENDPOINT_URL"] = endpoint
        import boto3

        bucket = f"llm-bench-{uuid.uuid4().hex[:8]}"
        boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=LOCAL_KEY_ID, aws_secret_access_key=LOCAL_SECRET,
            region_name="us-east-1",
        ).create_bucket(Bucket=bucket)  # fmt: skip
        one_run(args, Path(tmp) / "warm", uri=None, env=env)  # prepares the data, warms the caches
        for round_ in range(args.rounds):
            order = ["local", "s3"] if round_ % 2 == 0 else ["s3", "local"]
            for kind in order:
                uri = f"s3://{bucket}/runs/r{round_}" if kind == "s3" else None
                result = one_run(args, Path(tmp) / f"{kind}{round_}", uri=uri, env=env)
                runs[kind].append(result)
                print(f"round {round_ + 1} {kind}: blocked by saves {result['blocked_s']} s", flush=True)
    local, s3 = summarise(runs["local"]), summarise(runs["s3"])
    saves = len(runs["s3"][0]["blocked_s"])
    result = {
        "what": "time the training loop waits for checkpoint uploads (--checkpoint-uri) against local saves",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": command,
        "settings": vars(args) | {"out": str(args.out)},
        "checkpoint_mb": runs["local"][0]["checkpoint_mb"],
        "load_before": load_before,
        "load_after": load(),
        "runs": runs,
        "local": local,
        "s3": s3,
        "blocked_ratio": s3["blocked_median_s"] / local["blocked_median_s"],
        "steps_after_save_ratio": s3["steps_after_save_median_s"] / local["steps_after_save_median_s"],
        "uploads_per_run": [r["uploaded"] for r in runs["s3"]],
        "saves_per_run": saves,
    }
    rows = [
        ("loop blocked by a save (median s)", "blocked_median_s", "blocked_ratio", 3),
        (f"step time, {args.window} steps after each save (median s)", "steps_after_save_median_s",
         "steps_after_save_ratio", 3),
        ("end of run: last save to finished (median s)", "end_wait_median_s", None, 2),
    ]  # fmt: skip
    lines = ["| | local only | with --checkpoint-uri | ratio |", "| --- | ---: | ---: | ---: |"]
    for label, key, ratio, digits in rows:
        shown = f"{result[ratio]:.2f}" if ratio else ""
        lines.append(f"| {label} | {local[key]:.{digits}f} | {s3[key]:.{digits}f} | {shown} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "upload_stall.json").write_text(json.dumps(result, indent=1))
    (args.out / "upload_stall.md").write_text(
        f"# Checkpoint upload stall ({result['date']})\n\n`{command}`\n\n"
        f"{args.n_layer} layers x {args.n_embd}, one process, ZeRO-0, fp32; a checkpoint of "
        f"{result['checkpoint_mb']:.0f} MB saved every {args.save_every} of {args.steps} steps "
        f"({saves} saves a run), uploaded to a moto_server on loopback; {args.rounds} rounds, alternating "
        f"order; load {load_before} before, {result['load_after']} after.\n\n{table}\n\n"
        "Blocked: the train record of a save step to its checkpoint_saved record. Goal: ratio <= 1 plus "
        "noise (the upload is off the step path; on 2 cores it still competes for CPU with the steps after "
        "the save, which the second row shows).\n"
    )


if __name__ == "__main__":
    main()
