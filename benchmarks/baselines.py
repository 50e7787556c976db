"""The loops our trainer is measured against, on the same model, batch, dtype and data.

    .venv/bin/python -m benchmarks.baselines plain   --model tiny --steps 20 --warmup 5 [--micro-batch 8]
    .venv/bin/python -m benchmarks.baselines nanogpt ...
    .venv/bin/torchrun --nproc_per_node 2 -m benchmarks.baselines ddp ...
    .venv/bin/accelerate launch --use_deepspeed --deepspeed_config_file CFG --num_processes 2 \
        -m benchmarks.baselines accelerate ...

- `plain`: our GPT in a hand-written loop (forward, backward, clip, AdamW), one process.
- `nanogpt`: nanoGPT's training recipe (benchmarks/nanogpt_recipe.py: its model, fused AdamW where the
  device has it, its random windows and cosine schedule), one process.
- `ddp`: our GPT wrapped in PyTorch's DistributedDataParallel, one process per rank (torchrun), gloo
  on a CPU and NCCL on GPUs: what a multi-rank job looks like without DeepSpeed.
- `accelerate`: our GPT in Hugging Face Accelerate's loop with its DeepSpeed plugin, on the same
  DeepSpeed JSON as the trainer (its optimizer, scheduler, ZeRO stage and clipping): what many users
  would pick instead of a trainer of their own.

`--compile` compiles the model first (`torch.compile`, in place), as the trainer's `--compile` does.

Every loop is timed as the trainer times itself: windows of `--log-every` steps that close after
`loss.item()`, the only host synchronisation, and only the windows after `--warmup` steps count. Rank 0
prints one line, `BASELINE {json}`: the window rates in tokens/s of the whole job, the first step's
time (synchronised: with --compile it holds the compilation), each rank's peak memory and its
threads. benchmarks/run.py runs these beside the trainer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from benchmarks.nanogpt_recipe import NanoConfig, NanoRecipe, fused_adamw_supported
from benchmarks.step_profile import phase
from llm.config import DataConfig
from llm.data.loader import BatchSampler
from llm.data.prepare import load_dataset, prepare_dataset
from llm.model.config import GPTConfig, from_preset
from llm.model.gpt import GPT
from llm.telemetry.rank_stats import peak_memory
from llm.train.engine import cpu_threads

Step = Callable[[], torch.Tensor]  # one optimizer step; returns the loss, not yet synchronised
AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


class PlainLoop:
    """Our GPT with a hand-written loop: forward, backward, clip, AdamW step (decay on matrices).

    With `ddp`, the model is wrapped in DistributedDataParallel and each rank draws its own batches.
    fp16 and bf16 run under autocast (fp16 with a gradient scaler), as DeepSpeed keeps fp32 masters."""

    def __init__(
        self,
        cfg: GPTConfig,
        tokens: np.ndarray,
        *,
        micro_batch: int,
        device: torch.device | None = None,
        precision: str = "fp32",
        rank: int = 0,
        world_size: int = 1,
        ddp: bool = False,
        compile: bool = False,
    ) -> None:
        torch.manual_seed(1337)
        self.device = device or torch.device("cpu")
        model = GPT(cfg).to(self.device)
        if compile:
            model.compile()
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
            lr=1e-3, betas=(0.9, 0.95), eps=1e-8, fused=fused_adamw_supported(self.device),
        )  # fmt: skip
        self.model: torch.nn.Module = (
            torch.nn.parallel.DistributedDataParallel(model, device_ids=_device_ids(self.device))
            if ddp
            else model
        )
        self.autocast = AUTOCAST.get(precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.sampler = BatchSampler(
            tokens, block_size=cfg.block_size, micro_batch=micro_batch, rank=rank, world_size=world_size,
            seed=1337,
        )  # fmt: skip

    def step(self) -> torch.Tensor:
        with phase("next_batch"):
            x, y = self.sampler.next_batch()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with phase("forward"), self._autocast():
            _, loss = self.model(x, y)
        assert loss is not None
        with phase("zero_grad"):
            self.optimizer.zero_grad(set_to_none=True)
        with phase("backward"):
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        with phase("clip"):
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        with phase("optimizer"):
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        return loss.detach()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)


class AccelerateLoop:
    """Our GPT in the loop Hugging Face Accelerate's DeepSpeed plugin asks for, on the DeepSpeed JSON that
    `accelerate launch --use_deepspeed --deepspeed_config_file CFG` names: what many users would write
    instead of our trainer. The JSON's optimizer and scheduler are built by DeepSpeed (Accelerate's
    DummyOptim / DummyScheduler stand in for them until `prepare`)."""

    def __init__(self, cfg: GPTConfig, tokens: np.ndarray, *, micro_batch: int, total_steps: int) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DummyOptim, DummyScheduler

        torch.manual_seed(1337)
        self.accelerator = Accelerator()
        model = GPT(cfg)
        optimizer = DummyOptim(model.parameters())
        scheduler = DummyScheduler(optimizer, total_num_steps=total_steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        # DeepSpeed's process group: on a CPU, Accelerate's own state counts one process per launch
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        self.sampler = BatchSampler(
            tokens, block_size=cfg.block_size, micro_batch=micro_batch, rank=self.rank, world_size=self.world,
            seed=1337,
        )  # fmt: skip

    def step(self) -> torch.Tensor:
        x, y = self.sampler.next_batch()
        device = self.accelerator.device
        _, loss = self.model(x.to(device), y.to(device))
        self.accelerator.backward(loss)  # DeepSpeed's engine: backward, then its step at the boundary
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return loss.detach()


def window_rates(
    step: Step,
    *,
    warmup: int,
    steps: int,
    log_every: int,
    tokens_per_step: int,
    first_step: list[float] | None = None,
) -> list[float]:
    """tokens/s of each logging window after warm-up, timed as the trainer times its windows:
    the window opens when the last one closed and closes after `loss.item()`. With `first_step`, the
    first step (a warm-up step) is synchronised and its seconds appended there."""
    rates: list[float] = []
    start, in_window = time.perf_counter(), 0
    for n in range(1, warmup + steps + 1):
        loss = step()
        in_window += 1
        if n == 1 and first_step is not None:
            loss.item()
            first_step.append(time.perf_counter() - start)
        if n % log_every == 0:
            with phase("loss.item (log)"):
                loss.item()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            if n - in_window >= warmup:
                rates.append(in_window * tokens_per_step / elapsed)
            start, in_window = time.perf_counter(), 0
    return rates


def nano_config(cfg: GPTConfig) -> NanoConfig:
    return NanoConfig(
        vocab_size=cfg.vocab_size,
        block_size=cfg.block_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
    )


def model_config(args: argparse.Namespace, vocab_size: int) -> GPTConfig:
    """The preset with the trainer's overrides (--n-layer ...), as launch/train.py would build it."""
    shape = {k: v for k, v in vars(args).items() if k in SHAPE_FLAGS and v is not None}
    return from_preset(args.model, **shape, vocab_size=vocab_size)


SHAPE_FLAGS = ("n_layer", "n_head", "n_embd", "block_size")


def _device_ids(device: torch.device) -> list[int] | None:
    return [device.index or 0] if device.type == "cuda" else None


@contextlib.contextmanager
def _process_group(kind: str) -> Iterator[tuple[int, int, torch.device]]:
    """(rank, world size, device): torchrun's process group for `ddp`, one process otherwise."""
    cuda = torch.cuda.is_available()
    if kind != "ddp":
        yield 0, 1, torch.device("cuda" if cuda else "cpu")
        return
    local = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local)
    else:  # torchrun sets OMP_NUM_THREADS=1; the trainer splits the cores among a node's ranks
        torch.set_num_threads(cpu_threads(int(os.environ["LOCAL_WORLD_SIZE"])))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield (
            dist.get_rank(),
            dist.get_world_size(),
            torch.device("cuda", local) if cuda else torch.device("cpu"),
        )
    finally:
        dist.destroy_process_group()


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    with _process_group(args.kind) as (rank, world, device):
        if not torch.cuda.is_available():  # as the trainer: a node's CPUs shared among its ranks
            if args.kind == "accelerate":  # its launcher (torchrun's) sets OMP_NUM_THREADS=1
                torch.set_num_threads(cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
            elif args.kind != "ddp" and "OMP_NUM_THREADS" not in os.environ:
                torch.set_num_threads(cpu_threads(1))
        dataset = load_dataset(prepare_dataset(DataConfig(data_cache=args.data_cache), progress=False))
        cfg = model_config(args, dataset.tokenizer.vocab_size)
        if args.kind == "accelerate":
            loop = AccelerateLoop(
                cfg, dataset.train, micro_batch=args.micro_batch, total_steps=args.warmup + args.steps
            )
            step: Step = loop.step
            rank, world = loop.rank, loop.world
        elif args.kind == "nanogpt":
            if device.type != "cpu" or args.precision != "fp32":
                raise SystemExit("the nanoGPT baseline runs fp32 on the CPU only")
            recipe = NanoRecipe(
                nano_config(cfg), dataset.train, batch=args.micro_batch, total_steps=args.warmup + args.steps
            )
            if args.compile:
                recipe.model.compile()
            step = recipe.step
        else:
            step = PlainLoop(
                cfg, dataset.train, micro_batch=args.micro_batch, device=device, precision=args.precision,
                rank=rank, world_size=world, ddp=args.kind == "ddp", compile=args.compile,
            ).step  # fmt: skip
        first: list[float] = []
        rates = window_rates(
            step, warmup=args.warmup, steps=args.steps, log_every=args.log_every,
            tokens_per_step=args.micro_batch * cfg.block_size * world, first_step=first,
        )  # fmt: skip
        mine = {"rank": rank, "threads": torch.get_num_threads(), "memory": peak_memory()}
        ranks = [mine]
        if world > 1:
            ranks = [dict(r) for r in _gather(mine, world)]
        if rank != 0:
            return None
        return {
            "kind": args.kind, "compiled": args.compile, "world_size": world, "window_rates": rates,
            "first_step_s": first[0],
            "tokens_per_step": args.micro_batch * cfg.block_size * world, "ranks": ranks,
        }  # fmt: skip


def _gather(obj: dict[str, Any], world: int) -> list[Any]:
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=["plain", "nanogpt", "ddp", "accelerate"])
    parser.add_argument("--model", default="tiny", help="a preset of llm.model.config (as --model)")
    for flag in SHAPE_FLAGS:
        parser.add_argument(f"--{flag.replace('_', '-')}", type=int, help="override the preset's " + flag)
    parser.add_argument("--micro-batch", type=int, default=8, help="sequences per rank per step")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--steps", type=int, default=20, help="timed steps after warm-up")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--log-every", type=int, default=5, help="steps per timing window")
    parser.add_argument("--data-cache", default="data/cache", help="prepared tokens (the trainer's cache)")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model (plain, nanogpt, ddp)"
    )
    args = parser.parse_args(argv)
    if args.compile and args.kind == "accelerate":
        parser.error(
            "--compile: the accelerate baseline runs eager (Accelerate compiles through its own config)"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    result = run(parse_args(argv))
    if result is not None:
        print("BASELINE " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
