"""Per-step costs inside the DeepSpeed engine on one rank, measured A/B in one process.

    .venv/bin/python benchmarks/engine_ab.py [--steps 12]

Two engines per ZeRO stage, built by llm.train.engine.build_engine from ds_configs/cpu.json at the
benchmark's shape (4 layers x 256, T = 256, micro-batch 8, fp32): one with the JSON's torch AdamW
(a for-loop over parameters), one with `"fused": true` added to `optimizer.params`. Their steps
alternate, so whatever else runs on the machine hits both alike. Per step it times forward +
backward, `engine.step`, and at ZeRO-0 one extra `engine.allreduce_gradients()`: the all-reduce of
every gradient with itself that DeepSpeed runs on one rank unless build_engine turns it off.
Prints medians in ms; writes nothing.
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

SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 256}


def engines(stage: int, workdir: Path) -> dict[str, Any]:
    out = {}
    for fused in (False, True):
        config = json.loads((REPO / "ds_configs" / "cpu.json").read_text())
        config["zero_optimization"] = {"stage": stage}
        if fused:
            config["optimizer"]["params"]["fused"] = True
        path = workdir / f"zero{stage}-{'fused' if fused else 'loop'}.json"
        path.write_text(json.dumps(config))
        settings = load_ds_config(path, world_size=1, cuda_available=False, max_steps=1000)
        torch.manual_seed(0)
        model = GPT(from_preset("tiny", **SHAPE, vocab_size=8192))
        out["fused AdamW" if fused else "for-loop AdamW"] = build_engine(model, settings)
    return out


def measure(stage: int, steps: int, workdir: Path) -> None:
    pair = engines(stage, workdir)
    data = torch.Generator().manual_seed(0)
    times: dict[str, dict[str, list[float]]] = {k: {} for k in pair}
    for i in range(steps + 2):  # two warm-up steps
        for name in list(pair) if i % 2 else list(pair)[::-1]:
            engine = pair[name]
            x, y = torch.randint(0, 8192, (2, 8, SHAPE["block_size"]), generator=data)
            start = time.perf_counter()
            _, loss = engine(x, y)
            engine.backward(loss)
            backward_done = time.perf_counter()
            if stage == 0:
                engine.allreduce_gradients()  # the work build_engine spares a one-rank ZeRO-0 run
            reduced = time.perf_counter()
            engine.step()
            loss.item()
            done = time.perf_counter()
            if i >= 2:
                parts = {"forward + backward": backward_done - start, "engine.step": done - reduced}
                if stage == 0:
                    parts["self all-reduce"] = reduced - backward_done
                for key, seconds in parts.items():
                    times[name].setdefault(key, []).append(seconds)
    for name, parts in times.items():
        medians = ", ".join(f"{k} {statistics.median(v) * 1e3:.1f}" for k, v in parts.items())
        print(f"ZeRO-{stage}, {name}: {medians} ms per step (median of {steps})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12, help="timed steps per engine, after 2 warm-up")
    args = parser.parse_args()
    init_distributed(timeout_s=300)
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)  # not its LR-before-first-step warning
    print(f"load average before {os.getloadavg()}, {torch.get_num_threads()} threads", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for stage in (0, 1):
            measure(stage, args.steps, Path(tmp))
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
