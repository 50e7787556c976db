"""How fast the ranks of a job all-reduce: the link figure benchmarks/project.py checks itself with.

    deepspeed --num_gpus 2 benchmarks/linkprobe.py [--mib 64] [--repeats 5]
    deepspeed --hostfile hostfile benchmarks/linkprobe.py

Started by the same launcher as the trainer, so it crosses the same links (shared memory on one node,
the network between nodes) with the same backend (gloo on CPUs, NCCL on GPUs). Each rank all-reduces
an fp32 tensor of `--mib` MiB, once to warm up and `--repeats` times timed; rank 0 prints one line,
`LINKPROBE {json}`, with the median time and the bus bandwidth: bytes × 2(N−1)/N ÷ time, the bytes
each rank sends and receives in a ring all-reduce per second (NCCL's `busbw`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script by the launcher

from llm.train.engine import cpu_threads


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=64, help="size of the all-reduced tensor")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--local_rank", type=int, default=None, help="(set by the deepspeed launcher)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", args.local_rank or 0))
    if cuda:
        torch.cuda.set_device(local)
    else:  # as the trainer: a node's cores shared among its ranks
        torch.set_num_threads(cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=300))
    world = dist.get_world_size()
    numel = args.mib * 2**20 // 4
    tensor = torch.ones(numel, device=torch.device("cuda", local) if cuda else "cpu")
    times = []
    for n in range(args.repeats + 1):
        dist.barrier()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        dist.all_reduce(tensor)
        if cuda:
            torch.cuda.synchronize()
        if n:  # the first is warm-up
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    size = numel * 4
    if dist.get_rank() == 0:
        busbw = size * 2 * (world - 1) / world / seconds
        figures = {"ranks": world, "bytes": size, "seconds": seconds, "times": times}
        figures.update(busbw_bytes_per_s=busbw, backend=dist.get_backend())
        print("LINKPROBE " + json.dumps(figures), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
