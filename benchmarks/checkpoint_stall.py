"""How long a checkpoint save blocks the training loop, against the time to write its bytes to local disk.

    .venv/bin/python benchmarks/checkpoint_stall.py [--n-embd 256,512,768] [--rounds 2] [--steps 9] \
        [--modes sync,async] [--against DIR]

For each model width, the real trainer (`python launch/train.py`, one process, ds_configs/cpu.json
at ZeRO-0 as one rank runs it, 4 layers) saves every `--save-every` steps, once per mode: `sync` (the
whole save on the step path) and `async` (`--checkpoint-async`: the loop waits for a copy of the states;
writing, hashing and the commit run beside the next steps). From its metrics.jsonl (`--log-every 1`):

- blocked: from the train record of a save step to the next step's, less that step's own time (whose
  window opens once the save has returned): how long the loop was held by the save;
- loop: from the first train record to the last (every step and every save inside the run), so a
  background save that slows the steps beside it shows there;

and on the same checkpoint's files, right after the run, on the same disk:

- write: the time to write those bytes to new files (already in memory; no fsync, as DeepSpeed's
  torch.save: they land in the page cache), the floor for any save that writes them on the step path;
- durable write: the same with fsync of each file, i.e. until the bytes are on the disk;
- read back + hash: the time to read every file again and sha256 it, which the save did on the step
  path before it hashed the bytes as they were written (llm.storage.HashingWriter).

`--against DIR` also runs the trainer of another checkout (e.g. `git worktree add /tmp/before
<commit>`, synchronous saves), interleaved with the rest, and reports its blocked time beside ours.

Goal (issue 9): blocked <= write, up to noise. Widths, modes and rounds interleave, so a noisy machine
slows all alike. Printed and written to OUT/checkpoint_stall.{json,md}.
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
from llm.launchers import trainer_env  # noqa: E402
from llm.storage import sha256_file  # noqa: E402

# what each mode adds to the trainer's command line; `against` runs another checkout's trainer as it is
MODES: dict[str, tuple[str, ...]] = {"sync": (), "async": ("--checkpoint-async",), "against": ()}


def one_run(
    args: argparse.Namespace, run_dir: Path, n_embd: int, mode: str, checkout: Path = REPO
) -> dict[str, Any]:
    env = trainer_env(cpu=True)
    run = run_with_saves(args, run_dir, n_embd=n_embd, env=env, extra=MODES[mode], checkout=checkout)
    folder = Path(run.saved[-1]["detail"])
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != "manifest.json")
    loop_s = run.train[max(run.train)]["time"] - run.train[min(run.train)]["time"]
    settings = json.loads((run_dir / "run.json").read_text())["settings"]  # as the trainer took them
    return {
        "blocked_s": run.blocked_s, "loop_s": loop_s, **disk_times(files, run_dir / "copy"),
        "files": len(files), "checkpoint_async": settings.get("checkpoint_async", False),
    }  # fmt: skip


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
    parser.add_argument(
        "--modes", default="sync,async", help="sync, async (--checkpoint-async), comma-separated"
    )
    parser.add_argument("--against", type=Path, help="another checkout of llm to measure beside this one")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.n_embd.split(",")]
    modes = args.modes.split(",")
    if set(modes) - {"sync", "async"}:
        parser.error(f"--modes {args.modes}: give sync, async or both, comma-separated")
    command = " ".join(
        [".venv/bin/python", "benchmarks/checkpoint_stall.py", *(sys.argv[1:] if argv is None else argv)]
    )
    load_before = load()
    checkouts = {m: REPO for m in modes} | ({"against": args.against.resolve()} if args.against else {})
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {c: {w: [] for w in widths} for c in checkouts}
    with tempfile.TemporaryDirectory(prefix="llm-bench-ckpt-", dir=REPO / ".cache") as tmp:
        warm = {checkout: label for label, checkout in checkouts.items()}  # one run per checkout
        for checkout, label in warm.items():  # prepares the data, warms the caches
            one_run(args, Path(tmp) / f"warm-{label}", widths[0], label, checkout)
        order = [(label, width) for width in widths for label in checkouts]
        for round_ in range(args.rounds):
            for label, width in order if round_ % 2 == 0 else order[::-1]:
                run_dir = Path(tmp) / f"{label}-w{width}-r{round_}"
                result = one_run(args, run_dir, width, label, checkouts[label])
                runs[label][width].append(result)
                print(
                    f"round {round_ + 1} {label} n_embd {width}: blocked {result['blocked_s']} s, loop "
                    f"{result['loop_s']:.3f} s, write {result['write_s']:.3f} s, durable "
                    f"{result['durable_write_s']:.3f} s, read back + hash {result['read_back_hash_s']:.3f} s",
                    flush=True,
                )
    rows = [_row(width, {label: by_width[width] for label, by_width in runs.items()}) for width in widths]
    table = _table(rows, list(checkouts))
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
        f" `against` ran the checkout {args.against} (synchronous saves), interleaved with the rest."
        if args.against
        else ""
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "checkpoint_stall.json").write_text(json.dumps(result, indent=1))
    (args.out / "checkpoint_stall.md").write_text(
        f"# Checkpoint stall ({result['date']})\n\n`{command}`\n\n"
        f"{args.n_layer} layers, one process, ZeRO-0, fp32; a save every {args.save_every} of {args.steps} "
        f"steps; {args.rounds} rounds, interleaved; load {load_before} before, {result['load_after']} "
        f"after.{against}\n\n{table}\n\n"
        "Blocked: from a save step's train record to the next step's, less that step's own time (how long "
        "the save held the loop); sync writes, hashes and commits on the step path, async "
        "(--checkpoint-async) copies the states into host buffers and finishes beside the next steps. "
        "Loop: first to last train record, every step and save inside the run. Write: the first mode's "
        "files' bytes written afresh from memory to the same disk (into the page cache); durable write: the "
        "same with fsync. Read back + hash: what the save did on the step path before it hashed the bytes "
        "as they were written. Goal: blocked <= write, up to noise.\n"
    )


def _row(width: int, by_mode: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One width's medians: each mode's blocked time and loop; the disk times of the first mode's files."""
    first = next(iter(by_mode.values()))

    def median(key: str) -> float:
        return statistics.median(r[key] for r in first)

    row: dict[str, Any] = {
        "n_embd": width, "checkpoint_mb": first[0]["bytes"] / 1e6, "write_median_s": median("write_s"),
        "durable_write_median_s": median("durable_write_s"),
        "read_back_hash_median_s": median("read_back_hash_s"),
    }  # fmt: skip
    for mode, results in by_mode.items():
        blocked = statistics.median(b for r in results for b in r["blocked_s"])
        row[f"{mode}_blocked_median_s"] = blocked
        row[f"{mode}_loop_median_s"] = statistics.median(r["loop_s"] for r in results)
        row[f"{mode}_blocked_over_write"] = blocked / row["write_median_s"]
        row[f"{mode}_blocked_over_durable_write"] = blocked / row["durable_write_median_s"]
    if "sync" in by_mode and "async" in by_mode:
        row["async_loop_over_sync"] = row["async_loop_median_s"] / row["sync_loop_median_s"]
    return row


def _table(rows: list[dict[str, Any]], modes: list[str]) -> str:
    head = "| n_embd | checkpoint MB | write (s) | durable write (s) | read back + hash (s) |"
    for mode in modes:
        head += f" {mode}: blocked (s) | ÷ write | ÷ durable write | loop (s) |"
    both = "sync" in modes and "async" in modes
    if both:
        head += " loop, async ÷ sync |"
    lines = [head, "|" + " ---: |" * (head.count("|") - 1)]
    for row in rows:
        line = (
            f"| {row['n_embd']} | {row['checkpoint_mb']:.0f} | {row['write_median_s']:.3f} | "
            f"{row['durable_write_median_s']:.3f} | {row['read_back_hash_median_s']:.3f} |"
        )
        for mode in modes:
            line += (
                f" {row[f'{mode}_blocked_median_s']:.3f} | {row[f'{mode}_blocked_over_write']:.2f} | "
                f"{row[f'{mode}_blocked_over_durable_write']:.2f} | {row[f'{mode}_loop_median_s']:.2f} |"
            )
        if both:
            line += f" {row['async_loop_over_sync']:.3f} |"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
