"""Every check that needs no other rank and no data, before DeepSpeed is imported or any work starts.

`Plan.from_argv` turns the command line into a checked plan or one UsageError (exit 2): settings,
the DeepSpeed JSON and its batch arithmetic, the model shape and whether one micro-batch of it fits
in memory, the data path (of an s3:// dataset, its form), the run directory (a reused one needs
--resume), and the checkpoint to resume from (complete, the same model, steps left to train).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from llm.checkpoints import catalogue
from llm.checkpoints.manifest import CheckpointManifest
from llm.config import RunConfig, load_run_config
from llm.data.corpus import open_source
from llm.data.remote import parse_dataset_uri
from llm.ds_config import DeepSpeedSettings, load_ds_config
from llm.errors import UsageError
from llm.model.config import PREDATING_DEFAULTS, GPTConfig
from llm.storage.uri import S3Uri, is_s3_uri, parse_s3_uri
from llm.telemetry.dashboard_link import check_dashboard_setting

RUNS_ROOT = Path("runs")
CHECKOUT = Path(__file__).resolve().parents[2]
# what a run directory holds once a run has started in it
RUN_FILES = ("run.json", "metrics.jsonl", "checkpoints")


@dataclass(frozen=True)
class Plan:
    """A run whose inputs have all been checked."""

    cfg: RunConfig
    settings: DeepSpeedSettings
    model: GPTConfig
    run_dir: Path | None  # None: a new run whose id rank 0 picks
    resume_from: Path | None
    resume_manifest: CheckpointManifest | None
    resume_uri: S3Uri | None = None  # --resume s3://... or --resume auto with --checkpoint-uri
    checkpoint_uri: S3Uri | None = None

    @staticmethod
    def from_argv(argv: list[str]) -> Plan:
        cfg = load_run_config(argv)
        cuda = torch.cuda.is_available()
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        settings = load_ds_config(
            deepspeed_config_path(cfg.deepspeed, cuda=cuda),
            world_size=world_size,
            cuda_available=cuda,
            max_steps=cfg.max_steps,
        )
        model = cfg.model_section(cuda_available=cuda)
        check_fits_in_memory(model, settings, cuda=cuda)
        if cfg.data is not None and is_s3_uri(cfg.data):  # its form; the version is found at run time
            parse_dataset_uri(cfg.data, what="--data")
        else:
            open_source(cfg.data)  # a data path that does not exist fails here
        check_dashboard_setting(cfg.dashboard)
        run_dir = cfg.run_dir
        if run_dir is None and cfg.resume == "auto":
            run_dir = catalogue.find_run_dir_to_resume(RUNS_ROOT)  # the newest run with a checkpoint
        if cfg.resume is None and run_dir is not None:
            check_run_dir_is_new(run_dir)
        checkpoint_uri = resume_uri = None
        if cfg.checkpoint_uri is not None:
            checkpoint_uri = parse_s3_uri(cfg.checkpoint_uri, what="--checkpoint-uri")
        if is_s3_uri(cfg.resume):
            assert cfg.resume is not None
            resume_uri = parse_s3_uri(cfg.resume, what="--resume", allow_version=True)
            if resume_uri.version is not None and not resume_uri.version.isdigit():
                raise UsageError(f"--resume {cfg.resume}: after '@' give a step number")
        elif cfg.resume == "auto" and checkpoint_uri is not None:
            resume_uri = checkpoint_uri  # the newer of the local and the remote checkpoint (on rank 0)
        if cfg.checkpoint_sync == "rsync" and checkpoint_uri is not None:
            raise UsageError(
                "--checkpoint-sync rsync and --checkpoint-uri both move checkpoints between nodes; give one"
            )
        local_resume = None if resume_uri is not None and cfg.resume != "auto" else cfg.resume
        if cfg.checkpoint_sync == "rsync" and os.environ.get("RANK", "0") != "0":
            local_resume = None  # rank 0 picks the checkpoint and copies it to nodes that lack it
        resume_from = catalogue.resolve_resume(local_resume, run_dir)
        manifest = None
        if resume_from is not None:
            manifest = catalogue.read_manifest(resume_from)
            assert manifest is not None  # resolve_resume returns complete checkpoints only
            check_same_model(resume_from, manifest, model)
            check_loadable_stage(resume_from, manifest, settings)
            if run_dir is None:
                run_dir = resume_from.parent.parent  # RUN_DIR/checkpoints/<tag>
        return Plan(
            cfg=cfg,
            settings=settings,
            model=model,
            run_dir=run_dir.absolute() if run_dir is not None else None,
            resume_from=resume_from,
            resume_manifest=manifest,
            resume_uri=resume_uri,
            checkpoint_uri=checkpoint_uri,
        )


def deepspeed_config_path(given: Path | None, *, cuda: bool) -> Path:
    """The JSON to use; a relative path missing here is looked up in the checkout (run from anywhere).

    Without --deepspeed, `accelerate launch --use_deepspeed --deepspeed_config_file FILE` names it."""
    accelerate = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    path = given or (Path(accelerate) if accelerate else None)
    path = path or Path("ds_configs/3090.json" if cuda else "ds_configs/cpu.json")
    if not path.is_absolute() and not path.exists() and (CHECKOUT / path).exists():
        return CHECKOUT / path
    return path


def check_run_dir_is_new(run_dir: Path) -> None:
    used = [name for name in RUN_FILES if (run_dir / name).exists()]
    if used:
        raise UsageError(
            f"--run-dir {run_dir} already holds a run ({used[0]}); continue it with --resume auto, "
            "or give a new --run-dir"
        )


def check_same_model(folder: Path, manifest: CheckpointManifest, model: GPTConfig) -> None:
    """The checkpoint's shape against this run's, before any heavy work (the vocabulary is checked
    once the data is prepared, through the tokenizer's hash)."""
    if manifest.model is None:
        return  # format 1: only a hash, compared after data preparation
    wanted = model.model_dump()
    stored = {**PREDATING_DEFAULTS, **manifest.model}
    differ = [
        f"{key}={stored.get(key)!r} (asked: {value!r})"
        for key, value in wanted.items()
        if key != "vocab_size" and stored.get(key) != value
    ]
    if differ:
        raise UsageError(
            f"--resume {folder}: the checkpoint's model has {', '.join(differ)}; resume with its settings "
            f"(see {folder.parent.parent / 'run.json'}) or start a new run"
        )


def check_loadable_stage(folder: Path, manifest: CheckpointManifest, settings: DeepSpeedSettings) -> None:
    """A checkpoint of another ZeRO stage loads where Adam's fp32 states can move between the layouts
    (ZeRO 0, 1 and 2; llm/train/checkpoint.py); DeepSpeed loads ZeRO-3's and fp16/bf16 states only into
    the stage that wrote them."""
    stages = {manifest.zero_stage, settings.zero_stage}
    if len(stages) > 1 and (3 in stages or manifest.precision != "fp32" or settings.precision != "fp32"):
        raise UsageError(
            f"--resume {folder}: the checkpoint was written at ZeRO-{manifest.zero_stage} "
            f"({manifest.precision}), this run trains at ZeRO-{settings.zero_stage} ({settings.precision}); "
            f"resume with a DeepSpeed JSON at zero_optimization.stage {manifest.zero_stage}"
        )


def activation_bytes(model: GPTConfig, *, micro_batch: int, precision: str) -> float:
    """What one micro-batch's forward keeps for backward, roughly (Korthikanti et al. 2022, with
    attention kernels that never store the T x T scores):

        B * T * (L * 34 * C * b  +  12 * V)      b = 4 bytes in fp32, 2 in fp16 / bf16

    34·C values a token per block; with activation checkpointing, C per block plus one block's 34·C.
    12·V: the logits in fp32, their softmax and their gradient (the loss is taken in fp32).
    """
    b = 4 if precision == "fp32" else 2
    per_layer = model.n_embd * (1 if model.activation_checkpointing else 34) * b
    once = 34 * model.n_embd * b if model.activation_checkpointing else 0
    per_token = model.n_layer * per_layer + once + 12 * model.vocab_size
    return float(micro_batch * model.block_size * per_token)


def check_fits_in_memory(model: GPTConfig, settings: DeepSpeedSettings, *, cuda: bool) -> None:
    """Refuse a shape whose activations alone exceed this rank's memory (weights not even counted)."""
    need = activation_bytes(model, micro_batch=settings.micro_batch, precision=settings.precision)
    if cuda:
        have, where = torch.cuda.get_device_properties(0).total_memory, "the GPU's"
    else:
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        have, where = psutil.virtual_memory().total / ranks, f"this rank's share (1/{ranks}) of the"
    if need > have:
        raise UsageError(
            f"--block-size {model.block_size}: one micro-batch of {settings.micro_batch} sequences would "
            f"keep about {need / 2**30:.0f} GiB of activations, more than {where} {have / 2**30:.0f} GiB "
            f"of memory; lower --block-size or train_micro_batch_size_per_gpu in {settings.path}"
        )
