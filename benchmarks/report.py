"""The report of benchmarks/run.py: OUT/<stem>.json, OUT/<stem>.md and three PNG plots beside them,
and a row at the top of benchmarks/README.md's table of recorded results.

Every number in the Markdown comes from the JSON through `cell`, and every plot carries the values it
draws as JSON in its PNG `Description` text chunk, so a test can hold the report to the measurement.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GIB = 2**30
TIMER_LABELS = {
    "fwd": "forward",
    "bwd_inner": "backward",
    "bwd_allreduce": "gradient all-reduce",
    "step": "optimizer step",
    "other": "other",
}
# how each kind of figure is printed: its format, the unit it is divided by
FORMATS = {
    "tokens": ("{:,.1f}", 1.0),
    "tflops": ("{:.4f}", 1.0),
    "percent": ("{:.2f}%", 0.01),
    "ms": ("{:.1f}", 1.0),
    "gib": ("{:.3f}", GIB),
    "ratio": ("{:.3f}", 1.0),
    "signed": ("{:+.1f}", 1.0),
    "s": ("{:.2f}", 1.0),
}


def cell(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    fmt, unit = FORMATS[kind]
    return fmt.format(value / unit)


def write(result: dict[str, Any], out: Path, stem: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / f"{stem}.json",
        "md": out / f"{stem}.md",
        "throughput": out / f"{stem}-throughput.png",
        "memory": out / f"{stem}-memory.png",
        "breakdown": out / f"{stem}-breakdown.png",
    }
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    _plot_throughput(result, paths["throughput"])
    _plot_memory(result, paths["memory"])
    _plot_breakdown(result, paths["breakdown"])
    paths["md"].write_text(markdown(result, {k: p.name for k, p in paths.items()}))
    return paths


def scenario_label(name: str, row: dict[str, Any]) -> str:
    ranks = f"{row['ranks']} rank{'s' if row['ranks'] > 1 else ''}"
    where = f", {row['nodes']} nodes" if row["nodes"] > 1 else ""
    return f"{name} ({ranks}{where}, ZeRO-{row['zero_stage']})"


def markdown(result: dict[str, Any], files: dict[str, str]) -> str:
    env, scen = result["environment"], result["scenarios"]
    model = result["model"]
    code = env["code"]
    gpus = f", {env['gpu_count']} GPUs" if env["gpus"] else ""
    lines = [
        f"# Benchmark {result['date']}: {model['preset']} ({model['parameters']:,} parameters), "
        f"{result['precision']}, {result['device']}",
        "",
        f"`{result['command']}` at commit `{(code.get('git_sha') or '?')[:12]}`"
        f"{' (uncommitted changes)' if code.get('dirty') else ''} on {env['host']} "
        f"({env['cpu_count']} CPUs, {env['memory_gib']} GiB{gpus}); load {env['load_before']} before, "
        f"{env.get('load_after')} after. Micro-batch {result['micro_batch']} × "
        f"{model['block_size']} tokens per rank; {result['warmup_steps']} warm-up steps discarded, then "
        f"{result['steps']} measured ({result['log_every']} per timing window); {result['rounds']} round(s), "
        "interleaved, every other round in reverse order, medians.",
        "",
        "## Throughput",
        "",
        "| scenario | ranks | nodes | ZeRO | tokens/s | tokens/s per device | TFLOP/s | MFU | step (ms) | "
        "peak memory per rank (GiB) | scaling efficiency |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in scen.items():
        memory = " / ".join(cell(b, "gib") for b in row["peak_memory_bytes"])
        lines.append(
            f"| {name} | {row['ranks']} | {row['nodes']} | {row['zero_stage']} | "
            f"{cell(row['tokens_per_s'], 'tokens')} | "
            f"{cell(row['tokens_per_s_per_device'], 'tokens')} | {cell(row['tflops'], 'tflops')} | "
            f"{cell(row['mfu'], 'percent')} | {cell(row['step_ms'], 'ms')} | {memory} | "
            f"{cell(row['scaling_efficiency'], 'ratio')} |"
        )
    lines += [
        "",
        "MFU is against the peak the trainer measured or looked up for its device (run.json's `peak_flops`: "
        "on a CPU a timed matmul of the model's shapes, on a GPU the data sheet's dense figure). Scaling "
        "efficiency: tokens/s ÷ (ranks × the single run's tokens/s).",
        *_stage_note(scen),
        "",
        f"![throughput and MFU]({files['throughput']})",
        "",
        "## Ours ÷ baselines, measured in the same run",
        "",
        "| scenario | baseline | tokens/s | MFU | peak memory per rank (GiB) | ours ÷ baseline |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in scen.items():
        for kind, base in row["baselines"].items():
            memory = " / ".join(cell(b, "gib") for b in base["peak_memory_bytes"])
            lines.append(
                f"| {name} | {kind} | {cell(base['tokens_per_s'], 'tokens')} | "
                f"{cell(base['mfu'], 'percent')} | "
                f"{memory} | {cell(base['ours_over_baseline'], 'ratio')} |"
            )
    lines += [
        "",
        "Baselines (benchmarks/baselines.py): `plain` our GPT in a hand-written loop, `nanogpt` nanoGPT's "
        "training recipe, `ddp` our GPT under PyTorch DistributedDataParallel (torchrun); same model, "
        "micro-batch, dtype and data, timed as the trainer times its windows; `accelerate` our GPT in "
        "Hugging Face Accelerate's loop with its DeepSpeed plugin on the same DeepSpeed JSON.",
        "",
        *_compile_times(scen),
        *_overlap(scen),
        "## Step-time breakdown (ms per optimizer step)",
        "",
        "| scenario | " + " | ".join(TIMER_LABELS.values()) + " | step |",
        "| --- |" + " --- |" * (len(TIMER_LABELS) + 1),
    ]
    for name, row in scen.items():
        parts = [cell(row["breakdown_ms"].get(t), "ms") for t in TIMER_LABELS]
        lines.append(f"| {name} | " + " | ".join(parts) + f" | {cell(row['step_ms'], 'ms')} |")
    lines += [
        "",
        "DeepSpeed's own timers (`wall_clock_breakdown`), each rank's median step after warm-up, averaged "
        "over ranks; `other` is the step's wall time less those (data, logging, the stop-flag collective). "
        "With ZeRO-2 and 3 the gradient reduction runs inside backward's hooks, so it is counted in "
        "`backward`.",
        "",
        f"![step-time breakdown]({files['breakdown']})",
        "",
        "## Memory per rank against the ZeRO stage",
        "",
        "| scenario | ZeRO | ranks | peak per rank (GiB, the largest) | "
        "peak − memory before the model (GiB) | "
        "model states in theory (GiB) | bytes per parameter in theory |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in scen.items():
        theory = result["memory_theory"][name]
        lines.append(
            f"| {name} | {row['zero_stage']} | {row['ranks']} | "
            f"{cell(max(row['peak_memory_bytes']), 'gib')} | "
            f"{cell(_above_start(row), 'gib')} | {cell(theory['model_states_bytes'], 'gib')} | "
            f"{theory['bytes_per_parameter']:.2f} |"
        )
    lines += [
        "",
        "Measured: the CUDA allocator's peak on a GPU, the process's peak resident set on a CPU (which also "
        "holds the framework, the data and the activations). Theory: Adam's model states per parameter "
        "(docs/benchmarks.md): weights + gradients + optimizer states, sharded by the stage.",
        "",
        f"![memory against ZeRO stage]({files['memory']})",
        "",
        "## The projection checked against these runs",
        "",
        *_projection(result.get("projection_check") or {}),
        "## Environment",
        "",
        f"- devices: {', '.join(env['gpus']) or 'none (CPU ranks)'}; CPU {env['cpu']}",
        f"- driver {env['driver'] or '–'}, CUDA {env['cuda'] or '–'}, torch {env['torch']}, deepspeed "
        f"{env['deepspeed']}, Python {env['python']}",
        f"- interconnect: {env['interconnect']}",
        f"- hostfile: {(env['hostfile'] or '–').strip()}",
    ]
    for name, f in env["files"].items():
        lines.append(f"- `{name}`: sha256 `{f['sha256']}`")
    return "\n".join(lines) + "\n"


def _compile_times(scen: dict[str, Any]) -> list[str]:
    """The `compiled` scenario's compile times, apart from its throughput (nothing without one)."""
    if not any(row.get("compiled") for row in scen.values()):
        return []
    lines = [
        "## torch.compile",
        "",
        "| scenario | run | compiled | tokens/s | first step beyond a measured one (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in scen.items():
        if name not in ("single", "compiled"):
            continue
        runs = [("trainer", row, row.get("compiled", False))]
        runs += [(kind, base, kind.endswith("-compiled")) for kind, base in row["baselines"].items()]
        for kind, run, compiled in runs:
            lines.append(
                f"| {name} | {kind} | {'yes' if compiled else 'no'} | "
                f"{cell(run['tokens_per_s'], 'tokens')} | {cell(run.get('first_step_extra_s'), 's')} |"
            )
    lines += [
        "",
        "With torch.compile the first step compiles the training graphs (Inductor's cache makes a second "
        "run's shorter); the first step less a measured one is that time, and the throughput above "
        "excludes it (warm-up). Goals (issue 9): the trainer compiled ≥ 1.15× the eager plain loop and "
        "≥ 1.0× nanoGPT's recipe compiled: the `compiled` rows of the table above.",
        "",
    ]
    return lines


def _overlap(scen: dict[str, Any]) -> list[str]:
    """--overlap-comm's runs side by side, each against the one without overlap (nothing without them)."""
    rows = {n: row for n, row in scen.items() if "overlap_comm" in row.get("zero_options", {})}
    off = next((row for row in rows.values() if not row["zero_options"]["overlap_comm"]), None)
    if not rows or off is None:
        return []
    lines = [
        "## overlap_comm and bucket sizes",
        "",
        "| scenario | ranks | ZeRO | overlap_comm | reduce bucket (elements) | tokens/s | backward (ms) | "
        "optimizer step (ms) | step (ms) | ÷ without overlap |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in rows.items():
        options, times = row["zero_options"], row["breakdown_ms"]
        bucket = options.get("reduce_bucket_size")
        overlap = "yes" if options["overlap_comm"] else "no"
        lines.append(
            f"| {name} | {row['ranks']} | {row['zero_stage']} | {overlap} | "
            f"{'the JSON’s' if bucket is None else f'{bucket:,}'} | {cell(row['tokens_per_s'], 'tokens')} | "
            f"{cell(times.get('bwd_inner'), 'ms')} | {cell(times.get('step'), 'ms')} | "
            f"{cell(row['step_ms'], 'ms')} | {cell(row['tokens_per_s'] / off['tokens_per_s'], 'ratio')} |"
        )
    lines += [
        "",
        "ZeRO-2 reduces each bucket of gradients as backward fills it. With `overlap_comm` DeepSpeed runs "
        "those reductions on a side stream while backward goes on; without it backward waits for each. On a "
        "CPU there is no side stream (the reduction runs inline either way), so a gain is expected only on "
        "GPUs; smaller buckets start reducing earlier in backward, in more, smaller messages.",
        "",
    ]
    return lines


def _projection(checked: dict[str, Any]) -> list[str]:
    if not checked:
        return [
            "No multi-rank or multi-node run with a link probe: nothing to check the projection with.",
            "",
        ]
    lines = [
        "| scenario | compute (ms) | communication (ms) | predicted step (ms) | measured step (ms) | error | "
        "predicted efficiency | measured efficiency |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, c in checked.items():
        lines.append(
            f"| {name} | {cell(c['compute_ms'], 'ms')} | {cell(c['comm_ms'], 'ms')} | "
            f"{cell(c['predicted_step_ms'], 'ms')} | {cell(c['measured_step_ms'], 'ms')} | "
            f"{cell(100 * c['step_error'], 'signed')}% | {cell(c['predicted_efficiency'], 'ratio')} | "
            f"{cell(c['measured_efficiency'], 'ratio')} |"
        )
    return [
        *lines,
        "",
        "benchmarks/project.py's formulas (docs/benchmarks.md) with this run's inputs: the single run's MFU, "
        "each rank's measured peak, the link probe's bus bandwidth (benchmarks/linkprobe.py, an fp32 "
        "all-reduce through the same launcher) and ZeRO's bytes per step; error = predicted ÷ measured − 1.",
        "",
    ]


def _above_start(row: dict[str, Any]) -> float | None:
    starts = row.get("start_memory_bytes") or []
    pairs = [(p, s) for p, s in zip(row["peak_memory_bytes"], starts, strict=False) if s is not None]
    return max(p - s for p, s in pairs) if pairs else None


def record(result: dict[str, Any], readme: Path, md: Path) -> None:
    """Add this result as the newest row of the README's table of recorded results."""
    text = readme.read_text()
    header = "| date | script | what was measured | result |\n| --- | --- | --- | --- |\n"
    if header not in text:
        raise SystemExit(
            f"{readme}: no table of recorded results (a line {header.splitlines()[0]!r}) to add to"
        )
    scen = result["scenarios"]
    figures = []
    for name, row in scen.items():
        ratios = ", ".join(
            f"÷ {kind} **{cell(b['ours_over_baseline'], 'ratio')}**" for kind, b in row["baselines"].items()
        )
        eff = f", scaling efficiency {cell(row['scaling_efficiency'], 'ratio')}" if row["ranks"] > 1 else ""
        figures.append(
            f"{name}: **{cell(row['tokens_per_s'], 'tokens')}** tokens/s, MFU {cell(row['mfu'], 'percent')}"
            f"{' (' + ratios + ')' if ratios else ''}{eff}"
        )
    checked = result.get("projection_check") or {}
    if checked:
        errors = ", ".join(f"{name} {cell(100 * c['step_error'], 'signed')}%" for name, c in checked.items())
        figures.append(f"projection's step-time error: {errors}")
    env = result["environment"]
    link = f"results/{md.name}" if md.parent.resolve() == (readme.parent / "results").resolve() else str(md)
    row = (
        f"| {result['date']} | `{result['command'].removeprefix('python -m ')}` | "
        f"{result['model']['preset']} ({result['model']['parameters']:,} parameters), {result['precision']}, "
        f"{result['device']}; {result['steps']} steps after {result['warmup_steps']} warm-up, "
        f"{result['rounds']} round(s); load {env['load_before'][0]} → {env['load_after'][0]} | "
        + "; ".join(figures)
        + f" ([report]({link})) |\n"
    )
    readme.write_text(text.replace(header, header + row, 1))


# -- plots -------------------------------------------------------------------------------------------
def _figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (8, 4.5)) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=size, squeeze=False)


def _save(fig: Any, path: Path, data: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Description": json.dumps(data)})
    plt.close(fig)


def _plot_throughput(result: dict[str, Any], path: Path) -> None:
    scen = result["scenarios"]
    names = list(scen)
    labels = [f"{n}\n{scen[n]['ranks']} rank(s), {scen[n]['nodes']} node(s)" for n in names]
    kinds = ["trainer", *sorted({k for row in scen.values() for k in row["baselines"]})]
    colors = {kind: f"C{i}" for i, kind in enumerate(kinds)}
    data: dict[str, Any] = {"tokens_per_s": {}, "mfu": {}}
    fig, axes = _figure(1, 2, (11, 4.5))
    for i, n in enumerate(names):
        here = [("trainer", scen[n]), *sorted(scen[n]["baselines"].items())]
        width = 0.8 / len(here)
        for j, (kind, row) in enumerate(here):
            x = i + (j - (len(here) - 1) / 2) * width
            first = n == next(m for m in names if kind == "trainer" or kind in scen[m]["baselines"])
            label = kind if first else None
            axes[0][0].bar(x, row["tokens_per_s"], width, color=colors[kind], label=label)
            axes[0][1].bar(x, 100 * row["mfu"], width, color=colors[kind], label=label)
            data["tokens_per_s"].setdefault(kind, {})[n] = row["tokens_per_s"]
            data["mfu"].setdefault(kind, {})[n] = row["mfu"]
    for ax, title in ((axes[0][0], "tokens/s (whole job)"), (axes[0][1], "MFU (%)")):
        ax.set_xticks(range(len(names)), labels, fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=8)
    _save(fig, path, data)


def _plot_memory(result: dict[str, Any], path: Path) -> None:
    scen = result["scenarios"]
    names = sorted(scen, key=lambda n: (scen[n]["ranks"], scen[n]["zero_stage"]))
    labels = [f"ZeRO-{scen[n]['zero_stage']}\n{n}, {scen[n]['ranks']} rank(s)" for n in names]
    peak = [max(scen[n]["peak_memory_bytes"]) / GIB for n in names]
    theory = [result["memory_theory"][n]["model_states_bytes"] / GIB for n in names]
    above = [(_above_start(scen[n]) or 0) / GIB for n in names]
    fig, axes = _figure(1, 1, (9, 4.5))
    ax = axes[0][0]
    xs = range(len(names))
    ax.bar([x - 0.27 for x in xs], peak, 0.27, label="measured peak per rank")
    ax.bar(list(xs), above, 0.27, label="measured peak − before the model")
    ax.bar([x + 0.27 for x in xs], theory, 0.27, label="model states in theory")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("GiB per rank")
    ax.set_title("memory per rank against the ZeRO stage")
    ax.legend(fontsize=8)
    _save(fig, path, {"scenarios": names, "peak_gib": peak, "above_start_gib": above, "theory_gib": theory})


def _plot_breakdown(result: dict[str, Any], path: Path) -> None:
    scen = result["scenarios"]
    names = list(scen)
    fig, axes = _figure(1, 1, (9, 1.5 + 0.6 * len(names)))
    ax = axes[0][0]
    left = [0.0] * len(names)
    data: dict[str, list[float]] = {}
    for timer, label in TIMER_LABELS.items():
        values = [scen[n]["breakdown_ms"].get(timer, 0.0) for n in names]
        data[timer] = values
        ax.barh(range(len(names)), values, left=left, label=label)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("ms per optimizer step")
    ax.set_title("where a step's time goes (DeepSpeed's timers)")
    ax.legend(fontsize=8, ncol=len(TIMER_LABELS), loc="upper center", bbox_to_anchor=(0.5, -0.35))
    _save(fig, path, {"scenarios": names, "ms": data})


def _stage_note(scen: dict[str, dict[str, Any]]) -> list[str]:
    """Where the trainer ran another stage than the JSON's (one rank: ZeRO-0 for a ZeRO 1 or 2 JSON)."""
    changed = [
        n for n, row in scen.items() if row.get("json_zero_stage", row["zero_stage"]) != row["zero_stage"]
    ]
    if not changed:
        return []
    stages = sorted({scen[n]["json_zero_stage"] for n in changed})
    return [
        "",
        f"ZeRO is the stage the trainer ran. In {', '.join(changed)} it ran ZeRO-0 where the JSON "
        f"(handed to the baselines as given) asks for ZeRO-{', '.join(map(str, stages))}: on one rank "
        "there is nothing to partition (docs/training.md, checkpoints and resume).",
    ]
