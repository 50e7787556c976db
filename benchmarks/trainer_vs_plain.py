"""Trainer vs a plain PyTorch loop and nanoGPT's recipe: same shape, batch, dtype and data, one process.

    .venv/bin/python benchmarks/trainer_vs_plain.py [--steps 40] [--rounds 3] [--zero-stages 0] [--profile]
        [--for-loop-variants] [--dashboard-variants]

Runs are interleaved (plain, nanoGPT, trainer ZeRO-0, its variants, plain, ...) because this machine
is shared and noisy; each figure is the median over rounds of the median window rate after warm-up.
Every loop is timed the trainer's way: a window of `--log-every` steps that closes after `loss.item()`
(the device sync). The trainer's headline figure is wall clock between consecutive train records, so
its per-step logging counts too; the rate it logs itself is shown beside it. `--profile` adds where
each step's time goes (torch.profiler; benchmarks/step_profile.py). `--dashboard-variants` adds each
stage reporting every record to a real sidecar (`python -m llm.sidecar`, loopback), and reports the
rate with the reporter on ÷ off. Writes OUT/trainer_vs_plain.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.baselines import PlainLoop, Step, nano_config, window_rates  # noqa: E402
from benchmarks.nanogpt_recipe import NanoRecipe  # noqa: E402
from benchmarks.step_profile import phase, profile_steps  # noqa: E402
from benchmarks.trainer_report import label, write_report  # noqa: E402
from llm.config import DataConfig  # noqa: E402
from llm.data.prepare import load_dataset, prepare_dataset  # noqa: E402
from llm.launchers import trainer_env  # noqa: E402
from llm.model.config import GPTConfig, from_preset  # noqa: E402
from llm.model.gpt import GPT  # noqa: E402
from llm.telemetry.dashboard_link import spawn_sidecar  # noqa: E402
from llm.telemetry.mfu import cpu_peak_flops, model_matmul_shapes  # noqa: E402
from llm.train.engine import cpu_threads  # noqa: E402

SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 256}
MICRO_BATCH = 8
RESULTS = REPO / "benchmarks" / "results"


@dataclass(frozen=True)
class Variant:
    """The trainer at a ZeRO stage, with ds_configs/cpu.json's fused AdamW or torch's for-loop one."""

    stage: int
    for_loop: bool = False
    dashboard: bool = False  # every record relayed to a sidecar

    @property
    def name(self) -> str:
        return (
            f"trainer_zero{self.stage}"
            + ("_forloop" if self.for_loop else "")
            + ("_dashboard" if self.dashboard else "")
        )


def trainer_cmd(
    workdir: Path, variant: Variant, *, max_steps: int, log_every: int, data_cache: Path
) -> tuple[list[str], Path]:
    """launch/train.py's flags for one process at this shape, and the run directory it writes."""
    config = json.loads((REPO / "ds_configs" / "cpu.json").read_text())
    config["train_micro_batch_size_per_gpu"] = MICRO_BATCH
    config["gradient_accumulation_steps"] = 1
    config["zero_optimization"] = {"stage": variant.stage}
    if variant.for_loop:
        config["optimizer"]["params"]["fused"] = False  # passed through to torch.optim.AdamW
    ds_path = workdir / f"ds-{variant.name}.json"
    ds_path.write_text(json.dumps(config))
    run_dir = workdir / f"run-{time.time_ns()}"
    shape = [f"--{k.replace('_', '-')}={v}" for k, v in SHAPE.items()]
    args = [
        "--deepspeed", str(ds_path), "--model", "tiny", *shape, "--max-steps", str(max_steps),
        "--log-every", str(log_every), "--eval-every", "1000000", "--eval-batches", "1",
        "--save-every", "1000000", "--no-progress", "--sample-tokens", "0", "--run-dir", str(run_dir),
        "--data-cache", str(data_cache),
    ]  # fmt: skip
    return args, run_dir


def child_env() -> dict[str, str]:
    """The trainer's process: the CPU path, whatever accelerator this machine has."""
    return trainer_env(cpu=True)


def trainer(
    workdir: Path, variant: Variant, *, warmup: int, steps: int, log_every: int, data_cache: Path
) -> tuple[float, float]:
    """The real trainer in its own process. Returns the median tokens/s of its windows after warm-up:
    by wall clock between consecutive train records, and as the trainer logged them."""
    args, run_dir = trainer_cmd(
        workdir, variant, max_steps=warmup + steps, log_every=log_every, data_cache=data_cache
    )
    env = child_env()
    with contextlib.ExitStack() as stack:
        if variant.dashboard:
            url, token = stack.enter_context(sidecar(workdir / "sidecar"))
            args += ["--dashboard", url]
            env["LLM_DASHBOARD_TOKEN"] = token
        done = subprocess.run(
            [sys.executable, "launch/train.py", *args], cwd=REPO, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"the trainer failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        if variant.dashboard:  # the sidecar must have had the run to its end, or nothing was measured
            with urllib.request.urlopen(f"{url}/api/runs", timeout=10) as reply:
                seen = {r["run_id"]: r for r in json.load(reply)["runs"]}
            if seen.get(run_dir.name, {}).get("step") != warmup + steps:
                raise SystemExit(f"the sidecar did not receive the run: {seen.get(run_dir.name)}")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = sorted((r for r in map(json.loads, lines) if r["type"] == "train"), key=lambda r: r["step"])
    tokens_per_step = MICRO_BATCH * SHAPE["block_size"]
    wall = [
        (b["step"] - a["step"]) * tokens_per_step / (b["time"] - a["time"])
        for a, b in itertools.pairwise(records)
        if a["step"] >= warmup
    ]
    logged = [r["tokens_per_s"] for r in records if r["step"] - log_every >= warmup]
    return statistics.median(wall), statistics.median(logged)


@contextlib.contextmanager
def sidecar(runs_dir: Path) -> Iterator[tuple[str, str]]:
    """A real sidecar on a free loopback port, over its own (empty) runs folder: (URL, token)."""
    token = secrets.token_urlsafe(16)
    started = spawn_sidecar(runs_dir, token=token, log=runs_dir.parent / "sidecar.log", env=child_env())
    if started is None:
        raise SystemExit(f"the sidecar did not start (see {runs_dir.parent / 'sidecar.log'})")
    proc, port = started
    try:
        yield f"http://127.0.0.1:{port}", token
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def profile_all(
    *, cfg: GPTConfig, tokens: np.ndarray, variants: list[Variant], data_cache: Path, warmup: int, steps: int
) -> dict[str, Any]:
    """Per-step breakdown of each loop (torch.profiler, CPU time): phases and top ops by self time."""
    print(f"profiling {steps} steps of each after {warmup} warm-up steps ...", flush=True)
    nano = NanoRecipe(nano_config(cfg), tokens, batch=MICRO_BATCH, total_steps=warmup + steps)
    plain = PlainLoop(cfg, tokens, micro_batch=MICRO_BATCH)

    def with_sync(step: Step) -> Callable[[], None]:
        def run() -> None:
            loss = step()
            with phase("loss.item (log)"):
                loss.item()

        return run

    out = {
        "plain": profile_steps(with_sync(plain.step), warmup=warmup, steps=steps),
        "nanogpt": profile_steps(with_sync(nano.step), warmup=warmup, steps=steps),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            args, _ = trainer_cmd(
                Path(tmp), variant, max_steps=warmup + steps + 1, log_every=1, data_cache=data_cache
            )
            target = Path(tmp) / f"profile-{variant.name}.json"
            cmd = [
                sys.executable, "benchmarks/step_profile.py", "--out", str(target), "--warmup", str(warmup),
                "--steps", str(steps), "--", *args,
            ]  # fmt: skip
            done = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"profiling the trainer failed:\n{done.stderr[-3000:]}")
            out[variant.name] = json.loads(target.read_text())
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run, after warm-up")
    parser.add_argument("--warmup", type=int, default=5, help="steps per run before timing starts")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians")
    parser.add_argument("--log-every", type=int, default=1, help="steps per timing window (trainer's too)")
    parser.add_argument(
        "--zero-stages",
        default="0",
        help="ZeRO stages to run the trainer with: 0 (what one process runs; a ZeRO 1 or 2 JSON runs at 0 "
        "there, llm.ds_config.one_rank_stage: benchmarks/engine_ab.py compares those stages) or 3",
    )
    parser.add_argument(
        "--for-loop-variants",
        action="store_true",
        help="also run each stage with torch's for-loop AdamW (optimizer.params.fused false in the JSON)",
    )
    parser.add_argument(
        "--dashboard-variants",
        action="store_true",
        help="also run each stage reporting to a real sidecar (reporter on / off in the report)",
    )
    parser.add_argument("--profile", action="store_true", help="add a torch.profiler breakdown per loop")
    parser.add_argument("--profile-steps", type=int, default=10, help="steps recorded by --profile")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for trainer_vs_plain.{json,md}")
    parser.add_argument("--data-cache", type=Path, default=REPO / "data" / "cache", help="prepared tokens")
    args = parser.parse_args(argv)
    if args.steps < args.log_every or args.rounds < 1 or args.warmup < 1:
        parser.error("need --steps >= --log-every, --rounds >= 1 and --warmup >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "benchmarks/trainer_vs_plain.py " + " ".join(sys.argv[1:] if argv is None else argv)
    # the trainer gives a process on this machine all its cores (llm/train/engine.py): so do the baselines
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cpu_threads(1))
    load_before = load()
    dataset = load_dataset(prepare_dataset(DataConfig(data_cache=args.data_cache), progress=False))
    cfg = from_preset("tiny", **SHAPE, vocab_size=dataset.tokenizer.vocab_size)
    tokens_per_step = MICRO_BATCH * cfg.block_size
    shapes = model_matmul_shapes(tokens=tokens_per_step, width=cfg.n_embd, vocab=cfg.vocab_size)
    peak, peak_how = cpu_peak_flops(matmul_shapes=shapes, precision="fp32")  # every loop here runs on the CPU
    stages = [int(x) for x in args.zero_stages.split(",")]
    if not set(stages) <= {0, 3}:
        raise SystemExit("error: --zero-stages: one process runs a ZeRO 1 or 2 JSON at ZeRO-0; give 0 or 3")
    variants = [Variant(z) for z in stages]
    variants += [Variant(z, for_loop=True) for z in stages if args.for_loop_variants]
    variants += [Variant(z, dashboard=True) for z in stages if args.dashboard_variants]
    names = ["plain", "nanogpt", *(v.name for v in variants)]
    rounds: dict[str, list[float]] = {name: [] for name in names}
    logged: dict[str, list[float]] = {v.name: [] for v in variants}
    window = dict(warmup=args.warmup, steps=args.steps, log_every=args.log_every)

    def median_rate(step: Step) -> float:
        return statistics.median(window_rates(step, **window, tokens_per_step=tokens_per_step))

    fused = False
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            rounds["plain"].append(median_rate(PlainLoop(cfg, dataset.train, micro_batch=MICRO_BATCH).step))
            nano = NanoRecipe(
                nano_config(cfg), dataset.train, batch=MICRO_BATCH, total_steps=args.warmup + args.steps
            )
            fused = nano.fused
            rounds["nanogpt"].append(median_rate(nano.step))
            del nano
            for variant in variants:
                wall, as_logged = trainer(Path(tmp), variant, **window, data_cache=args.data_cache)
                rounds[variant.name].append(wall)
                logged[variant.name].append(as_logged)
            done = ", ".join(f"{label(n)} {rounds[n][-1]:,.0f}" for n in names)
            print(f"round {round_ + 1}: {done} tokens/s", flush=True)
    profile = None
    if args.profile:
        profile = profile_all(
            cfg=cfg, tokens=dataset.train, variants=[v for v in variants if not v.dashboard],
            data_cache=args.data_cache,
            warmup=args.warmup, steps=args.profile_steps,
        )  # fmt: skip
    result = {
        "what": "trainer (DeepSpeed, 1 process) vs a plain PyTorch loop and nanoGPT's recipe; same shape, "
        "batch, dtype and data",
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": load(),
        "model": cfg.model_dump(),
        "parameters": GPT.parameter_count(cfg),
        "micro_batch": MICRO_BATCH,
        "dtype": "fp32",
        "warmup_steps": args.warmup,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "log_every": args.log_every,
        "nanogpt_fused_adamw": fused,
        "peak_flops": peak,
        "peak_how": peak_how,
        "flops_per_token": GPT.flops_per_token(cfg),
        "runs": {name: _summary(rounds[name], logged.get(name), cfg, peak) for name in names},
        "profile": profile,
    }
    runs = result["runs"]
    for run in runs.values():
        run["over_plain"] = run["tokens_per_s"] / runs["plain"]["tokens_per_s"]
        run["over_nanogpt"] = run["tokens_per_s"] / runs["nanogpt"]["tokens_per_s"]
    for name, run in runs.items():  # the reporter's cost: the same stage with it on / off
        if name.endswith("_dashboard"):
            off = runs[name.removesuffix("_dashboard")]
            run["over_reporter_off"] = run["tokens_per_s"] / off["tokens_per_s"]
    text = write_report(result, args.out, data_prep=RESULTS / "data_prep.json")
    print(text)


def _summary(rates: list[float], logged: list[float] | None, cfg: GPTConfig, peak: float) -> dict[str, Any]:
    tokens_per_s = statistics.median(rates)
    out: dict[str, Any] = {
        "tokens_per_s": tokens_per_s,
        "rounds": rates,
        "mfu": tokens_per_s * GPT.flops_per_token(cfg) / peak if peak else None,
    }
    if logged is not None:
        out["tokens_per_s_as_logged"] = statistics.median(logged)
        out["rounds_as_logged"] = logged
    return out


if __name__ == "__main__":
    main()
