"""A projection (not a measurement) of step time and scaling efficiency on hardware we may not have,
from a measured MFU and the bytes each ZeRO stage moves per step; checked against measured runs.

    .venv/bin/python -m benchmarks.project --gpus 1x3090 --nodes 4 --gpus-per-node 8 --link 100Gbit \\
        [--model gpt2-small] [--micro-batch 8] [--zero-stage 1] [--precision fp16] [--intra-link 16GB/s] \\
        [--mfu 0.4 | --result benchmarks/results/<...>.json]

`--gpus NxDEVICE` names the device (3090, 4090, A100, H100, H200, L4, L40S: llm.telemetry.mfu's data-sheet
peaks) and N devices per node; `--gpus-per-node` overrides N. The formulas (docs/benchmarks.md):

    F          training FLOPs per token (6N + 12·L·C·T, llm.model.gpt.GPT.flops_per_token)
    t_compute  = micro_batch · T · accumulation · F / (MFU · peak)                 per rank
    V          = k · Ψ · b      Ψ parameters, b bytes per gradient element (2 in fp16/bf16, 4 in fp32),
                                k = 1 for ZeRO 0-2 (one all-reduce, or reduce-scatter + all-gather),
                                k = 1.5 for ZeRO-3 (parameters gathered again for backward)
    t_comm     = V · [2(G−1)/G ÷ B_intra + 2(n−1)/n ÷ B_inter]    hierarchical ring all-reduce: G devices
                                per node share B_intra (bus bandwidth), n nodes share each node's B_inter
    t_step     = t_compute + (1 − overlap) · t_comm
    efficiency = t_compute / t_step        tokens/s = ranks · micro_batch · T · accumulation / t_step

MFU comes from `--mfu`, or from the single-device scenario of a recorded result (`--result`, default
the newest in benchmarks/results/): the device it was measured on is printed beside it, because an MFU
measured on a CPU says little about a GPU. Every run ends with the check: the same formulas applied to
that result's measured multi-rank and multi-node runs (their ranks' measured peaks, the single run's
MFU, the link probe's bus bandwidth) against their measured step times, with the error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# nominal bus bandwidth between the GPUs of one node when --intra-link is not given (bytes/s): an
# assumption printed with every projection. RTX cards: PCIe 4.0 x16 is 32 GB/s per direction, and
# NCCL over PCIe without P2P (NCCL_P2P_DISABLE=1 on GeForce) reaches roughly half; SXM parts: NVLink.
INTRA_LINK = {
    "3090": 16e9,
    "4090": 16e9,
    "L4": 16e9,
    "L40S": 16e9,
    "A100": 240e9,
    "H100": 360e9,
    "H200": 360e9,
}
UNITS = {"gbit": 1e9 / 8, "gb": 1e9, "mbit": 1e6 / 8, "mb": 1e6}


def bandwidth(text: str) -> float:
    """'100Gbit', '100Gbit/s', '25GB/s', '400 Mbit' -> bytes per second."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(gbit|gb|mbit|mb)(?:ps|/s)?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a bandwidth such as 100Gbit, 25GB/s or 400Mbit")
    return float(match.group(1)) * UNITS[match.group(2)]


def device_peak(device: str, precision: str) -> tuple[str, float]:
    """The data-sheet peak of a GPU named by a short name ('3090', 'H100'): (full name, FLOP/s)."""
    from llm.telemetry.mfu import GPU_PEAK_TFLOPS

    wanted = device.lower()
    for name, peaks in GPU_PEAK_TFLOPS.items():
        if re.search(rf"\b{re.escape(wanted)}\b", name.lower()):
            return name, peaks[precision] * 1e12
    known = ", ".join(GPU_PEAK_TFLOPS)
    raise LookupError(f"--gpus: no data-sheet peak for {device!r}; known devices: {known}")


@dataclass(frozen=True)
class Setup:
    parameters: float  # Ψ
    flops_per_token: float  # F
    tokens_per_rank_step: int  # micro_batch · T · accumulation
    bytes_per_grad: int  # b
    zero_stage: int
    mfu: float
    peak: float  # FLOP/s of one rank's device
    ranks_per_node: int  # G
    nodes: int  # n
    intra: float  # B_intra, bytes/s
    inter: float  # B_inter, bytes/s
    overlap: float = 0.0

    @property
    def ranks(self) -> int:
        return self.ranks_per_node * self.nodes

    def compute_s(self) -> float:
        return self.tokens_per_rank_step * self.flops_per_token / (self.mfu * self.peak)

    def volume_bytes(self) -> float:
        return (1.5 if self.zero_stage == 3 else 1.0) * self.parameters * self.bytes_per_grad

    def comm_s(self) -> float:
        g, n = self.ranks_per_node, self.nodes
        intra = 2 * (g - 1) / g / self.intra if g > 1 else 0.0
        inter = 2 * (n - 1) / n / self.inter if n > 1 else 0.0
        return self.volume_bytes() * (intra + inter)

    def step_s(self) -> float:
        return self.compute_s() + (1 - self.overlap) * self.comm_s()

    def efficiency(self) -> float:
        return self.compute_s() / self.step_s()

    def tokens_per_s(self) -> float:
        return self.ranks * self.tokens_per_rank_step / self.step_s()


def newest_result(results: Path = RESULTS) -> Path | None:
    found = sorted(p for p in results.glob("*.json") if re.match(r"\d{4}-\d\d-\d\d-\d{4}-", p.name))
    return found[-1] if found else None


def check(result: dict[str, Any]) -> dict[str, Any]:
    """The formulas against a result's measured multi-rank and multi-node runs: predicted and measured
    step time and scaling efficiency, and the errors (predicted ÷ measured − 1)."""
    scen = result["scenarios"]
    single = scen.get("single")
    out: dict[str, Any] = {}
    if single is None:
        return out
    bytes_per_grad = 2 if result["precision"] in ("fp16", "bf16") else 4
    tokens = result["micro_batch"] * result["model"]["block_size"]
    flops_per_token = single["tflops"] * 1e12 / single["tokens_per_s"]
    for name in ("multi-rank", "multi-node"):
        row = scen.get(name)
        if row is None or not row.get("link"):
            continue
        busbw = row["link"]["busbw_bytes_per_s"]
        g = row["ranks"] // row["nodes"]
        setup = Setup(
            parameters=row["parameters"], flops_per_token=flops_per_token, tokens_per_rank_step=tokens,
            bytes_per_grad=bytes_per_grad, zero_stage=row["zero_stage"], mfu=single["mfu"],
            peak=row["peak_flops"] / row["ranks"], ranks_per_node=g, nodes=row["nodes"],
            intra=busbw, inter=busbw,
        )  # fmt: skip
        predicted_ms = 1000 * setup.step_s()
        predicted_eff = setup.tokens_per_s() / (row["ranks"] * single["tokens_per_s"])
        out[name] = {
            "compute_ms": 1000 * setup.compute_s(),
            "comm_ms": 1000 * setup.comm_s(),
            "predicted_step_ms": predicted_ms,
            "measured_step_ms": row["step_ms"],
            "step_error": predicted_ms / row["step_ms"] - 1,
            "predicted_efficiency": predicted_eff,
            "measured_efficiency": row["scaling_efficiency"],
            "busbw_bytes_per_s": busbw,
            "rank_peak_flops": setup.peak,
        }
    return out


def _mfu_source(args: argparse.Namespace) -> tuple[float, str, dict[str, Any] | None]:
    result = None
    path = args.result or newest_result()
    if path is not None and path.exists():
        result = json.loads(path.read_text())
    if args.mfu is not None:
        return args.mfu, "given (--mfu)", result
    if result is None or "single" not in result["scenarios"]:
        raise SystemExit(
            "no MFU: pass --mfu, or --result with a benchmark result that has a single scenario "
            "(python -m benchmarks.run --scenarios single,...)"
        )
    mfu = result["scenarios"]["single"]["mfu"]
    return mfu, f"measured on {result['device']} ({result['precision']}) in {path}", result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.project", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--gpus", default="1x3090", help="N devices per node and their kind: 1x3090, 8xH100")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, help="overrides the N of --gpus")
    parser.add_argument("--link", type=bandwidth, default=bandwidth("100Gbit"), help="between nodes")
    parser.add_argument("--intra-link", type=bandwidth, help="bus bandwidth between a node's devices")
    parser.add_argument("--model", default="gpt2-small", help="a model preset")
    parser.add_argument(
        "--vocab-size", type=int, default=8192, help="the tokenizer's (the trainer's default)"
    )
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=1, help="gradient accumulation steps")
    parser.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], default=1)
    parser.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default="fp16")
    parser.add_argument("--mfu", type=float, help="model FLOPs utilisation, 0-1 (default: from --result)")
    parser.add_argument("--result", type=Path, help="a benchmarks.run result (default: the newest recorded)")
    parser.add_argument("--overlap", type=float, default=0.0, help="share of communication hidden, 0-1")
    args = parser.parse_args(argv)
    match = re.fullmatch(r"(\d+)x(.+)", args.gpus)
    if not match:
        parser.error(f"--gpus {args.gpus!r}: expected COUNTxDEVICE, e.g. 1x3090 or 8xH100")
    args.count, args.device = int(match.group(1)), match.group(2)
    try:
        args.device_name, args.peak = device_peak(args.device, args.precision)
    except LookupError as err:
        parser.error(str(err))
    if args.mfu is not None and not 0 < args.mfu <= 1:
        parser.error(f"--mfu {args.mfu}: expected a fraction in (0, 1]")
    if not 0 <= args.overlap <= 1:
        parser.error(f"--overlap {args.overlap}: expected a fraction in [0, 1]")
    if args.result is not None and not args.result.is_file():
        parser.error(f"--result {args.result}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    from llm.model.config import from_preset
    from llm.model.gpt import GPT

    args = parse_args(argv)
    name, peak = args.device_name, args.peak
    mfu, mfu_how, result = _mfu_source(args)
    cfg = from_preset(args.model, vocab_size=args.vocab_size)
    intra = args.intra_link or next((v for k, v in INTRA_LINK.items() if k.lower() in name.lower()), 16e9)
    per_node = args.gpus_per_node or args.count

    def setup(g: int, n: int) -> Setup:
        return Setup(
            parameters=GPT.parameter_count(cfg), flops_per_token=GPT.flops_per_token(cfg),
            tokens_per_rank_step=args.micro_batch * cfg.block_size * args.accumulation,
            bytes_per_grad=2 if args.precision in ("fp16", "bf16") else 4, zero_stage=args.zero_stage,
            mfu=mfu, peak=peak, ranks_per_node=g, nodes=n, intra=intra, inter=args.link, overlap=args.overlap,
        )  # fmt: skip

    print("PROJECTION, not a measurement")
    print(
        f"  {args.model} ({GPT.parameter_count(cfg):,} parameters, "
        f"F = {GPT.flops_per_token(cfg):.4g} FLOPs/token), "
        f"{args.precision}, ZeRO-{args.zero_stage}, micro-batch {args.micro_batch} × {cfg.block_size}, "
        f"accumulation {args.accumulation}"
    )
    print(f"  device {name}: peak {peak / 1e12:g} TFLOP/s ({args.precision}, data sheet, dense)")
    print(f"  MFU {mfu:.2%}, {mfu_how}")
    print(
        f"  links: within a node {intra / 1e9:g} GB/s bus bandwidth"
        f"{' (assumed: pass --intra-link)' if args.intra_link is None else ''}; between nodes "
        f"{args.link / 1e9:g} GB/s; overlap {args.overlap:.0%}"
    )
    print("  t_step = t_compute + (1 - overlap) * t_comm;  t_compute = tokens * F / (MFU * peak);")
    print("  t_comm = k * Psi * b * [2(G-1)/G / B_intra + 2(n-1)/n / B_inter]")
    print()
    print("  | devices | t_compute (ms) | t_comm (ms) | t_step (ms) | tokens/s | efficiency |")
    print("  | --- | --- | --- | --- | --- | --- |")
    for g, n in dict.fromkeys([(1, 1), (per_node, 1), (per_node, args.nodes)]):
        s = setup(g, n)
        label = f"{n} node(s) × {g} {args.device}"
        print(
            f"  | {label} | {1000 * s.compute_s():,.1f} | {1000 * s.comm_s():,.1f} | "
            f"{1000 * s.step_s():,.1f} | "
            f"{s.tokens_per_s():,.0f} | {s.efficiency():.3f} |"
        )
    print()
    if result is None:
        print("check: no recorded result to check the formulas against (python -m benchmarks.run)")
        return 0
    checked = check(result)
    if not checked:
        print("check: the result has no multi-rank or multi-node run with a link probe to check against")
        return 0
    print(f"check against measured runs ({result['device']}, {result['date']}):")
    for scenario, c in checked.items():
        print(
            f"  {scenario}: predicted step {c['predicted_step_ms']:,.1f} ms "
            f"(compute {c['compute_ms']:,.1f} + "
            f"communication {c['comm_ms']:,.1f}), measured {c['measured_step_ms']:,.1f} ms: error "
            f"{c['step_error']:+.1%}; efficiency predicted {c['predicted_efficiency']:.3f}, measured "
            f"{c['measured_efficiency']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
