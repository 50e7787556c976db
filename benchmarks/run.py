"""Throughput, MFU, memory and step-time breakdown of the trainer, one device against many, with
baselines measured in the same run: the benchmark of docs/benchmarks.md.

    .venv/bin/python -m benchmarks.run --scenarios single,multi-rank,multi-node --model gpt2-small --steps 50

Scenarios, each through the real launcher (`deepspeed launch/train.py --deepspeed CFG ...`):
- `single`: one rank (`--num_gpus 1`); baselines: a plain PyTorch loop over our GPT, nanoGPT's recipe
  (one process each) and Accelerate's loop with its DeepSpeed plugin on the same JSON
  (benchmarks/baselines.py), same model, micro-batch, dtype and data.
- `multi-rank`: `--ranks N` ranks on this machine (default: every GPU, or 2 on a CPU); baselines: PyTorch
  DDP over torchrun and Accelerate with its DeepSpeed plugin, with as many ranks.
- `multi-node`: `--hostfile H` (pdsh over ssh, as users launch); on a machine without one, two simulated
  nodes (network namespaces with their own sshd and disks, tests/multinode/cluster.py; needs root).
- `--zero-stages 0,1,2,3` adds the multi-rank scenario at each ZeRO stage, for memory per rank.
- `--overlap-comm` adds the multi-rank scenario at ZeRO-2 without `overlap_comm`, with it, and with it on
  `--bucket-elements` buckets, for the effect of overlapping the gradient reduction with backward.
- `--compile` adds `compiled`: one rank with the trainer's `--compile` (torch.compile through DeepSpeed's
  engine), against the eager plain loop and nanoGPT's recipe compiled; each run's first step less a
  measured one is its compile time, reported apart from the throughput.

Each run takes `--warmup` steps that are not measured, then `--steps` measured ones. From the trainer's
metrics.jsonl: tokens/s (whole job and per device), TFLOP/s and MFU of the windows after warm-up; from
its rank_stats.json (the JSON's `wall_clock_breakdown` is turned on in the copy this script writes):
each rank's peak memory and DeepSpeed's timers per step (forward, backward, gradient all-reduce,
optimizer step). Scaling efficiency is tokens/s ÷ (ranks × the single run's tokens/s). With `--rounds R`
every scenario and baseline runs R times, interleaved, every other round in reverse order (so a machine
that drifts favours no run), and figures are medians over rounds.

Writes OUT/<date>-<host>-<commit>.json (with the environment: devices, driver, CUDA, torch, deepspeed,
interconnect, hostfile, configs and their sha256), a Markdown report with PNG plots beside it, and a
row at the top of benchmarks/README.md's table (`--no-record` leaves the README alone).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.baselines import SHAPE_FLAGS
from llm.ds_config import load_ds_config
from llm.errors import UsageError
from llm.launchers import trainer_env
from llm.preflight import read_hostfile

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "benchmarks" / "README.md"
VENV_BIN = Path(sys.executable).parent
SCENARIOS = ("single", "multi-rank", "multi-node")
TIMERS = ("fwd", "bwd_inner", "bwd_allreduce", "step")
NEVER = "1000000000"


@dataclass(frozen=True)
class Scenario:
    name: str  # "single", "multi-rank", "multi-node", "compiled", or "zero<N>" (multi-rank at ZeRO-N)
    ranks: int
    nodes: int
    zero_stage: int
    warmup: int
    steps: int
    compile: bool = False
    zero_options: tuple[tuple[str, Any], ...] = ()  # set in the JSON's zero_optimization (--overlap-comm)

    @property
    def baselines(self) -> tuple[str, ...]:
        """Kinds of benchmarks/baselines.py; `-compiled` runs one with --compile."""
        if self.name == "single":
            return ("plain", "nanogpt", "accelerate")
        if self.name == "compiled":  # the goals: >= 1.15x the eager plain loop, >= 1.0x nanoGPT compiled
            return ("plain", "nanogpt-compiled")
        return ("ddp", "accelerate") if self.name == "multi-rank" else ()


# -- running -----------------------------------------------------------------------------------------
def child_env(args: argparse.Namespace) -> dict[str, str]:
    return trainer_env(cpu=not args.gpu)  # the CPU path, even where a GPU exists, unless --gpu


def bench_config(
    args: argparse.Namespace, workdir: Path, scenario: Scenario, ranks: int | None = None
) -> Path:
    """The user's DeepSpeed JSON with DeepSpeed's per-step timers on, at the scenario's ZeRO stage and
    options. With `ranks`, its "auto" values resolved for that many ranks by the trainer's own loader
    (llm.ds_config): Accelerate's resolution counts one process on a CPU, and DeepSpeed then refuses the
    batch arithmetic."""
    config = json.loads(args.deepspeed.read_text())
    config["wall_clock_breakdown"] = True
    config["train_micro_batch_size_per_gpu"] = args.micro_batch
    zero = config.get("zero_optimization", {})
    config["zero_optimization"] = {**zero, "stage": scenario.zero_stage, **dict(scenario.zero_options)}
    label = f"zero{scenario.zero_stage}" + "".join(f"-{k}={v}" for k, v in scenario.zero_options)
    path = workdir / f"{args.deepspeed.stem}-{label}{'' if ranks is None else f'-{ranks}ranks'}.json"
    path.write_text(json.dumps(config, indent=2))
    if ranks is not None:
        resolved = load_ds_config(
            path, world_size=ranks, cuda_available=args.gpu, max_steps=args.warmup + args.steps
        )
        path.write_text(json.dumps(resolved.config, indent=2))
    return path


def model_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--model", args.model]
    for name in SHAPE_FLAGS:
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


def train_flags(args: argparse.Namespace, scenario: Scenario, config: Path, run_dir: Path) -> list[str]:
    return [
        "launch/train.py", "--deepspeed", str(config), *model_flags(args),
        "--max-steps", str(scenario.warmup + scenario.steps), "--log-every", str(args.log_every),
        "--eval-every", NEVER, "--eval-batches", "1", "--save-every", NEVER, "--keep-last", "1",
        "--sample-tokens", "0", "--no-progress", "--run-dir", str(run_dir),
        "--data-cache", str(args.data_cache), *(["--compile"] if scenario.compile else []),
    ]  # fmt: skip


def launch(
    args: argparse.Namespace, scenario: Scenario, script: list[str], log: Path, nodes: SimulatedNodes | None
) -> int:
    """`deepspeed [--num_gpus N | --hostfile H] SCRIPT ...` as the scenario launches; the exit code."""
    if scenario.nodes > 1:
        assert nodes is not None
        return nodes.launch(script, log=log, env=child_env(args))
    launcher = [
        str(VENV_BIN / "deepspeed"),
        "--num_gpus",
        str(scenario.ranks),
        "--master_port",
        str(args.port),
    ]
    with log.open("w") as out:
        done = subprocess.run(
            [*launcher, *script], cwd=REPO, env=child_env(args), stdout=out, stderr=subprocess.STDOUT
        )
    return done.returncode


def run_trainer(
    args: argparse.Namespace, scenario: Scenario, workdir: Path, round_: int, nodes: SimulatedNodes | None
) -> dict[str, Any]:
    config = bench_config(args, workdir, scenario)
    name = f"{scenario.name}-r{round_}"
    log = workdir / f"{name}.log"
    run_dir = nodes.run_dir(name) if nodes is not None and scenario.nodes > 1 else workdir / name
    code = launch(args, scenario, train_flags(args, scenario, config, run_dir), log, nodes)
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"the trainer failed in scenario {scenario.name} (exit {code}):\n{tail}")
    if nodes is not None and scenario.nodes > 1:
        run_dir = nodes.readable(run_dir)
    return trainer_figures(args, scenario, run_dir)


def probe_link(
    args: argparse.Namespace, scenario: Scenario, workdir: Path, nodes: SimulatedNodes | None
) -> dict[str, Any]:
    """benchmarks/linkprobe.py through the scenario's launcher: its ranks' all-reduce bandwidth."""
    log = workdir / f"{scenario.name}-linkprobe.log"
    code = launch(args, scenario, ["benchmarks/linkprobe.py", "--mib", str(args.probe_mib)], log, nodes)
    text = log.read_text(errors="replace")
    found = [line.split("LINKPROBE ", 1)[1] for line in text.splitlines() if "LINKPROBE " in line]
    if code != 0 or not found:
        raise SystemExit(f"the link probe failed in scenario {scenario.name} (exit {code}):\n{text[-3000:]}")
    return dict(json.loads(found[-1]))


def trainer_figures(args: argparse.Namespace, scenario: Scenario, run_dir: Path) -> dict[str, Any]:
    """What one trainer run measured, from its run directory."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    train = [
        r
        for r in map(json.loads, lines)
        if r["type"] == "train" and r["step"] - args.log_every >= scenario.warmup
    ]
    run = json.loads((run_dir / "run.json").read_text())
    ran = json.loads((run_dir / "run.ds_config.json").read_text())  # as resolved and handed to DeepSpeed
    stage = int(ran.get("zero_optimization", {}).get("stage", 0))  # one rank: 0 for a JSON's 1 or 2
    ranks = json.loads((run_dir / "rank_stats.json").read_text())["ranks"]
    if not train:
        raise SystemExit(
            f"{run_dir}: no train record after the warm-up "
            f"(steps {scenario.steps}, warm-up {scenario.warmup})"
        )
    breakdown = {}
    for timer in TIMERS:  # the median step of each rank after warm-up, averaged over ranks
        per_rank = [
            statistics.median(r["timers_ms"][timer][scenario.warmup :])
            for r in ranks
            if r["timers_ms"].get(timer)
        ]
        if per_rank:
            breakdown[timer] = statistics.fmean(per_rank)
    return {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in train),
        "tflops": statistics.median(r["tflops"] for r in train),
        "mfu": statistics.median(r["mfu"] for r in train),
        "step_ms": 1000 * statistics.median(r["step_time"] for r in train),
        "window_rates": [r["tokens_per_s"] for r in train],
        "breakdown_ms": breakdown,
        "first_step_extra_s": first_step_extra(ranks[0]["timers_ms"], scenario.warmup),
        "ranks": [{k: r[k] for k in ("rank", "node", "threads", "memory")} for r in ranks],
        "zero_stage": stage,
        "run": {k: run[k] for k in ("parameters", "peak_flops", "peak_flops_how", "model", "hardware")},
    }


def first_step_extra(timers_ms: dict[str, list[float]], warmup: int) -> float | None:
    """Seconds the first step took beyond a measured one (rank 0's timers): with --compile, the
    compilation of the training graphs. None without timers."""
    columns = [timers_ms[t] for t in TIMERS if timers_ms.get(t)]
    if not columns or len(columns[0]) <= warmup:
        return None
    steps = [sum(step) for step in zip(*columns, strict=True)]
    return (steps[0] - statistics.median(steps[warmup:])) / 1000


def run_baseline(args: argparse.Namespace, kind: str, ranks: int, config: Path) -> dict[str, Any]:
    base = kind.removesuffix("-compiled")
    flags = [
        base, *(["--compile"] if base != kind else []), *model_flags(args),
        "--micro-batch", str(args.micro_batch), "--precision", args.precision,
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--log-every", str(args.log_every),
        "--data-cache", str(args.data_cache),
    ]  # fmt: skip
    if base == "accelerate":  # its DeepSpeed plugin on the trainer's JSON (the same copy, timers on)
        cmd = [
            str(VENV_BIN / "accelerate"), "launch", "--use_deepspeed", f"--deepspeed_config_file={config}",
            f"--num_processes={ranks}", "--num_machines=1", f"--main_process_port={args.port}",
            "-m", "benchmarks.baselines", *flags,
        ]  # fmt: skip
    elif base == "ddp":
        cmd = [str(VENV_BIN / "torchrun"), "--nproc_per_node", str(ranks), "--master_port", str(args.port)]
        cmd += ["-m", "benchmarks.baselines", *flags]
    else:
        cmd = [sys.executable, "-m", "benchmarks.baselines", *flags]
    done = subprocess.run(cmd, cwd=REPO, env=child_env(args), capture_output=True, text=True)
    found = [line for line in done.stdout.splitlines() if line.startswith("BASELINE ")]
    if done.returncode != 0 or not found:
        raise SystemExit(f"the {kind} baseline failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(found[-1].removeprefix("BASELINE "))
    rate = statistics.median(result["window_rates"])
    extra = result["first_step_s"] - result["tokens_per_step"] / rate
    return {"tokens_per_s": rate, "first_step_extra_s": extra, **result}


class SimulatedNodes:
    """Two nodes on this machine (tests/multinode/cluster.py), or the user's hostfile."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.cluster: Any = None
        self.env_file = workdir / "cluster" / "deepspeed_env"
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> SimulatedNodes:
        if self.args.hostfile is None:
            from tests.multinode.cluster import Cluster, netns_problem

            problem = netns_problem()
            if problem:
                raise SystemExit(f"multi-node: no --hostfile, and simulated nodes cannot run here: {problem}")
            self.cluster = self.stack.enter_context(
                Cluster(self.workdir / "cluster", nodes=2, cpus=node_cpus(2))
            )
            # as docs/multinode.md: the preflight on node0 writes .deepspeed_env for the remote ranks
            preflight = (
                f"cd {REPO} && {sys.executable} -m llm.preflight --hostfile {self.hostfile()} "
                f"--deepspeed {self.args.deepspeed} --master-port {self.args.port} "
                f"--run-dir {self.cluster.local} "
                "--min-free-gb 0 --write-env --socket-ifname eth0"
            )
            env = {**child_env(self.args), "DS_ENV_FILE": str(self.env_file)}
            self.cluster.sh(0, preflight, env=env, timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def hostfile(self) -> Path:
        if self.cluster is not None:
            return Path(self.cluster.hostfile(slots=self.args.slots))
        return Path(self.args.hostfile)

    def run_dir(self, name: str) -> Path:
        """Where rank 0 writes: node0's own disk for simulated nodes; else a run folder here."""
        if self.cluster is not None:
            return Path(self.cluster.local) / name
        return self.workdir / name

    def readable(self, run_dir: Path) -> Path:
        if self.cluster is not None:
            return Path(self.cluster.disk(0)) / run_dir.name
        return run_dir

    def launch(self, flags: list[str], *, log: Path, env: dict[str, str]) -> int:
        hostfile = str(self.hostfile())
        launcher = [str(VENV_BIN / "deepspeed"), "--hostfile", hostfile, "--master_port", str(self.args.port)]
        if self.cluster is None:
            with log.open("w") as out:
                return subprocess.run(
                    [*launcher, *flags], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
                ).returncode
        env = {**env, "DS_ENV_FILE": str(self.env_file)}
        proc = self.cluster.popen(0, " ".join(launcher + flags), env=env, log=log, cwd=REPO)
        return int(proc.wait(timeout=3600))


def node_cpus(nodes: int) -> list[str] | None:
    """Each simulated node its own share of this machine's CPUs (taskset lists), as separate machines
    would have; None (shared) where there are fewer CPUs than nodes."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < nodes:
        return None
    share = len(cpus) // nodes
    return [",".join(str(c) for c in cpus[i * share : (i + 1) * share]) for i in range(nodes)]


# -- the whole run ---------------------------------------------------------------------------------
def plan(args: argparse.Namespace) -> list[Scenario]:
    stage = args.zero_stage
    out = []
    for name in args.scenarios:
        if name == "single":
            out.append(Scenario("single", 1, 1, stage, args.warmup, args.steps))
        elif name == "multi-rank":
            out.append(Scenario("multi-rank", args.ranks, 1, stage, args.warmup, args.steps))
        else:
            # a hostfile's slots, or --slots on each of two simulated nodes
            slots = [h.slots for h in args.hosts] if args.hosts else [args.slots] * 2
            out.append(Scenario("multi-node", sum(slots), len(slots), stage, args.warmup, args.steps))
    if args.compile:
        out.append(Scenario("compiled", 1, 1, stage, args.warmup, args.steps, compile=True))
    if args.overlap_comm:
        out += [
            Scenario(name, args.ranks, 1, 2, args.warmup, args.steps, zero_options=tuple(options.items()))
            for name, options in overlap_variants(args.bucket_elements).items()
        ]
    out += [
        # for memory: one window after one window of warm-up (a peak is reached within a step or two)
        Scenario(f"zero{z}", args.ranks, 1, z, args.log_every, args.log_every)
        for z in args.zero_stages
        if not (z == stage and "multi-rank" in args.scenarios) and not (z == 2 and args.overlap_comm)
    ]
    return out


def overlap_variants(bucket_elements: int) -> dict[str, dict[str, Any]]:
    """--overlap-comm's ZeRO-2 runs: without overlap, with it, and with it on smaller buckets (more
    reductions in flight during backward, each smaller). Without `zero2-no-overlap` in the same run the
    other two have nothing to be compared with; it also stands for --zero-stages 2's memory run."""
    buckets = {"reduce_bucket_size": bucket_elements, "allgather_bucket_size": bucket_elements}
    return {
        "zero2-no-overlap": {"overlap_comm": False},
        "zero2-overlap": {"overlap_comm": True},
        "zero2-overlap-buckets": {"overlap_comm": True, **buckets},
    }


def run_order(scenarios: list[Scenario], round_: int) -> list[tuple[Scenario, str | None]]:
    """The runs of one round: each scenario's trainer (None) then its baselines, scenario after scenario;
    every other round in reverse. A machine that speeds up or slows down during a run (this one drifts
    by 5-10% over minutes) then favours no run: alternating the order cancels a steady drift over
    each pair of rounds, where a fixed order would always give it to whatever ran last."""
    order = [(s, kind) for s in scenarios for kind in (None, *s.baselines)]
    return order[::-1] if round_ % 2 else order


def measure(args: argparse.Namespace, scenarios: list[Scenario], workdir: Path) -> dict[str, Any]:
    trainer: dict[str, list[dict[str, Any]]] = {s.name: [] for s in scenarios}
    baselines: dict[tuple[str, str], list[dict[str, Any]]] = {}
    links: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        nodes = None
        if any(s.nodes > 1 for s in scenarios):
            nodes = stack.enter_context(SimulatedNodes(args, workdir))
        for round_ in range(args.rounds):
            for s, kind in run_order(scenarios, round_):
                if kind is None:
                    where = f"{s.ranks} rank(s) on {s.nodes} node(s)"
                    print(f"round {round_ + 1}: {s.name}: the trainer, {where} ...", flush=True)
                    trainer[s.name].append(run_trainer(args, s, workdir, round_, nodes))
                    if round_ == 0 and s.name in ("multi-rank", "multi-node"):
                        print(f"{s.name}: the link probe ...", flush=True)
                        links[s.name] = probe_link(args, s, workdir, nodes)
                    continue
                print(f"round {round_ + 1}: {s.name}: baseline {kind} ...", flush=True)
                config = bench_config(args, workdir, s, s.ranks)
                baselines.setdefault((s.name, kind), []).append(run_baseline(args, kind, s.ranks, config))
    return {"trainer": trainer, "baselines": baselines, "links": links}


def summarise(
    args: argparse.Namespace, scenarios: list[Scenario], measured: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in scenarios:
        rounds = measured["trainer"][s.name]
        first = rounds[0]
        tokens = statistics.median(r["tokens_per_s"] for r in rounds)
        row: dict[str, Any] = {
            "ranks": s.ranks, "nodes": s.nodes, "zero_stage": first["zero_stage"],
            "json_zero_stage": s.zero_stage, "warmup_steps": s.warmup,
            "steps": s.steps,
            "tokens_per_s": tokens, "tokens_per_s_per_device": tokens / s.ranks,
            "tflops": statistics.median(r["tflops"] for r in rounds),
            "mfu": statistics.median(r["mfu"] for r in rounds),
            "step_ms": statistics.median(r["step_ms"] for r in rounds),
            "rounds_tokens_per_s": [r["tokens_per_s"] for r in rounds],
            "breakdown_ms": {
                t: statistics.median(r["breakdown_ms"][t] for r in rounds) for t in first["breakdown_ms"]
            },
            "compiled": s.compile,
            "zero_options": dict(s.zero_options),
            "first_step_extra_s": _median_or_none(r["first_step_extra_s"] for r in rounds),
            "peak_memory_bytes": _peaks(rounds, s.ranks),
            "start_memory_bytes": [first["ranks"][i]["memory"].get("start_bytes") for i in range(s.ranks)],
            "nodes_of_ranks": [r["node"] for r in first["ranks"]],
            "peak_flops": first["run"]["peak_flops"],
            "parameters": first["run"]["parameters"],
            "baselines": {},
        }  # fmt: skip
        row["breakdown_ms"]["other"] = max(0.0, row["step_ms"] - sum(row["breakdown_ms"].values()))
        flops_per_token = row["tflops"] * 1e12 / tokens if tokens else 0.0
        for kind in s.baselines:
            runs = measured["baselines"][(s.name, kind)]
            rate = statistics.median(r["tokens_per_s"] for r in runs)
            row["baselines"][kind] = {
                "tokens_per_s": rate,
                "rounds_tokens_per_s": [r["tokens_per_s"] for r in runs],
                "mfu": rate * flops_per_token / row["peak_flops"] if row["peak_flops"] else 0.0,
                "peak_memory_bytes": _peaks(runs, s.ranks),
                "compiled": all(r["compiled"] for r in runs),
                "first_step_extra_s": statistics.median(r["first_step_extra_s"] for r in runs),
                "ours_over_baseline": tokens / rate,
            }
        row["link"] = measured["links"].get(s.name)
        out[s.name] = row
    single = out.get("single")
    for row in out.values():
        row["scaling_efficiency"] = (
            row["tokens_per_s"] / (row["ranks"] * single["tokens_per_s"]) if single else None
        )
    return out


def _median_or_none(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _peaks(runs: list[dict[str, Any]], ranks: int) -> list[int]:
    """Each rank's peak memory, the largest over rounds."""
    return [max(r["ranks"][i]["memory"]["peak_bytes"] for r in runs) for i in range(ranks)]


def theory_bytes_per_parameter(stage: int, ranks: int, precision: str) -> float:
    """Model states per parameter with Adam (ZeRO paper, §3): weights W, gradients G and optimizer
    states K (fp32 m and v, plus an fp32 master copy when training in fp16/bf16); stage 1 shards K,
    stage 2 also G, stage 3 also W, each across `ranks`."""
    w = g = 2 if precision in ("fp16", "bf16") else 4
    k = 12 if precision in ("fp16", "bf16") else 8
    if stage == 0:
        return w + g + k
    if stage == 1:
        return w + g + k / ranks
    if stage == 2:
        return w + (g + k) / ranks
    return (w + g + k) / ranks


def environment(args: argparse.Namespace, scenarios: list[Scenario]) -> dict[str, Any]:
    import deepspeed
    import torch

    from llm.version import code_version

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if args.gpu else []
    configs = {
        str(
            args.deepspeed.relative_to(REPO) if args.deepspeed.is_relative_to(REPO) else args.deepspeed
        ): args.deepspeed
    }
    if args.hostfile:
        configs[str(args.hostfile)] = args.hostfile
    multi_node = any(s.nodes > 1 for s in scenarios)
    return {
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpus": gpus,
        "gpu_count": len(gpus),
        "driver": _nvidia_driver() if gpus else None,
        "cuda": torch.version.cuda if gpus else None,
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
        "python": platform.python_version(),
        "code": code_version(),
        "interconnect": _interconnect(args) if multi_node else "one node (shared memory)",
        "hostfile": args.hostfile.read_text()
        if args.hostfile
        else ("simulated: node0 slots=1, node1 slots=1" if multi_node else None),
        "files": {
            name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "content": p.read_text()}
            for name, p in configs.items()
        },
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
    return None


def _interconnect(args: argparse.Namespace) -> str:
    if args.hostfile is None:
        cpus = node_cpus(2)
        pinned = (
            "each node pinned to its own CPUs ("
            + "; ".join(f"node{i}: {c}" for i, c in enumerate(cpus))
            + ")"
            if cpus
            else "the nodes share the CPUs"
        )
        return (
            "simulated nodes: veth pairs on one Linux bridge between network namespaces (same host, no "
            f"wire); {pinned}"
        )
    iface = os.environ.get("NCCL_SOCKET_IFNAME") or os.environ.get("GLOO_SOCKET_IFNAME")
    speed = None
    if iface:
        with contextlib.suppress(OSError):
            speed = Path(f"/sys/class/net/{iface}/speed").read_text().strip()
    efa = "EFA (FI_PROVIDER=efa)" if os.environ.get("FI_PROVIDER") == "efa" else None
    parts = [
        p
        for p in (f"socket interface {iface}" if iface else None, f"{speed} Mbit/s" if speed else None, efa)
        if p
    ]
    return ", ".join(parts) or "not recorded (set NCCL_SOCKET_IFNAME to record the interface)"


def result_stem(env: dict[str, Any], when: time.struct_time) -> str:
    sha = (env["code"].get("git_sha") or "nogit")[:8] + ("-dirty" if env["code"].get("dirty") else "")
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in env["host"])
    return f"{time.strftime('%Y-%m-%d-%H%M', when)}-{host}-{sha}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenarios", default="single,multi-rank", help=f"comma-separated: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--model", default="tiny", help="a model preset (launch/train.py --model)")
    for name in SHAPE_FLAGS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"override the preset's {name}")
    parser.add_argument(
        "--deepspeed",
        type=Path,
        help="DeepSpeed JSON (default: ds_configs/3090.json on a GPU, ds_configs/cpu.json on a CPU)",
    )
    parser.add_argument("--steps", type=int, default=50, help="measured steps per run, after warm-up")
    parser.add_argument("--warmup", type=int, default=10, help="steps per run before measuring")
    parser.add_argument(
        "--log-every", type=int, default=5, help="steps per timing window (divides --steps and --warmup)"
    )
    parser.add_argument(
        "--micro-batch", type=int, help="sequences per rank per micro-step (default: the JSON's)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="interleaved rounds, every other one in reverse order; figures are medians over rounds",
    )  # fmt: skip
    parser.add_argument(
        "--ranks", type=int, help="ranks of the multi-rank scenario (default: every GPU, or 2 on a CPU)"
    )
    parser.add_argument(
        "--hostfile", type=Path, help="the multi-node scenario's hostfile (default: 2 simulated nodes)"
    )
    parser.add_argument("--slots", type=int, default=1, help="ranks per simulated node")
    parser.add_argument(
        "--zero-stages",
        default="",
        help="also run the multi-rank scenario at these ZeRO stages (memory per rank), e.g. 0,1,2,3",
    )
    parser.add_argument(
        "--probe-mib",
        type=int,
        default=64,
        help="all-reduce size of the link probe (benchmarks/linkprobe.py)",
    )
    parser.add_argument("--port", type=int, default=29561, help="master port of every launch")
    parser.add_argument(
        "--data-cache",
        type=Path,
        default=REPO / "data" / "cache",
        help="prepared tokens (the trainer's cache)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="folder for the JSON, the report and its plots"
    )
    parser.add_argument(
        "--readme", type=Path, default=README, help="the table of recorded results to add a row to"
    )
    parser.add_argument("--no-record", action="store_true", help="leave the README's table alone")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU exists")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="add the `compiled` scenario: one rank with the trainer's --compile, against the eager plain "
        "loop and nanoGPT's recipe compiled, and each one's compile time",
    )
    parser.add_argument(
        "--overlap-comm",
        action="store_true",
        help="add ZeRO-2 runs of the multi-rank shape without and with overlap_comm, and with it on "
        "--bucket-elements buckets: the effect of overlapping the gradient reduction with backward",
    )
    parser.add_argument(
        "--bucket-elements",
        type=int,
        default=5_000_000,
        help="reduce/allgather bucket size of --overlap-comm's small-bucket run (DeepSpeed's default: 5e8)",
    )
    args = parser.parse_args(argv)
    import torch

    args.gpu = torch.cuda.is_available() and not args.cpu
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown or not args.scenarios:
        parser.error(
            f"--scenarios: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(SCENARIOS)}"
        )
    try:
        args.zero_stages = [int(z) for z in args.zero_stages.split(",") if z.strip()]
    except ValueError:
        parser.error(f"--zero-stages {args.zero_stages!r}: expected stages 0-3, e.g. 0,1,2,3")
    if any(z not in (0, 1, 2, 3) for z in args.zero_stages):
        parser.error(f"--zero-stages {args.zero_stages}: ZeRO stages are 0, 1, 2 and 3")
    if args.steps % args.log_every or args.warmup % args.log_every or args.steps < args.log_every:
        parser.error(
            f"--steps ({args.steps}) and --warmup ({args.warmup}) must be multiples of --log-every "
            f"({args.log_every})"
        )
    if args.deepspeed is None:
        args.deepspeed = REPO / "ds_configs" / ("3090.json" if args.gpu else "cpu.json")
    args.deepspeed = args.deepspeed.resolve()
    try:  # the checks the trainer makes of its JSON and the launcher's hostfile, with their messages
        settings = load_ds_config(
            args.deepspeed, world_size=1, cuda_available=args.gpu, max_steps=args.warmup + args.steps
        )
        args.hosts = read_hostfile(args.hostfile) if args.hostfile else None
    except UsageError as err:
        parser.error(str(err))
    # the JSON's stage goes to every scenario and baseline; the trainer on one rank runs its own choice
    args.precision, args.zero_stage = settings.precision, settings.json_zero_stage
    if args.micro_batch is None:
        args.micro_batch = settings.micro_batch
    if args.ranks is None:
        args.ranks = torch.cuda.device_count() if args.gpu else 2
    if args.bucket_elements <= 0:
        parser.error(f"--bucket-elements {args.bucket_elements}: a bucket holds at least one element")
    if args.overlap_comm and args.ranks < 2:
        parser.error(
            f"--overlap-comm: {args.ranks} rank(s) have no gradient reduction to overlap; "
            "give --ranks 2 or more (on a CPU ranks share its cores)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    from benchmarks import project, report

    args = parse_args(argv)
    when = time.localtime()
    scenarios = plan(args)
    env = environment(args, scenarios)
    workdir = Path(os.environ.get("BENCH_WORKDIR") or (Path("/tmp") / f"llm-bench-{os.getpid()}"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        measured = measure(args, scenarios, workdir)
    finally:
        if not os.environ.get("BENCH_WORKDIR"):
            shutil.rmtree(workdir, ignore_errors=True)
    env["load_after"] = [round(x, 2) for x in os.getloadavg()]
    scen = summarise(args, scenarios, measured)
    first = next(iter(scen.values()))
    result = {
        "what": "the trainer through the real launcher, one device against many, with baselines in the "
        "same run",
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M", when),
        "environment": env,
        "device": env["gpus"][0] if env["gpus"] else f"CPU: {env['cpu']}",
        "precision": args.precision,
        "model": {"preset": args.model, **first_model(measured), "parameters": first["parameters"]},
        "micro_batch": args.micro_batch,
        "warmup_steps": args.warmup,
        "steps": args.steps,
        "log_every": args.log_every,
        "rounds": args.rounds,
        "scenarios": scen,
        "memory_theory": {
            name: {
                "bytes_per_parameter": theory_bytes_per_parameter(
                    row["zero_stage"], row["ranks"], args.precision
                ),
                "model_states_bytes": theory_bytes_per_parameter(
                    row["zero_stage"], row["ranks"], args.precision
                )
                * row["parameters"],
            }
            for name, row in scen.items()
        },
    }
    result["projection_check"] = project.check(result)
    stem = result_stem(env, when)
    written = report.write(result, args.out, stem)
    if not args.no_record:
        report.record(result, args.readme, written["md"])
    print(written["md"].read_text())
    print(f"wrote {', '.join(str(p) for p in written.values())}")
    return 0


def first_model(measured: dict[str, Any]) -> dict[str, Any]:
    rounds = next(iter(measured["trainer"].values()))
    return dict(rounds[0]["run"]["model"])


if __name__ == "__main__":
    raise SystemExit(main())
