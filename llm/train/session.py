"""One training run, wired: validate (Plan), then join the job, prepare data, build, resume, train.

Everything in `Plan.from_argv` runs before any rank talks to another, so bad input ends the job with
one line and exit code 2 before any work starts.
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.config import RunConfig, load_run_config
from llm.data.corpus import open_source
from llm.data.prepare import PreparedDataset, load_dataset, prepare_dataset
from llm.ds_config import DeepSpeedSettings, load_ds_config
from llm.errors import UsageError, fail
from llm.model.config import GPTConfig
from llm.model.gpt import GPT
from llm.model.sampling import generate
from llm.telemetry.mfu import peak_flops
from llm.telemetry.schema import RunStateEvent
from llm.telemetry.sinks import EventLog, JsonlSink, MonitorSink, ProgressBar, Sink, last_seq
from llm.train import checkpoint
from llm.train.collectives import Collectives
from llm.train.engine import build_engine, device, dist_env, init_distributed, monitor_writer
from llm.train.loop import LoopContext, train
from llm.train.rundir import code_version, config_hash, hardware, new_run_id, write_run_files

RUNS_ROOT = Path("runs")


@dataclass(frozen=True)
class Plan:
    """A run whose inputs have all been checked."""

    cfg: RunConfig
    settings: DeepSpeedSettings
    model: GPTConfig
    run_dir: Path | None  # None: a new run whose id rank 0 picks
    resume_from: Path | None

    @staticmethod
    def from_argv(argv: list[str]) -> Plan:
        cfg = load_run_config(argv)
        cuda = torch.cuda.is_available()
        ds_path = cfg.deepspeed or Path("ds_configs/3090.json" if cuda else "ds_configs/cpu.json")
        world_size = dist_env().world_size
        settings = load_ds_config(
            ds_path, world_size=world_size, cuda_available=cuda, max_steps=cfg.max_steps
        )
        model = cfg.model_section(cuda_available=cuda)
        open_source(cfg.data)  # a data path that does not exist fails here
        run_dir = cfg.run_dir
        if run_dir is None and cfg.resume == "auto":
            run_dir = checkpoint.find_run_dir_to_resume(RUNS_ROOT)  # the newest run with a checkpoint
        resume_from = checkpoint.resolve_resume(cfg.resume, run_dir)
        if resume_from is not None and run_dir is None:
            run_dir = resume_from.parent.parent  # RUN_DIR/checkpoints/<tag>
        return Plan(cfg=cfg, settings=settings, model=model, run_dir=run_dir, resume_from=resume_from)


def _agree_or_exit(collectives: Collectives, problem: str | None, *, is_main: bool) -> None:
    """Exit 2 on every rank if any rank found a problem (rank 0 prints the first one)."""
    problems = [p for p in collectives.gather(problem) if p]
    if problems:
        fail(problems[0], quiet=not is_main)


def _prepare_data(plan: Plan, collectives: Collectives, *, is_main: bool) -> Path:
    """Rank 0 prepares missing data once; the others wait (however long tokenising takes)."""
    problem, path = None, None
    if is_main:
        try:
            path = prepare_dataset(plan.cfg.data_section(), progress=plan.cfg.progress)
        except UsageError as err:
            problem = str(err)
    _agree_or_exit(collectives, problem, is_main=is_main)
    return Path(collectives.broadcast(str(path)))


def run(plan: Plan) -> int:
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    # DeepSpeed 0.19 calls an API torch deprecated; the warning says nothing a user can act on
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)
    cfg = plan.cfg
    info = init_distributed(timeout_s=cfg.dist_timeout)
    # A spare group: data preparation may outlast --dist-timeout, so its wait has no such bound; after
    # a timeout elsewhere it is still healthy enough to find out which rank stopped answering.
    spare = Collectives(timeout_s=max(cfg.dist_timeout, 24 * 3600), force_group=True)
    collectives = Collectives(timeout_s=cfg.dist_timeout)
    run_dir = plan.run_dir or RUNS_ROOT / collectives.broadcast(new_run_id())
    dataset = load_dataset(_prepare_data(plan, spare, is_main=info.is_main))
    model_cfg = plan.model.model_copy(update={"vocab_size": dataset.tokenizer.vocab_size})
    if model_cfg.block_size >= len(dataset.val):
        fail(
            f"--block-size {model_cfg.block_size} is longer than the validation split; lower it",
            quiet=not info.is_main,
        )

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = GPT(model_cfg)
    peak = collectives.mean(peak_flops(plan.settings.precision)[0]) * info.world_size
    engine = build_engine(model, plan.settings)

    hashes = {
        # the model's shape: what must match to load the weights. The DeepSpeed JSON may change on a
        # resume (a larger --max-steps stretches the schedule: only its position is saved).
        "config_hash": config_hash(model_cfg.model_dump()),
        "tokenizer_hash": dataset.meta["tokenizer_sha256"],
        "zero_stage": plan.settings.zero_stage,
        "precision": plan.settings.precision,
        "code": code_version(),
    }
    start = None
    if plan.resume_from is not None:
        problem = _resume_problem(plan.resume_from, hashes, verify=info.is_node_main)
        _agree_or_exit(collectives, problem, is_main=info.is_main)
        start = checkpoint.load_checkpoint(engine, plan.resume_from, dist_info=info)

    events = None
    if info.is_main:
        events = _start_events(
            plan, run_dir, engine, model_cfg, dataset, start=start, peak=peak, hashes=hashes
        )

    ctx = LoopContext(
        engine=engine,
        collectives=collectives,
        dist_info=info,
        settings=plan.settings,
        dataset=dataset,
        block_size=model_cfg.block_size,
        flops_per_token=GPT.flops_per_token(model_cfg),
        peak_flops=peak,
        checkpoint_root=run_dir / "checkpoints",
        manifest_fields=hashes,
        events=events,
    )
    try:
        result = train(ctx, cfg.loop_section(), cfg.checkpoint_section(), start=start)
    except RuntimeError as err:  # torch.distributed's errors (DistBackendError too) are RuntimeErrors
        if "Timed out" not in str(err) and "Connection" not in str(err):
            raise
        _report_lost_ranks(spare, err, timeout_s=cfg.dist_timeout, is_main=info.is_main)
        return 1
    if events is not None:
        state = "stopped" if result.stopped_by_signal else "finished"
        events.emit(RunStateEvent, state=state, step=result.step, detail=str(run_dir))
        events.close()
    if not result.stopped_by_signal and cfg.sample_tokens:
        _print_sample(engine, dataset, cfg.sample_tokens, seed=cfg.seed, is_main=info.is_main)
    return 0


def _start_events(
    plan: Plan,
    run_dir: Path,
    engine: object,
    model_cfg: GPTConfig,
    dataset: PreparedDataset,
    *,
    start: checkpoint.Restored | None,
    peak: float,
    hashes: dict[str, object],
) -> EventLog:
    """Rank 0: write what reproduces the run, open its event log, say what is about to happen."""
    cfg, ds = plan.cfg, plan.settings
    step = start.step if start else 0
    world_size = dist_env().world_size
    events = _event_log(run_dir, cfg, engine, start_step=step)
    record = {
        "run_id": run_dir.name,
        "settings": cfg.model_dump(mode="json"),
        "model": model_cfg.model_dump(),
        "parameters": GPT.parameter_count(model_cfg),
        "deepspeed_config_path": str(ds.path),
        "dataset": {"path": str(dataset.path), "meta": _meta_summary(dataset.meta)},
        "resumed_from": str(plan.resume_from) if plan.resume_from else None,
        "hardware": hardware(world_size),
        "peak_flops": peak,
        **hashes,
    }
    name = "run" if start is None else f"resume-{step:08d}"
    write_run_files(run_dir, name=name, record=record, ds_config=ds.config)
    events.emit(
        RunStateEvent, state="started" if start is None else "resumed", step=step, detail=str(run_dir)
    )
    print(
        f"run {run_dir}: {GPT.parameter_count(model_cfg) / 1e6:.2f}M parameters, "
        f"{world_size} rank(s), {ds.precision}, ZeRO-{ds.zero_stage}, "
        f"micro-batch {ds.micro_batch} x accumulation {ds.gradient_accumulation}, {cfg.max_steps} steps",
        flush=True,
    )
    return events


def _report_lost_ranks(spare: Collectives, err: RuntimeError, *, timeout_s: float, is_main: bool) -> None:
    lost = spare.unresponsive_ranks(timeout_s=5.0)
    if not is_main:
        return
    who = f"rank {', '.join(map(str, lost))}" if lost else "another rank"
    print(
        f"error: {who} stopped answering: a collective failed after up to {timeout_s:g} s "
        f"(--dist-timeout): {str(err).splitlines()[0][:200]}. The job ends; continue it with --resume auto",
        file=sys.stderr,
        flush=True,
    )


def _resume_problem(folder: Path, hashes: dict[str, object], *, verify: bool) -> str | None:
    try:
        if verify:
            checkpoint.verify_or_fail(folder)
    except UsageError as err:
        return str(err)
    manifest = checkpoint.read_manifest(folder) or {}
    for key in ("config_hash", "tokenizer_hash"):
        if manifest.get(key) != hashes[key]:
            what = "model shape" if key == "config_hash" else "tokenizer (data)"
            return (
                f"--resume {folder}: the checkpoint was written with another {what}; resume with the "
                f"settings in {folder.parent.parent}/run.json or start a new run"
            )
    return None


def _event_log(run_dir: Path, cfg: RunConfig, engine: object, *, start_step: int) -> EventLog:
    metrics = run_dir / "metrics.jsonl"
    first_seq = last_seq(metrics) + 1
    sinks: list[Sink] = [JsonlSink(metrics)]
    writer = monitor_writer(engine)
    if writer is not None:
        sinks.append(MonitorSink(writer))
    sinks.append(ProgressBar(start_step=start_step, max_steps=cfg.max_steps, enabled=cfg.progress))
    return EventLog(run_dir.name, sinks, first_seq=first_seq)


def _meta_summary(meta: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in meta.items() if k != "files"}


def _print_sample(engine: object, dataset: PreparedDataset, tokens: int, *, seed: int, is_main: bool) -> None:
    """Every rank samples in lockstep (ZeRO-3 gathers weights collectively); rank 0 prints."""
    module = engine.module  # type: ignore[attr-defined]
    tokenizer = dataset.tokenizer
    start = torch.tensor([[tokenizer.eot_id]], device=device())
    generator = torch.Generator(device=device()).manual_seed(seed)
    out = generate(module, start, max_new_tokens=tokens, temperature=0.8, top_k=50, generator=generator)
    if is_main:
        text = tokenizer.decode(out[0, 1:].tolist())
        print(f"\n--- sample ({tokens} tokens) ---\n{text}\n--- end of sample ---", flush=True)
