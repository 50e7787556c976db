"""How long a checkpoint save blocks the training loop, against the time to write its bytes to local disk.

    .venv/bin/python benchmarks/checkpoint_stall.py [--n-embd 256,512,768] [--rounds 2] [--steps 9] \
        [--against DIR]

For each model width, the real trainer (`python launch/train.py`, one process, ds_configs/cpu.json
at ZeRO-0 as one rank runs it, 4 layers) saves every `--save-every` steps. From its metrics.jsonl:

- blocked: from the train record of a save step to its `checkpoint_saved` record, i.e. the whole save
  on the step path (DeepSpeed's shards, the RNG file, hashes, manifest, `latest`, retention);

and on the same checkpoint's files, right after the run, on the same disk:

- write: the time to write those bytes to new files (already in memory; no fsync, as DeepSpeed's
  torch.save: they land in the page cache), the floor for any save that writes them on the step path;
- durable write: the same with fsync of each file, i.e. until the bytes are on the disk;
- read back + hash: the time to read every file again and sha256 it, which the save did on the step
  path before it hashed the bytes as they were written (llm.storage.HashingWriter).

`--against DIR` also runs the trainer of another checkout (e.g. `git worktree add /tmp/before
<commit>`), interleaved with this one, and reports its blocked time beside ours: a before/after measured
in one run.

Goal (issue 9): blocked <= write, up to noise. Widths, checkouts and rounds interleave, so a noisy
machine slows all alike. Printed and written to OUT/checkpoint_stall.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.storage import load  # noqa: E402
from benchmarks.upload_stall import RESULTS, run_with_saves  # noqa: E402
from llm.storage import sha256_file  # noqa: E402


def one_run(args: argparse.Namespace, run_dir: Path, n_embd: int, checkout: Path = REPO) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    run = run_with_saves(args, run_dir, n_embd=n_embd, env=env, checkout=checkout)
    blocked, saved = run.blocked_s, run.saved
    folder = Path(saved[-1]["detail"])
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != "manifest.json")
    return {"blocked_s": blocked, **disk_times(files, run_dir / "copy"), "files": len(files)}


def disk_times(files: list[Path], scratch: Path) -> dict[str, Any]:
    """Write the files' bytes afresh (from memory) and read them back with sha256, on the same disk."""
    data = [path.read_bytes() for path in files]
    scratch.mkdir()
    start = time.perf_counter()
    for path, blob in zip(files, data, strict=True):
        (scratch / path.name).write_bytes(blob)
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    for path, blob in zip(files, data, strict=True):
        with (scratch / f"{path.name}.durable").open("wb") as out:
            out.write(blob)
            out.flush()
            os.fsync(out.fileno())
    durable_s = time.perf_counter() - start
    del data
    start = time.perf_counter()
    for path in files:
        sha256_file(path)
    return {
        "bytes": sum(p.stat().st_size for p in files),
        "write_s": write_s,
        "durable_write_s": durable_s,
        "read_back_hash_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-embd", default="256,512,768", help="model widths, comma-separated")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--save-every", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout of llm to measure beside this one")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.n_embd.split(",")]
    command = " ".join(
        [".venv/bin/python", "benchmarks/checkpoint_stall.py", *(sys.argv[1:] if argv is None else argv)]
    )
    load_before = load()
    checkouts = {"this": REPO, **({"against": args.against.resolve()} if args.against else {})}
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {c: {w: [] for w in widths} for c in checkouts}
    with tempfile.TemporaryDirectory(prefix="llm-bench-ckpt-", dir=REPO / ".cache") as tmp:
        for label, checkout in checkouts.items():  # prepares the data, warms the caches
            one_run(args, Path(tmp) / f"warm-{label}", widths[0], checkout)
        order = [(label, width) for width in widths for label in checkouts]
        for round_ in range(args.rounds):
            for label, width in order if round_ % 2 == 0 else order[::-1]:
                result = one_run(args, Path(tmp) / f"{label}-w{width}-r{round_}", width, checkouts[label])
                runs[label][width].append(result)
                print(
                    f"round {round_ + 1} {label} n_embd {width}: blocked {result['blocked_s']} s, write "
                    f"{result['write_s']:.3f} s, durable {result['durable_write_s']:.3f} s, read back + hash "
                    f"{result['read_back_hash_s']:.3f} s",
                    flush=True,
                )
    rows = []
    for width in widths:
        ours = runs["this"][width]

        def median(key: str, of: list[dict[str, Any]] = ours) -> float:
            return statistics.median(r[key] for r in of)

        blocked = statistics.median(b for r in ours for b in r["blocked_s"])
        row = {
            "n_embd": width, "checkpoint_mb": ours[0]["bytes"] / 1e6, "blocked_median_s": blocked,
            "write_median_s": median("write_s"), "durable_write_median_s": median("durable_write_s"),
            "read_back_hash_median_s": median("read_back_hash_s"),
        }  # fmt: skip
        row["blocked_over_write"] = blocked / row["write_median_s"]
        row["blocked_over_durable_write"] = blocked / row["durable_write_median_s"]
        if "against" in runs:
            before = statistics.median(b for r in runs["against"][width] for b in r["blocked_s"])
            row["against_blocked_median_s"] = before
            row["blocked_over_against"] = blocked / before
        rows.append(row)
    head = "| n_embd | checkpoint MB | blocked (s) | write (s) | durable write (s) | blocked ÷ write | "
    head += "blocked ÷ durable write | read back + hash (s) |"
    if args.against:
        head += " blocked, --against (s) | ours ÷ --against |"
    lines = [head, "|" + " ---: |" * (head.count("|") - 1)]
    for row in rows:
        line = (
            f"| {row['n_embd']} | {row['checkpoint_mb']:.0f} | {row['blocked_median_s']:.3f} | "
            f"{row['write_median_s']:.3f} | {row['durable_write_median_s']:.3f} | "
            f"{row['blocked_over_write']:.2f} | {row['blocked_over_durable_write']:.2f} | "
            f"{row['read_back_hash_median_s']:.3f} |"
        )
        if args.against:
            line += f" {row['against_blocked_median_s']:.3f} | {row['blocked_over_against']:.2f} |"
        lines.append(line)
    table = "\n".join(lines)
    print(table)
    result = {
        "what": "time a checkpoint save blocks the loop, against writing the same bytes to local disk",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": command,
        "settings": vars(args) | {"out": str(args.out), "against": str(args.against)},
        "load_before": load_before,
        "load_after": load(),
        "rows": rows,
        "runs": {label: {str(w): r for w, r in by_width.items()} for label, by_width in runs.items()},
    }
    against = (
        f" `--against` ran the checkout {args.against} interleaved with this one." if args.against else ""
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "checkpoint_stall.json").write_text(json.dumps(result, indent=1))
    (args.out / "checkpoint_stall.md").write_text(
        f"# Checkpoint stall ({result['date']})\n\n`{command}`\n\n"
        f"{args.n_layer} layers, one process, ZeRO-0, fp32; a save every {args.save_every} of {args.steps} "
        f"steps; {args.rounds} rounds, interleaved; load {load_before} before, {result['load_after']} "
        f"after.{against}\n\n{table}\n\n"
        "Blocked: the train record of a save step to its checkpoint_saved record (the whole save on the step "
        "path). Write: the same files' bytes written afresh from memory to the same disk (into the page "
        "cache); durable write: the same with fsync. Read back + hash: what the save did on the step path "
        "before it hashed the bytes as they were written. Goal: blocked <= write, up to noise.\n"
    )


if __name__ == "__main__":
    main()
