"""Trainer vs a plain PyTorch loop: same model, batch, dtype and data, one process, measured in one run.

    .venv/bin/python benchmarks/trainer_vs_plain.py [--steps 40] [--rounds 2]

Runs are interleaved (plain, trainer, plain, trainer, ...) because this machine is shared and noisy;
each figure is the median over rounds of the median step rate after warm-up. Prints tokens/s of each,
their ratio, and MFU against the fp32 matmul peak measured in this process. Writes
benchmarks/results/trainer_vs_plain.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llm.config import DataConfig  # noqa: E402
from llm.data.loader import BatchSampler  # noqa: E402
from llm.data.prepare import load_dataset, prepare_dataset  # noqa: E402
from llm.model.config import from_preset  # noqa: E402
from llm.model.gpt import GPT  # noqa: E402
from llm.telemetry.mfu import measure_cpu_peak_flops  # noqa: E402

SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 256}
MICRO_BATCH = 8
WARMUP_STEPS = 5
DATA_CACHE = REPO / "data" / "cache"


def plain_loop(steps: int, dataset_path: Path) -> float:
    """nanoGPT-style loop: forward, backward, clip, AdamW step. Returns median tokens/s after warm-up."""
    dataset = load_dataset(dataset_path)
    cfg = from_preset("tiny", **SHAPE, vocab_size=dataset.tokenizer.vocab_size)
    torch.manual_seed(1337)
    model = GPT(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
    )  # fmt: skip
    sampler = BatchSampler(
        dataset.train, block_size=cfg.block_size, micro_batch=MICRO_BATCH, rank=0, world_size=1, seed=1337
    )
    rates = []
    for step in range(WARMUP_STEPS + steps):
        start = time.perf_counter()
        x, y = sampler.next_batch()
        _, loss = model(x, y)
        assert loss is not None
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss.item()
        if step >= WARMUP_STEPS:
            rates.append(MICRO_BATCH * cfg.block_size / (time.perf_counter() - start))
    return statistics.median(rates)


def trainer(steps: int, workdir: Path, *, zero_stage: int) -> tuple[float, float]:
    """The real trainer, one process. Returns median tokens/s and MFU of its log windows after warm-up."""
    config = json.loads((REPO / "ds_configs" / "cpu.json").read_text())
    config["train_micro_batch_size_per_gpu"] = MICRO_BATCH
    config["gradient_accumulation_steps"] = 1
    config["zero_optimization"] = {"stage": zero_stage}
    ds_path = workdir / "ds.json"
    ds_path.write_text(json.dumps(config))
    run_dir = workdir / f"run-{time.time_ns()}"
    shape = [f"--{k.replace('_', '-')}={v}" for k, v in SHAPE.items()]
    cmd = [
        sys.executable, "launch/train.py", "--deepspeed", str(ds_path), "--model", "tiny", *shape,
        "--max-steps", str(WARMUP_STEPS + steps), "--log-every", "1", "--eval-every", "1000000",
        "--save-every", "1000000", "--no-progress", "--sample-tokens", "0", "--run-dir", str(run_dir),
        "--data-cache", str(DATA_CACHE),
    ]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # the last step is followed by the end-of-run save and eval; it is timed before them, but skip it
    train = [r for r in records if r["type"] == "train" and WARMUP_STEPS < r["step"] < WARMUP_STEPS + steps]
    return statistics.median(r["tokens_per_s"] for r in train), statistics.median(r["mfu"] for r in train)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--zero-stages", default="0,1", help="ZeRO stages to run the trainer with (0: what one process needs)"
    )
    args = parser.parse_args()

    dataset_path = prepare_dataset(DataConfig(cache_dir=DATA_CACHE), progress=False)
    vocab = load_dataset(dataset_path).tokenizer.vocab_size
    cfg = from_preset("tiny", **SHAPE, vocab_size=vocab)
    peak = measure_cpu_peak_flops(seconds=2.0)
    stages = [int(x) for x in args.zero_stages.split(",")]
    plain_rates: list[float] = []
    trainer_rates: dict[int, list[float]] = {z: [] for z in stages}
    trainer_mfus: dict[int, list[float]] = {z: [] for z in stages}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            plain_rates.append(plain_loop(args.steps, dataset_path))
            line = f"round {round_ + 1}: plain {plain_rates[-1]:,.0f} tok/s"
            for stage in stages:
                rate, mfu = trainer(args.steps, Path(tmp), zero_stage=stage)
                trainer_rates[stage].append(rate)
                trainer_mfus[stage].append(mfu)
                line += f", trainer ZeRO-{stage} {rate:,.0f} tok/s"
            print(line, flush=True)

    plain = statistics.median(plain_rates)
    ours = {z: statistics.median(r) for z, r in trainer_rates.items()}
    flops_per_token = GPT.flops_per_token(cfg)
    result = {
        "what": "trainer (DeepSpeed, 1 process) vs plain PyTorch loop, same model/batch/dtype/data",
        "model": cfg.model_dump(),
        "parameters": GPT.parameter_count(cfg),
        "micro_batch": MICRO_BATCH,
        "dtype": "fp32",
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "measured_peak_gflops": peak / 1e9,
        "flops_per_token": flops_per_token,
        "plain_tokens_per_s": plain,
        "plain_mfu": plain * flops_per_token / peak,
        "plain_rounds": plain_rates,
        "trainer": {
            f"zero{z}": {
                "tokens_per_s": ours[z],
                "ratio_trainer_over_plain": ours[z] / plain,
                "mfu_vs_this_peak": ours[z] * flops_per_token / peak,
                "mfu_as_logged": statistics.median(trainer_mfus[z]),
                "rounds": trainer_rates[z],
            }
            for z in stages
        },
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "trainer_vs_plain.json").write_text(json.dumps(result, indent=2) + "\n")
    command = (
        f"benchmarks/trainer_vs_plain.py --steps {args.steps} --rounds {args.rounds} "
        f"--zero-stages {args.zero_stages}"
    )
    lines = [
        "# Trainer vs plain PyTorch loop (CPU, fp32, 1 process)",
        "",
        f"Measured {result['date']} by `{command}` on {result['machine']};",
        f"model {SHAPE}, vocab {vocab}, micro-batch {MICRO_BATCH}.",
        "",
        "| | tokens/s | MFU (vs measured fp32 matmul peak) | ratio to plain |",
        "| --- | ---: | ---: | ---: |",
        f"| plain loop | {plain:,.0f} | {result['plain_mfu']:.1%} | 1 |",
        *(
            f"| trainer, ZeRO-{z} | {ours[z]:,.0f} | {ours[z] * flops_per_token / peak:.1%} | "
            f"**{ours[z] / plain:.3f}** |"
            for z in stages
        ),
        "",
        f"Peak measured here: {peak / 1e9:.0f} GFLOP/s (fp32 1024² matmul, best of 2 s); "
        f"FLOPs per token {flops_per_token / 1e6:.1f} M (6N + 12·L·T·C). Each figure is the median over "
        "rounds of the median per-step rate after 5 warm-up steps; runs are interleaved.",
        "",
    ]
    (out / "trainer_vs_plain.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
