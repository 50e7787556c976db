"""One training run, wired: join the job, prepare data, build, resume, train.

`launch/train.py` checks everything that needs no other rank first (llm/train/plan.py, before this
module and DeepSpeed are imported), so bad input ends the job with one line and exit code 2.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from llm import nodes as node_facts
from llm.checkpoints import catalogue
from llm.config import RunConfig
from llm.data.prepare import PreparedDataset, load_dataset, prepare_dataset
from llm.ds_config import DeepSpeedSettings
from llm.errors import UsageError, fail
from llm.model.config import GPTConfig, stored_model
from llm.model.gpt import GPT
from llm.model.sampling import generate
from llm.telemetry import dashboard_link, rank_stats
from llm.telemetry.mfu import model_matmul_shapes, peak_flops
from llm.telemetry.reporter import ReporterSink
from llm.telemetry.schema import RunStateEvent
from llm.telemetry.sinks import EventLog, JsonlSink, MonitorSink, ProgressBar, Sink, last_seq
from llm.telemetry.system import DeviceSampler
from llm.train import checkpoint, node_sync, remote_sync
from llm.train.async_save import BackgroundSave
from llm.train.collectives import Collectives
from llm.train.control import ControlChannel
from llm.train.engine import (
    Placement,
    build_engine,
    describe_nodes,
    device,
    dist_env,
    group_timeouts,
    init_distributed,
    monitor_writer,
    placement,
)
from llm.train.loop import LoopContext, train
from llm.train.param_stats import ParamStats
from llm.train.plan import RUNS_ROOT, Plan, check_loadable_stage, check_same_model
from llm.train.rundir import code_version, config_hash, hardware, new_run_id, write_run_files
from llm.train.signals import Interrupted, StopSignal
from llm.train.uploader import CheckpointUploader
from llm.train.watchdog import WATCHDOG_GRACE_S, Watchdog

TOKENIZER_COPY = "tokenizer.json"  # the run's own copy, so the run directory is self-contained


def _agree_or_exit(
    collectives: Collectives, problem: str | None, *, is_main: bool, exit_code: int | None = None
) -> None:
    """Exit on every rank (2, or rank 0's `exit_code`) if any rank found a problem; rank 0 says which."""
    reports = collectives.gather((problem, exit_code))
    problems = [(p, code) for p, code in reports if p]
    if problems:
        message, code = problems[0]
        if code is None:
            fail(message, quiet=not is_main)
        if is_main:
            print(f"error: {message}", file=sys.stderr, flush=True)
        # A stop signal during data preparation may leave the tokenizer's merges running in native
        # code on a daemon thread, which crashes the interpreter's shutdown (SIGSEGV): leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _prepare_data(plan: Plan, collectives: Collectives, stop: StopSignal, *, is_main: bool) -> Path:
    """Rank 0 prepares missing data once; the others wait (however long tokenising takes).

    An s3:// dataset: rank 0 picks the version (@VERSION or the newest) for the whole job, then the
    first rank of every node downloads it into the data cache (verifying every sha256; a verified
    copy there is reused) and, for raw text, prepares it; the node's other ranks use that copy.
    A stop signal ends preparation at once (nothing to save yet) and then the job."""
    from llm.data import remote
    from llm.storage.uri import is_s3_uri

    data, node = plan.cfg.data_section(), dist_env()
    problem, path, interrupted = None, None, None
    s3 = is_s3_uri(data.data)
    if s3:  # one version for every node, even if another is pushed while the job starts
        version = None
        if is_main:
            try:
                version = remote.find_version(str(data.data), what="--data")[2].version
            except UsageError as err:
                problem = str(err)
        _agree_or_exit(collectives, problem, is_main=is_main)
        exact = remote.parse_dataset_uri(str(data.data), what="--data").unversioned()
        data = data.model_copy(update={"data": f"{exact}@{collectives.broadcast(version)}"})
    if node.is_node_main if s3 else is_main:
        try:
            with stop.interruptible():
                if s3:
                    pulled = remote.pull(str(data.data), data=data, progress=plan.cfg.progress, what="--data")
                    how = "downloaded and verified into" if pulled.downloaded else "verified copy in"
                    print(f"data: {pulled.uri}: {how} {pulled.folder}", flush=True)
                    path = pulled.path
                else:
                    path = prepare_dataset(data, progress=plan.cfg.progress)
        except UsageError as err:
            problem = str(err)
        except Interrupted as err:
            problem, interrupted = f"{err} during data preparation; nothing was saved", err.signum
    _agree_or_exit(
        collectives, problem, is_main=is_main, exit_code=128 + interrupted if interrupted else None
    )
    if s3:  # each node's own copy: the path its first rank found (ranks are numbered node by node)
        return Path(collectives.gather(str(path))[node.rank - node.local_rank])
    return Path(collectives.broadcast(str(path)))


def run(plan: Plan) -> int:
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    # DeepSpeed 0.19 calls an API torch deprecated; the warning says nothing a user can act on
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)
    cfg = plan.cfg
    stop = StopSignal()
    info = init_distributed(timeout_s=cfg.dist_timeout)
    rank_stats.mark_start()
    # A spare group: data preparation may outlast --dist-timeout, so its wait has no such bound; after
    # a timeout elsewhere it is still healthy enough to find out which rank stopped answering.
    spare = Collectives(timeout_s=max(cfg.dist_timeout, 24 * 3600), force_group=True)
    collectives = Collectives(timeout_s=cfg.dist_timeout)
    # --checkpoint-async commits on a thread of its own: its collectives get a group of their own
    background = None
    if cfg.checkpoint_async:
        background = BackgroundSave(Collectives(timeout_s=cfg.dist_timeout, force_group=True))
    ranks = [Placement(**p) for p in collectives.gather(asdict(placement(info)))]
    if info.is_main and info.world_size > 1:
        print(f"nodes: {describe_nodes(ranks)}", flush=True)
    # the preflight's cheap checks, in-process: every node runs the same software
    every = collectives.gather(
        node_facts.facts(Path.cwd()) if info.is_node_main and info.world_size > 1 else None
    )
    _agree_or_exit(collectives, node_facts.mismatch(every) if info.is_main else None, is_main=info.is_main)
    # rank 0's: nodes that share no filesystem may each have found (or not) another run to resume
    run_dir = Path(collectives.broadcast(str(plan.run_dir or (RUNS_ROOT / new_run_id()).absolute())))
    nodes = node_sync.node_mains(ranks)
    gathered = cfg.checkpoint_sync == "rsync" and len(nodes) > 1
    dataset = load_dataset(_prepare_data(plan, spare, stop, is_main=info.is_main))
    model_cfg = plan.model.model_copy(update={"vocab_size": dataset.tokenizer.vocab_size})
    _agree_or_exit(collectives, _data_problem(model_cfg, dataset), is_main=info.is_main)

    manifest_fields = {
        # the model's shape: what must match to load the weights. The DeepSpeed JSON may change on a
        # resume (a larger --max-steps stretches the schedule: only its position is saved).
        "model": model_cfg.model_dump(),
        "config_hash": config_hash(model_cfg.model_dump()),
        "tokenizer_hash": dataset.meta["tokenizer_sha256"],
        "zero_stage": plan.settings.zero_stage,
        "precision": plan.settings.precision,
        "code": code_version(),
    }
    resume_from = plan.resume_from
    if plan.resume_uri is not None:  # each node pulls the checkpoint rank 0 chose (no shared filesystem)
        resume_from, problem = remote_sync.resume_from_remote(
            plan.resume_uri,
            run_dir / "checkpoints",
            plan.resume_from,
            auto=plan.cfg.resume == "auto",
            dist_info=info,
            collectives=spare,
        )
        _agree_or_exit(spare, problem, is_main=info.is_main)
    sync = None
    if gathered:  # rank 0 reaches every node, and every node holds the checkpoint rank 0 resumes from
        _agree_or_exit(
            spare, node_sync.reach_problem(nodes[1:]) if info.is_main else None, is_main=info.is_main
        )
        resume_from, problem = node_sync.push_checkpoint(
            plan.resume_from if info.is_main else None,
            run_dir / "checkpoints",
            ranks=ranks,
            dist_info=info,
            collectives=spare,
        )
        _agree_or_exit(spare, problem, is_main=info.is_main)
        if info.is_main:
            sync = node_sync.NodeSync(nodes, keep_last=cfg.keep_last)
    if resume_from is not None:  # before the engine is built: a bad checkpoint costs seconds
        problem = _resume_problem(resume_from, manifest_fields, verify=info.is_node_main, plan=plan)
        _agree_or_exit(spare, problem, is_main=info.is_main)  # hashing may outlast --dist-timeout
    uploader = None
    if plan.checkpoint_uri is not None:
        uploader, problem = remote_sync.start_uploader(
            plan.checkpoint_uri, keep_last=cfg.keep_last, dist_info=info
        )
        _agree_or_exit(collectives, problem, is_main=info.is_main)
    if info.world_size > 1:  # from here every wait is bounded: a frozen rank is killed, so its node ends too
        # later than the others' collectives time out, so that they name the frozen rank first
        Watchdog(timeout_s=cfg.dist_timeout + WATCHDOG_GRACE_S, label=f"rank {info.rank} on {info.node}")

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = GPT(model_cfg)
    shapes = model_matmul_shapes(
        tokens=plan.settings.micro_batch * model_cfg.block_size,
        width=model_cfg.n_embd,
        vocab=model_cfg.vocab_size,
    )
    peak, peak_how = peak_flops(plan.settings.precision, matmul_shapes=shapes)
    peak = collectives.mean(peak) * info.world_size  # the job's peak: every rank's device
    engine = build_engine(model, plan.settings)
    start = None
    if resume_from is not None:
        start = checkpoint.load_checkpoint(engine, resume_from, dist_info=info)
    if cfg.compile:  # in place: the module's state_dict, and so every checkpoint, keeps its keys
        engine.compile()

    events, reporter = None, None
    if info.is_main:
        events, reporter = _start_events(
            plan,
            run_dir,
            engine,
            model_cfg,
            dataset,
            start=start,
            peak=peak,
            hashes=manifest_fields,
            peak_how=peak_how,
            resumed_from=resume_from,
            ranks=ranks,
        )
        if uploader is not None:
            remote_sync.upload_run_files(uploader, run_dir, ["run.json", TOKENIZER_COPY])

    timers = rank_stats.StepTimers(engine)
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
        manifest_fields=manifest_fields,
        events=events,
        stop=stop,
        control=ControlChannel(collectives, reporter, engine, is_main=info.is_main),
        devices=DeviceSampler(
            rank=info.rank,
            local_rank=info.local_rank,
            gpu_index=torch.cuda.current_device() if torch.cuda.is_available() else None,
        ),
        params=ParamStats(engine, collectives, every=cfg.loop_section().params_every, rank=info.rank),
        upload=plan.checkpoint_uri is not None,
        uploader=uploader,
        gathered=gathered,
        sync=sync,
        timers=timers,
        background=background,
    )
    if start is not None and start.manifest.lr_scale != 1.0:
        ctx.control.lr.set(start.manifest.lr_scale)  # the dashboard's change survives the resume
    try:
        result = train(ctx, cfg.loop_section(), cfg.checkpoint_section(), start=start)
    except RuntimeError as err:  # torch.distributed's errors (DistBackendError too) are RuntimeErrors
        if "Timed out" not in str(err) and "Connection" not in str(err):
            raise
        _report_lost_ranks(spare, err, timeout_s=cfg.dist_timeout, is_main=info.is_main)
        return 1
    upload_failed = _finish_uploads(uploader, is_main=info.is_main) | _finish_sync(sync)
    summaries = collectives.gather(rank_stats.summary(rank=info.rank, node=info.node, timers=timers))
    if info.is_main:
        rank_stats.write(run_dir, summaries)
    if events is not None:
        state = "stopped" if result.stopped_by_signal else "finished"
        events.emit(RunStateEvent, state=state, step=result.step, detail=str(run_dir))
        events.close()
    if not result.stopped_by_signal and cfg.sample_tokens:
        _print_sample(engine, dataset, cfg.sample_tokens, seed=cfg.seed, is_main=info.is_main)
    return 1 if upload_failed else 0


def _finish_sync(sync: node_sync.NodeSync | None) -> bool:
    """Rank 0: wait for the last checkpoint to arrive from every node; True when it did not."""
    if sync is None:
        return False
    sync.drain()
    return sync.last_failed(
        "the last checkpoint ({tag}) did not arrive whole on this node ({detail}); each node still holds "
        "its own part"
    )


def _finish_uploads(uploader: CheckpointUploader | None, *, is_main: bool) -> bool:
    """Wait for this node's uploads; True when the last checkpoint did not reach the checkpoint URI."""
    if uploader is None:
        return False
    uploader.drain()
    where = uploader.remote.describe().replace("{", "{{").replace("}", "}}")
    return uploader.last_failed(
        f"the last checkpoint ({{tag}}) is saved locally but not at {where}: {{detail}}. Upload it with "
        "python -m llm.checkpoints push, or resume here with --resume auto"
    )


def _data_problem(model_cfg: GPTConfig, dataset: PreparedDataset) -> str | None:
    """A context longer than a split can fill: no window to train or evaluate on."""
    for name in ("train", "val"):
        tokens = len(dataset.split(name))
        if model_cfg.block_size + 1 > tokens:
            return (
                f"--block-size {model_cfg.block_size}: the {name} split of {dataset.path} holds only "
                f"{tokens} tokens, fewer than one window of {model_cfg.block_size + 1}; lower --block-size "
                "or give more data"
            )
    return None


def _start_events(
    plan: Plan,
    run_dir: Path,
    engine: object,
    model_cfg: GPTConfig,
    dataset: PreparedDataset,
    *,
    start: checkpoint.Restored | None,
    resumed_from: Path | None,
    peak: float,
    peak_how: dict[str, object],
    hashes: dict[str, object],
    ranks: list[Placement],
) -> tuple[EventLog, ReporterSink | None]:
    """Rank 0: write what reproduces the run, open its event log, say what is about to happen."""
    cfg, ds = plan.cfg, plan.settings
    step = start.step if start else 0
    world_size = dist_env().world_size
    events, reporter = _event_log(run_dir, cfg, engine, start_step=step)
    record = {
        "run_id": run_dir.name,
        "settings": cfg.model_dump(mode="json"),
        "model": model_cfg.model_dump(),
        "parameters": GPT.parameter_count(model_cfg),
        "deepspeed_config_path": str(ds.path),
        "dataset": _dataset_record(dataset),
        "tokenizer": TOKENIZER_COPY,
        "resumed_from": str(resumed_from) if resumed_from else None,
        "hardware": hardware(world_size),
        "ranks": [asdict(p) for p in ranks],  # each rank's host, address and pid
        "peak_flops": peak,
        "peak_flops_how": peak_how,  # rank 0's measurement or data-sheet figure, per device
        # every process group rank 0 holds once the engine is built (ours and DeepSpeed's), read back
        "process_group_timeouts_s": group_timeouts(),
        **hashes,
    }
    name = "run" if start is None else f"resume-{step:08d}"
    write_run_files(run_dir, name=name, record=record, ds_config=ds.config)
    shutil.copyfile(dataset.path / "tokenizer.json", run_dir / TOKENIZER_COPY)
    events.emit(
        RunStateEvent, state="started" if start is None else "resumed", step=step, detail=str(run_dir)
    )
    print(
        f"run {run_dir}: {GPT.parameter_count(model_cfg) / 1e6:.2f}M parameters, "
        f"{world_size} rank(s), {ds.precision}, ZeRO-{ds.zero_stage}{_stage_note(ds)}, "
        f"micro-batch {ds.micro_batch} x accumulation {ds.gradient_accumulation}, {cfg.max_steps} steps",
        flush=True,
    )
    return events, reporter


def _stage_note(ds: DeepSpeedSettings) -> str:
    if ds.zero_stage == ds.json_zero_stage:
        return ""
    return f" (the JSON's ZeRO-{ds.json_zero_stage} has nothing to partition on one rank)"


def _report_lost_ranks(spare: Collectives, err: RuntimeError, *, timeout_s: float, is_main: bool) -> None:
    # Bounded on every rank: across a partition a rank's half of the barrier can wait on a peer that
    # will never answer (the spare group's own timeout is a day), and a rank that stays is an orphan.
    found: list[list[int]] = []
    probe = threading.Thread(
        target=lambda: found.append(spare.unresponsive_ranks(timeout_s=5.0)), daemon=True
    )
    probe.start()
    probe.join(timeout=15.0)
    lost = found[0] if found else []
    if not is_main:
        return
    who = f"rank {', '.join(map(str, lost))}" if lost else "another rank"
    print(
        f"error: {who} stopped answering: a collective failed after up to {timeout_s:g} s "
        f"(--dist-timeout): {str(err).splitlines()[0][:200]}. The job ends; continue it with --resume auto",
        file=sys.stderr,
        flush=True,
    )


def _resume_problem(
    folder: Path, hashes: dict[str, object], *, verify: bool, plan: Plan | None = None
) -> str | None:
    try:
        if verify:
            catalogue.verify_or_fail(folder)
    except UsageError as err:
        return str(err)
    manifest = catalogue.read_manifest(folder)
    if manifest is None:  # checked by the plan; gone since
        return f"--resume {folder}: {catalogue.checkpoint_problem(folder)}"
    if plan is not None and folder != plan.resume_from:  # pulled from the checkpoint URI: the plan's checks
        try:
            check_same_model(folder, manifest, plan.model)
            check_loadable_stage(folder, manifest, plan.settings)
        except UsageError as err:
            return str(err)
        if manifest.step >= plan.cfg.max_steps:
            return (
                f"--resume {folder}: the checkpoint is at step {manifest.step}, --max-steps is "
                f"{plan.cfg.max_steps}: nothing to train; raise --max-steps to continue the run"
            )
    same = {"tokenizer_hash": manifest.tokenizer_hash == hashes["tokenizer_hash"]}
    if manifest.model is not None:  # the shape itself, read as the code that wrote it meant it
        same["config_hash"] = stored_model(manifest.model) == hashes["model"]
    else:  # format 1: only the hash
        same["config_hash"] = manifest.config_hash == hashes["config_hash"]
    for key in ("config_hash", "tokenizer_hash"):
        if not same[key]:
            what = "model shape" if key == "config_hash" else "tokenizer (data)"
            return (
                f"--resume {folder}: the checkpoint was written with another {what}; resume with the "
                f"settings in {folder.parent.parent}/run.json or start a new run"
            )
    return None


def _event_log(
    run_dir: Path, cfg: RunConfig, engine: object, *, start_step: int
) -> tuple[EventLog, ReporterSink | None]:
    """The sinks, the durable file first; the reporter when a dashboard is asked for."""
    metrics = run_dir / "metrics.jsonl"
    first_seq = last_seq(metrics) + 1
    sinks: list[Sink] = [JsonlSink(metrics)]
    reporter = None
    link = dashboard_link.connect(cfg.dashboard, runs_dir=run_dir.parent, log=run_dir / "sidecar.log")
    if link is not None:
        hello = {"run_id": run_dir.name, "run_dir": str(run_dir), "max_steps": cfg.max_steps,
                 "world_size": dist_env().world_size}  # fmt: skip
        reporter = ReporterSink(link.url, token=link.token, hello=hello, metrics=metrics)
        sinks.append(reporter)
    writer = monitor_writer(engine)
    if writer is not None:
        sinks.append(MonitorSink(writer))
    sinks.append(ProgressBar(start_step=start_step, max_steps=cfg.max_steps, enabled=cfg.progress))
    return EventLog(run_dir.name, sinks, first_seq=first_seq), reporter


def _dataset_record(dataset: PreparedDataset) -> dict[str, object]:
    """Where the data came from: its folder, and the S3 version it was pulled from, if any."""
    from llm.data import remote

    record: dict[str, object] = {"path": str(dataset.path.resolve()), "meta": _meta_summary(dataset.meta)}
    origin = remote.provenance(dataset.path)
    if origin is not None:
        record["s3"] = origin  # {"uri", "version"}
    return record


def _meta_summary(meta: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in meta.items() if k != "files"}


def _print_sample(engine: object, dataset: PreparedDataset, tokens: int, *, seed: int, is_main: bool) -> None:
    """Every rank samples in lockstep (ZeRO-3 gathers weights collectively); rank 0 prints."""
    module = engine.module  # type: ignore[attr-defined]
    tokenizer = dataset.tokenizer
    start = torch.tensor([[tokenizer.eot_id]], device=device())
    generator = torch.Generator(device=device()).manual_seed(seed)
    with torch.compiler.set_stance("force_eager"):  # a compiled model would recompile for every length
        out = generate(module, start, max_new_tokens=tokens, temperature=0.8, top_k=50, generator=generator)
    if is_main:
        text = tokenizer.decode(out[0, 1:].tolist())
        print(f"\n--- sample ({tokens} tokens) ---\n{text}\n--- end of sample ---", flush=True)
