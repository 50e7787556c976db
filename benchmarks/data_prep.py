"""Data preparation vs the tokenizer library alone: encode MB/s, their ratio, and peak memory.

    .venv/bin/python benchmarks/data_prep.py [--rounds 3] [--repeat 4] [--vocab-size 8192]

The corpus is the built-in one (the interpreter's standard library), copied into a folder, and the
same files copied `--repeat` times into a second folder. Every measurement runs in a fresh process, so
its peak RSS (`ru_maxrss`) is its own:

- raw: `encode_batch_fast` of the `tokenizers` library over every document at once, all text in
  memory (the library's fastest call; the text is read before the clock starts);
- ours: `prepare_dataset` from scratch; its encode phase (read, encode, write both splits) is timed
  inside it and compared with raw; the tokenizer training and the whole preparation are reported too.

Raw and ours alternate for `--rounds` rounds (this machine is shared and noisy); each figure is the
median over rounds. Then `prepare_dataset` runs once on the repeated corpus: its peak RSS should stay
near the 1x figure, not grow with the corpus. Writes benchmarks/results/data_prep.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llm.config import DataConfig  # noqa: E402
from llm.data.corpus import open_source  # noqa: E402
from llm.data.prepare import prepare_dataset  # noqa: E402
from llm.data.tokenizer import Tokenizer  # noqa: E402

GOAL = 0.9  # our encode phase at least this share of the library's raw encode speed
RESULTS = REPO / "benchmarks" / "results"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def raw_worker(data: str, tokenizer_path: Path) -> dict[str, Any]:
    """The library alone: encode every document in one call, all text already in memory."""
    source = open_source(data)
    docs = source.documents()
    texts = [source.read_text(doc) for doc in docs]
    inner = Tokenizer.from_file(tokenizer_path)._inner
    started, cpu_started = time.perf_counter(), time.process_time()
    inner.encode_batch_fast(texts, add_special_tokens=False)
    return {
        "bytes": sum(d.size for d in docs),
        "seconds": {"encoding": time.perf_counter() - started},
        "cpu_seconds": {"encoding": time.process_time() - cpu_started},  # every thread of the process
        "peak_rss_mb": peak_rss_mb(),
    }


def prepare_worker(data: str, cache: Path, vocab_size: int) -> dict[str, Any]:
    rss_after_imports = peak_rss_mb()
    path = prepare_dataset(DataConfig(data=data, data_cache=cache, vocab_size=vocab_size), progress=False)
    meta = json.loads((path / "meta.json").read_text())
    return {
        "path": str(path),
        "bytes": sum(f["bytes"] for f in meta["files"]),
        "tokenizer_train_bytes": meta["tokenizer_train_bytes"],
        "seconds": meta["prepare_seconds"],
        "cpu_seconds": meta["prepare_cpu_seconds"],
        "tokens": {split: counts["tokens"] for split, counts in meta["splits"].items()},
        "rss_after_imports_mb": rss_after_imports,
        "peak_rss_mb": peak_rss_mb(),
    }


def in_fresh_process(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"worker {args[0]} failed:\n{out.stderr}")
    return dict(json.loads(out.stdout.splitlines()[-1]))


def copy_corpus(dest: Path, *, repeat: int) -> Path:
    """The built-in corpus's files, `repeat` times, under dest/copy<k>/."""
    source = open_source(None)
    for k in range(repeat):
        for doc in source.documents():
            target = dest / f"copy{k}" / doc.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(doc.path, target)
    return dest


def mb_per_s(num_bytes: int, seconds: float) -> float:
    return num_bytes / 1e6 / seconds


def measure(rounds: int, repeat: int, vocab_size: int, work: Path) -> dict[str, Any]:
    corpus = str(copy_corpus(work / "x1", repeat=1))
    # a first preparation gives raw its tokenizer (the same BPE ours trains) and warms the page cache
    first = in_fresh_process("prepare", corpus, str(work / "cache-0"), str(vocab_size))
    tokenizer = str(Path(first["path"]) / "tokenizer.json")
    raws: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    for r in range(rounds):
        pair = [
            ("raw", corpus, tokenizer),
            ("prepare", corpus, str(work / f"cache-{r + 1}"), str(vocab_size)),
        ]
        for args in pair if r % 2 == 0 else reversed(pair):  # alternate who goes first
            result = in_fresh_process(*args)
            (raws if args[0] == "raw" else ours).append(result)
            print(f"round {r + 1}: {args[0]}: {json.dumps(result)}", flush=True)

    def encode_mbs(runs: list[dict[str, Any]], clock: str) -> float:
        return statistics.median(mb_per_s(x["bytes"], x[clock]["encoding"]) for x in runs)

    def paired_ratio(clock: str) -> float:
        """Median over rounds of ours ÷ raw in MB/s (raw's seconds ÷ ours: the same bytes), pair by pair."""
        return statistics.median(
            raw[clock]["encoding"] / our[clock]["encoding"] for raw, our in zip(raws, ours, strict=True)
        )

    big = in_fresh_process("prepare", str(copy_corpus(work / f"x{repeat}", repeat=repeat)),
                           str(work / "cache-big"), str(vocab_size))  # fmt: skip
    print(f"{repeat}x corpus: prepare: {json.dumps(big)}", flush=True)
    return {
        "corpus_bytes": first["bytes"],
        "vocab_size": vocab_size,
        "rounds": rounds,
        "raw_encode_mb_per_s": encode_mbs(raws, "seconds"),
        "ours_encode_mb_per_s": encode_mbs(ours, "seconds"),
        "ratio": paired_ratio("seconds"),
        "goal": GOAL,
        # MB per CPU-second (all threads): what the work costs, whatever else runs on the machine
        "raw_encode_mb_per_cpu_s": encode_mbs(raws, "cpu_seconds"),
        "ours_encode_mb_per_cpu_s": encode_mbs(ours, "cpu_seconds"),
        "cpu_ratio": paired_ratio("cpu_seconds"),
        "tokenizer_seconds": statistics.median(x["seconds"]["tokenizer"] for x in ours),
        "tokenizer_cpu_seconds": statistics.median(x["cpu_seconds"]["tokenizer"] for x in ours),
        "hashing_seconds": statistics.median(x["seconds"]["hashing"] for x in ours),
        "prepare_seconds": statistics.median(x["seconds"]["total"] for x in ours),
        "prepare_mb_per_s": statistics.median(mb_per_s(x["bytes"], x["seconds"]["total"]) for x in ours),
        "peak_rss_mb": {
            "raw_1x": statistics.median(x["peak_rss_mb"] for x in raws),
            "prepare_1x": statistics.median(x["peak_rss_mb"] for x in ours),
            f"prepare_{repeat}x": big["peak_rss_mb"],
            "after_imports": statistics.median(x["rss_after_imports_mb"] for x in ours),
        },
        "repeat": repeat,
        "repeated_bytes": big["bytes"],
        "repeated_seconds": big["seconds"],
        "runs": {"raw": raws, "prepare": ours, f"prepare_{repeat}x": big},
    }


def report(result: dict[str, Any], command: str) -> str:
    rss, repeat, mb = result["peak_rss_mb"], result["repeat"], result["corpus_bytes"] / 1e6
    big, big_s = rss[f"prepare_{repeat}x"], result["repeated_seconds"]
    raw_mbs, ours_mbs = result["raw_encode_mb_per_s"], result["ours_encode_mb_per_s"]
    raw_cpu, ours_cpu = result["raw_encode_mb_per_cpu_s"], result["ours_encode_mb_per_cpu_s"]
    lines = [
        "# Data preparation vs the tokenizer library alone",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} by `{command}` on {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {result['load_average']:.1f} at the end (a shared machine);",
        f"the built-in corpus ({mb:.1f} MB, Python {platform.python_version()} standard library) as a "
        f"folder, BPE vocabulary {result['vocab_size']}, median of {result['rounds']} interleaved rounds. "
        "CPU seconds count every thread of the process, so MB per CPU-second does not depend on what else "
        "runs.",
        "",
        "| | MB/s | seconds | MB per CPU-second | CPU seconds |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| raw: `tokenizers` `encode_batch_fast`, all text at once | {raw_mbs:.2f} | {mb / raw_mbs:.1f} "
        f"| {raw_cpu:.2f} | {mb / raw_cpu:.1f} |",
        f"| ours: encode phase of `prepare_dataset` (read, encode, write) | {ours_mbs:.2f} | "
        f"{mb / ours_mbs:.1f} | {ours_cpu:.2f} | {mb / ours_cpu:.1f} |",
        f"| ours: tokenizer training (vocab {result['vocab_size']}, train split) | | "
        f"{result['tokenizer_seconds']:.1f} | | {result['tokenizer_cpu_seconds']:.1f} |",
        f"| ours: whole preparation (hashing, tokenizer, encoding) | {result['prepare_mb_per_s']:.2f} | "
        f"{result['prepare_seconds']:.1f} | | |",
        "",
        f"Encode ratio, ours ÷ raw (median over rounds of each back-to-back pair): **{result['ratio']:.2f}** "
        f"in MB/s (goal ≥ {result['goal']}), {result['cpu_ratio']:.2f} in MB per CPU-second.",
        "",
        "Peak memory (`ru_maxrss` of each measuring process):",
        "",
        "| | peak RSS MB |",
        "| --- | ---: |",
        f"| after imports, before preparing | {rss['after_imports']:.0f} |",
        f"| raw encode, 1x (all text and encodings in memory) | {rss['raw_1x']:.0f} |",
        f"| `prepare_dataset`, 1x ({mb:.1f} MB) | {rss['prepare_1x']:.0f} |",
        f"| `prepare_dataset`, {repeat}x ({result['repeated_bytes'] / 1e6:.1f} MB) | {big:.0f} |",
        "",
        f"{repeat}x the corpus: {big / rss['prepare_1x']:.2f}x the peak memory "
        f"(prepared in {big_s['total']:.1f} s: tokenizer {big_s['tokenizer']:.1f} s, "
        f"encoding {big_s['encoding']:.1f} s).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved raw/ours pairs (default 3)")
    parser.add_argument("--repeat", type=int, default=4, help="copies of the corpus for the memory check")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary (default 8192)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for data_prep.{json,md}")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "raw":
            result = raw_worker(rest[0], Path(rest[1]))
        else:
            result = prepare_worker(rest[0], Path(rest[1]), int(rest[2]))
        print(json.dumps(result))
        return
    command = "benchmarks/data_prep.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="data-prep-") as work:
        result = measure(args.rounds, args.repeat, args.vocab_size, Path(work))
    result["load_average"] = os.getloadavg()[0]
    result["command"] = command.strip()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "data_prep.json").write_text(json.dumps(result, indent=2) + "\n")
    text = report(result, result["command"])
    (args.out / "data_prep.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
