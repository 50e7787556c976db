"""The report of benchmarks/trainer_vs_plain.py: OUT/trainer_vs_plain.json and a Markdown table beside it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

LABELS = {"plain": "plain loop (our GPT)", "nanogpt": "nanoGPT recipe"}


def label(name: str) -> str:
    """`trainer_zero1` -> `trainer, ZeRO-1`, `trainer_zero0_forloop` -> `trainer, ZeRO-0, for-loop AdamW`,
    `trainer_zero0_dashboard` -> `trainer, ZeRO-0, reporting to the dashboard`."""
    if name in LABELS:
        return LABELS[name]
    stage, *variants = name.removeprefix("trainer_zero").split("_")
    words = {"forloop": "for-loop AdamW", "dashboard": "reporting to the dashboard"}
    return ", ".join([f"trainer, ZeRO-{stage}", *(words[v] for v in variants)])


def write_report(result: dict[str, Any], out: Path, *, data_prep: Path) -> str:
    """Write OUT/trainer_vs_plain.{json,md}; returns the Markdown (main prints it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "trainer_vs_plain.json").write_text(json.dumps(result, indent=2) + "\n")
    text = "\n".join([*_summary(result), *_profile(result.get("profile")), *_data_prep(data_prep)]) + "\n"
    (out / "trainer_vs_plain.md").write_text(text)
    return text


def _reporter_cost(runs: dict[str, Any]) -> list[str]:
    on = {n: r for n, r in runs.items() if "over_reporter_off" in r}
    costs = [f"{label(n)}: **{r['over_reporter_off']:.3f}**" for n, r in on.items()]
    if not costs:
        return []
    return [
        "The dashboard's cost: tokens/s with every record relayed to a real sidecar (`python -m llm.sidecar` "
        "on loopback, `--dashboard URL`) ÷ the same stage without: " + "; ".join(costs) + " (goal ≥ 0.99).",
        "",
    ]


def _summary(r: dict[str, Any]) -> list[str]:
    runs = r["runs"]
    rows = []
    for name, run in runs.items():
        logged, mfu = run.get("tokens_per_s_as_logged"), run["mfu"]
        rows.append(
            f"| {label(name)} | {run['tokens_per_s']:,.0f} | "
            f"{'—' if logged is None else f'{logged:,.0f}'} | {'—' if mfu is None else f'{mfu:.1%}'} | "
            f"**{run['over_plain']:.3f}** | **{run['over_nanogpt']:.3f}** |"
        )
    model = r["model"]
    fused = "fused" if r["nanogpt_fused_adamw"] else "for-loop (no fused kernel here)"
    return [
        "# Trainer vs a plain PyTorch loop and nanoGPT's recipe (CPU, fp32, 1 process)",
        "",
        f"Measured {r['date']} by `.venv/bin/python {r['command']}` on {r['machine']}, torch {r['torch']}, "
        f"{r['torch_threads']} threads. Load average (1, 5, 15 min) before {r['load_before']}, after "
        f"{r['load_after']}: this machine is shared, so the figures move with what else runs.",
        "",
        f"Model {model['n_layer']} layers × {model['n_embd']} wide, {model['n_head']} heads, T = "
        f"{model['block_size']}, vocab {model['vocab_size']} ({r['parameters'] / 1e6:.2f} M parameters), "
        f"micro-batch {r['micro_batch']}, {r['dtype']}.",
        "",
        "| loop | tokens/s | trainer's own log | MFU | ÷ plain | ÷ nanoGPT |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        *_reporter_cost(runs),
        f"Each figure is the median over {r['rounds']} interleaved rounds of the median window rate "
        f"({r['log_every']} step(s) a window, closed after `loss.item()`) over {r['steps_per_round']} steps "
        f"after {r['warmup_steps']} warm-up steps. The trainer's tokens/s is wall clock between its "
        "consecutive train records (all its per-step work counts); its own logged rate, whose window "
        "leaves out the record's writing, is beside it. Rounds: "
        + "; ".join(f"{label(n)} {', '.join(f'{x:,.0f}' for x in run['rounds'])}" for n, run in runs.items())
        + ".",
        "",
        f"MFU is against the fp32 peak measured on this machine: {r['peak_flops'] / 1e9:,.0f} GFLOP/s "
        f"({_peak_how(r['peak_how'])}); {r['flops_per_token'] / 1e6:.1f} M FLOPs per token (6N + 12·L·T·C).",
        "",
        "The loops: *plain* is our GPT (exact GELU, the default) with torch AdamW (for-loop), clipping 1.0; "
        "*nanoGPT "
        "recipe* is benchmarks/nanogpt_recipe.py (its own model: exact GELU; AdamW "
        f"{fused}, decay on 2-D weights, clipping 1.0, `zero_grad(set_to_none=True)`, LR set each step); "
        "the *trainer* is `launch/train.py` with ds_configs/cpu.json at this batch (torch AdamW through "
        "DeepSpeed, fused, warm-up + cosine LR), one process"
        + (
            '; *for-loop AdamW* rows set `"fused": false` in that JSON\'s `optimizer.params`.'
            if any(name.endswith("_forloop") for name in runs)
            else "."
        ),
        "",
    ]


def _peak_how(how: Any) -> str:
    if not isinstance(how, dict):
        return str(how)
    parts = [f"{how.get('source', '?')} on {how.get('device', 'this CPU')}"]
    if how.get("cached_flops"):
        parts.append(f"best cached {how['cached_flops'] / 1e9:,.0f}")
    if how.get("measured_flops"):
        parts.append(f"measured now {how['measured_flops'] / 1e9:,.0f}")
    return ", ".join(parts)


def _profile(profile: dict[str, Any] | None) -> list[str]:
    if not profile:
        return ["Profile: not run (add `--profile`).", ""]
    names = list(profile)
    steps = profile[names[0]]["steps"]
    phases: list[str] = []
    for p in profile.values():
        phases += [k for k in p["phases_ms"] if k not in phases]
    header = "| | " + " | ".join(label(n) for n in names) + " |"
    rule = "| --- |" + " ---: |" * len(names)

    def row(title: str, values: list[float | None]) -> str:
        return f"| {title} | " + " | ".join("—" if v is None else f"{v:.1f}" for v in values) + " |"

    lines = [
        "## Where a step's time goes (torch.profiler, CPU time, ms per step)",
        "",
        f"{steps} steps of each loop after warm-up, `--log-every 1` (every step logs). Phases are the "
        "loops' own pieces, inclusive; *outside phases* is Python between them.",
        "",
        header,
        rule,
        row("**whole step**", [profile[n]["step_ms"] for n in names]),
        *(row(ph, [profile[n]["phases_ms"].get(ph) for n in names]) for ph in phases),
        row("outside phases", [profile[n]["outside_phases_ms"] for n in names]),
        row("all ops, self time", [profile[n]["ops_self_ms"] for n in names]),
        "",
        "Top ops by self CPU time (ms per step; the union of each loop's top 8):",
        "",
        header,
        rule,
    ]
    ops: list[str] = []
    for p in profile.values():
        ops += [o["op"] for o in p["top_ops"][:8] if o["op"] not in ops]
    by_op = {n: {o["op"]: o["self_ms"] for o in profile[n]["top_ops"]} for n in names}
    lines += [row(f"`{op}`", [by_op[n].get(op) for n in names]) for op in ops]
    return [*lines, ""]


def _data_prep(path: Path) -> list[str]:
    """The MB/s line of benchmarks/data_prep.py's own report, when it has one."""
    lead_fills = "Data preparation: **not measured yet; the lead fills this line** (benchmarks/data_prep.py)."
    if not path.exists():
        return [lead_fills, ""]
    d = json.loads(path.read_text())
    measured = re.search(r"Measured (\S+ \S+)", _read(path.with_suffix(".md")))
    when = d.get("date") or (measured.group(1) if measured else "undated")
    try:
        line = (
            f"Data preparation ([data_prep.md](data_prep.md), measured {when} by `{d['command']}`, load "
            f"{d['load_average']:.1f}): our encode phase {d['ours_encode_mb_per_s']:.2f} MB/s against the "
            f"`tokenizers` library's raw encode {d['raw_encode_mb_per_s']:.2f} MB/s, **{d['ratio']:.2f}×** "
            f"({d['cpu_ratio']:.2f}× per CPU-second); the whole preparation {d['prepare_mb_per_s']:.2f} MB/s."
        )
    except KeyError:
        return [lead_fills, ""]
    return [line, ""]


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
