"""Per-step costs inside the DeepSpeed engine on one rank, one engine per ZeRO stage, A/B in one process.

    .venv/bin/python benchmarks/engine_ab.py [--steps 12] [--stages 0,1,2] [--n-layer 4] [--n-embd 256]
        [--block-size 256] [--micro-batch 8]

Engines built by llm.train.engine.build_engine from ds_configs/cpu.json (its fused torch AdamW, fp32)
with `zero_optimization.stage` replaced (and kept: the trainer itself runs a one-rank ZeRO 1 or 2 at
ZeRO-0, llm.ds_config.one_rank_stage, because of what this script measures), on the same model
(`--n-layer` x `--n-embd`, heads of 64) and the same batches. Their steps alternate, so whatever else
runs on the machine hits each alike. Per step it times forward, backward (at ZeRO 1-2 with the gradient
reduction DeepSpeed's hooks run), at ZeRO-0 one extra `engine.allreduce_gradients()` (the all-reduce of
every gradient with itself that DeepSpeed would run on one rank, which build_engine turns off), and
`engine.step`. Prints medians in ms and each stage's step ÷ ZeRO-0's; writes nothing. On one rank ZeRO
partitions nothing, so any difference is overhead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path, whatever this machine has
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from llm.ds_config import load_ds_config  # noqa: E402
from llm.model.config import from_preset  # noqa: E402
from llm.model.gpt import GPT  # noqa: E402
from llm.train.engine import build_engine, init_distributed  # noqa: E402

VOCAB = 8192


def engine(stage: int, shape: dict[str, int], micro_batch: int, workdir: Path) -> Any:
    config = json.loads((REPO / "ds_configs" / "cpu.json").read_text())
    config["zero_optimization"] = {"stage": stage}
    config["train_micro_batch_size_per_gpu"] = micro_batch
    path = workdir / f"zero{stage}.json"
    path.write_text(json.dumps(config))
    settings = load_ds_config(path, world_size=1, cuda_available=False, max_steps=1000)
    settings.config["zero_optimization"]["stage"] = stage  # the JSON's, not the trainer's one-rank choice
    torch.manual_seed(0)
    return build_engine(GPT(from_preset("tiny", **shape, vocab_size=VOCAB)), settings)


def measure(args: argparse.Namespace, workdir: Path) -> dict[int, dict[str, float]]:
    shape = {"n_layer": args.n_layer, "n_head": args.n_embd // 64, "n_embd": args.n_embd}
    shape["block_size"] = args.block_size
    engines = {stage: engine(stage, shape, args.micro_batch, workdir) for stage in args.stages}
    data = torch.Generator().manual_seed(0)
    times: dict[int, dict[str, list[float]]] = {stage: {} for stage in engines}
    for i in range(args.steps + 2):  # two warm-up steps
        x, y = torch.randint(0, VOCAB, (2, args.micro_batch, args.block_size), generator=data)
        for stage in list(engines) if i % 2 else list(engines)[::-1]:
            model = engines[stage]
            start = time.perf_counter()
            _, loss = model(x, y)
            forward_done = time.perf_counter()
            model.backward(loss)
            backward_done = time.perf_counter()
            if stage == 0:
                model.allreduce_gradients()  # the work build_engine spares a one-rank ZeRO-0 run
            reduced = time.perf_counter()
            model.step()
            loss.item()
            done = time.perf_counter()
            if i >= 2:
                parts = {
                    "forward": forward_done - start, "backward": backward_done - forward_done,
                    "engine.step": done - reduced, "step": done - start - (reduced - backward_done),
                }  # fmt: skip
                if stage == 0:
                    parts["self all-reduce (skipped)"] = reduced - backward_done
                for key, seconds in parts.items():
                    times[stage].setdefault(key, []).append(seconds)
    return {stage: {k: statistics.median(v) for k, v in parts.items()} for stage, parts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12, help="timed steps per engine, after 2 warm-up")
    parser.add_argument("--stages", type=lambda v: [int(s) for s in v.split(",")], default=[0, 1, 2])
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    args = parser.parse_args()
    init_distributed(timeout_s=300)
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)  # not its LR-before-first-step warning
    print(f"load average before {os.getloadavg()}, {torch.get_num_threads()} threads", flush=True)
    print(
        f"{args.n_layer} layers x {args.n_embd}, T {args.block_size}, micro-batch {args.micro_batch}, fp32, "
        f"median of {args.steps} alternating steps per engine, in ms:",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        medians = measure(args, Path(tmp))
    base = medians[min(medians)]["step"]
    for stage, parts in medians.items():
        shown = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in parts.items())
        print(f"ZeRO-{stage}: {shown}; step / ZeRO-{min(medians)}'s {parts['step'] / base:.3f}", flush=True)
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
