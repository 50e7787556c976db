"""RunConfig: the run's own settings (everything the DeepSpeed JSON does not own).

Precedence: command-line flags > `LLM_*` environment variables > an optional run file
(`--config run.toml|json`) > defaults. Each stage receives only its own typed, frozen section.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from llm.errors import UsageError, fail
from llm.model.config import PRESETS, GPTConfig
from llm.storage.s3 import S3Settings

AUTO_PRESET_HELP = "3090 with a CUDA GPU, tiny without"
S = TypeVar("S", bound=BaseModel)


class DataConfig(BaseModel):
    """Where text comes from and how it becomes tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: str | None = Field(
        None,
        description="a text file, a folder or a glob of text files, or a dataset version "
        "s3://BUCKET/PREFIX[@VERSION] (default: the built-in corpus)",
    )
    data_cache: Path = Field(Path("data/cache"), description="where prepared token files are kept")
    vocab_size: int = Field(8192, ge=256, le=65535, description="BPE vocabulary size of the tokenizer")
    val_fraction: float = Field(
        0.05, gt=0.0, lt=0.5, description="share of files (or chunks of one file) held out for validation"
    )


class LoopConfig(BaseModel):
    """How long to train and how often to evaluate and report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_steps: int = Field(5000, ge=1, description="optimizer steps to train for")
    eval_every: int = Field(250, ge=1, description="evaluate every N optimizer steps (and at step 0)")
    eval_batches: int = Field(20, ge=1, description="micro-batches per evaluation, shared among ranks")
    log_every: int = Field(10, ge=1, description="report train metrics every N optimizer steps")
    params_every: int = Field(
        50, ge=0, description="per-layer norms and a weight histogram every N steps (0: never)"
    )
    sample_tokens: int = Field(200, ge=0, description="tokens of sample text printed at the end (0: none)")
    seed: int = Field(1337, description="seed for initialisation and data order")
    compile: bool = Field(
        False,
        description="torch.compile the model through DeepSpeed's engine (engine.compile); checkpoints and "
        "exports are the same either way. Off by default: on a CPU it measured no faster "
        "(docs/benchmarks.md)",
    )
    progress: bool = Field(True, description="show a progress bar on rank 0")


class CheckpointConfig(BaseModel):
    """When to save, how many to keep, and where to resume from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    save_every: int = Field(1000, ge=1, description="checkpoint every N optimizer steps (and at the end)")
    keep_last: int = Field(3, ge=1, description="complete checkpoints to keep")
    checkpoint_async: bool = Field(
        False,
        description="save in the background: the loop waits only while each rank copies its states into "
        "host buffers (one checkpoint's size per rank, kept from save to save); writing, hashing and the "
        "commit run beside the next steps (docs/training.md)",
    )
    resume: str | None = Field(
        None,
        description="'auto' (the newest complete checkpoint, here or at --checkpoint-uri, if any), a run or "
        "checkpoint directory, or s3://bucket/runs/RUN (its LATEST; s3://...@STEP for another)",
    )
    checkpoint_uri: str | None = Field(
        None,
        description="also upload every checkpoint to s3://bucket/prefix, in the background, each node its "
        "own shards (docs/aws.md)",
    )
    checkpoint_sync: Literal["none", "rsync"] = Field(
        "none",
        description="'rsync': nodes that share no filesystem send their shards to the first node over ssh "
        "after each save (committed once all have arrived), and get them back on resume "
        "(docs/multinode.md)",
    )


class JobConfig(BaseModel):
    """The job around the loop: the DeepSpeed JSON, the run directory, how long a silent rank may take."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deepspeed: Path | None = Field(
        None,
        description="DeepSpeed JSON (default: ds_configs/3090.json with a GPU, ds_configs/cpu.json without)",
    )
    run_dir: Path | None = Field(None, description="run directory (default: runs/<run id>)")
    dist_timeout: float = Field(300.0, gt=0, description="seconds before a silent rank ends the job")
    dashboard: str | None = Field(
        None,
        description="relay metrics to a dashboard sidecar: its URL (token in LLM_DASHBOARD_TOKEN), or 'auto' "
        "(the one at 127.0.0.1:8765, started if none answers); LLM_DASHBOARD_URL works too",
    )


# The model's shape is GPTConfig's (llm/model/config.py): a preset, then any of these fields overridden.
MODEL_OVERRIDES = ("n_layer", "n_head", "n_embd", "block_size", "pos_encoding", "activation", "dropout",
                   "bias", "activation_checkpointing")  # fmt: skip


def _override(name: str) -> tuple[Any, Any]:
    """GPTConfig's field `name` as an optional override: same type and bounds, default None."""
    field = copy.copy(GPTConfig.model_fields[name])
    field.default = None
    field.description = f"override the preset's {name.replace('_', ' ')}: {field.description}"
    annotation: Any = field.annotation
    return annotation | None, field


class ModelChoice(create_model(  # type: ignore[misc]
    "ModelOverrides", __config__=ConfigDict(frozen=True, extra="forbid"),
    **{name: _override(name) for name in MODEL_OVERRIDES},  # type: ignore[call-overload]
)):  # fmt: skip
    """Which model: a named preset and overrides of its fields."""

    model: str = Field("auto", description=f"preset: auto ({AUTO_PRESET_HELP}), {', '.join(PRESETS)}")


SECTIONS: tuple[type[BaseModel], ...] = (JobConfig, ModelChoice, DataConfig, LoopConfig, CheckpointConfig)

# keys that only a DeepSpeed JSON has: a run file holding one was meant for --deepspeed
DEEPSPEED_KEYS = frozenset(
    {"train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps", "zero_optimization",
     "optimizer", "scheduler", "fp16", "bf16"}
)  # fmt: skip
_RUN_FILE: ContextVar[Path | None] = ContextVar("run_file", default=None)
# Environment variables with our prefix that are not settings: a test hook, the dashboard's address (the
# spelling the sidecar's docs use) and its token (a secret: never a flag, never in run.json).
_NON_SETTING_ENV = frozenset({"LLM_FAILPOINT", "LLM_DASHBOARD_URL", "LLM_DASHBOARD_TOKEN"})


class RunConfig(BaseSettings, CheckpointConfig, LoopConfig, DataConfig, ModelChoice, JobConfig):
    """Every run setting that the DeepSpeed JSON does not own, flat: each is one flag and one variable.

    The sections own the fields (names, bounds, help); this class only unites them for parsing.
    """

    model_config = SettingsConfigDict(env_prefix="LLM_", frozen=True, extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        run_file = _RUN_FILE.get()
        if run_file is None:
            return init_settings, env_settings
        if run_file.suffix == ".toml":
            return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=run_file)
        return init_settings, env_settings, JsonConfigSettingsSource(settings_cls, json_file=run_file)

    def model_section(self, *, cuda_available: bool) -> GPTConfig:
        name = self.model
        if name == "auto":
            name = "3090" if cuda_available else "tiny"
        if name not in PRESETS:
            near = difflib.get_close_matches(name, list(PRESETS), n=1)
            hint = f'did you mean "{near[0]}"? ' if near else ""
            raise UsageError(f"--model {name}: no such preset; {hint}choose one of {', '.join(PRESETS)}")
        overrides = {k: getattr(self, k) for k in MODEL_OVERRIDES if getattr(self, k) is not None}
        try:
            return GPTConfig(**{**PRESETS[name], **overrides, "vocab_size": self.vocab_size})
        except ValidationError as err:
            raise UsageError(f"--model {name} with {overrides}: {_first_error(err)}") from None

    def section(self, kind: type[S]) -> S:
        """This run's settings of one section, as that section's own frozen model."""
        return kind(**{name: getattr(self, name) for name in kind.model_fields})

    def data_section(self) -> DataConfig:
        return self.section(DataConfig)

    def loop_section(self) -> LoopConfig:
        return self.section(LoopConfig)

    def checkpoint_section(self) -> CheckpointConfig:
        return self.section(CheckpointConfig)


def _check_sections_do_not_overlap() -> None:
    seen: dict[str, str] = {}
    for section in SECTIONS:
        for name in section.model_fields:
            assert name not in seen, f"setting {name} is defined by both {seen[name]} and {section.__name__}"
            seen[name] = section.__name__


_check_sections_do_not_overlap()


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    return str(first["msg"]).removeprefix("Value error, ")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line with the nearest valid flag, and exit code 2."""

    def error(self, message: str) -> NoReturn:
        unknown = re.search(r"unrecognized arguments: (--?[\w-]+)", message)
        if unknown:
            flags = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
            near = difflib.get_close_matches(unknown.group(1), flags, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            message += f" ({hint}flags are never abbreviated; see --help)"
        fail(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="launch/train.py",
        description="Train a GPT through DeepSpeed. Each flag can also be set as LLM_<NAME> in the "
        "environment or in a --config file; flags win over the environment, the environment over the file.",
        allow_abbrev=False,  # --max-step 3 must be an error, not --max-steps 3
    )
    parser.add_argument("--config", metavar="RUN_FILE", help="run settings file (.toml or .json)")
    for name, field in RunConfig.model_fields.items():
        flags = [_flag(name)]
        if name == "deepspeed":
            flags += ["--deepspeed_config", "--deepspeed-config"]
        default = "" if field.default is None else f"default: {field.default}; "
        help_text = f"{field.description} ({default}env LLM_{name.upper()})"
        if field.annotation in (bool, bool | None):
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(*flags, dest=name, metavar=name.upper(), help=help_text)
    # The deepspeed launcher appends --local_rank=N; the rank itself comes from LOCAL_RANK.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    return parser


def load_run_config(argv: list[str]) -> RunConfig:
    """Flags > LLM_* environment > run file > defaults. Raises UsageError on any bad value."""
    args = vars(build_parser().parse_args(argv))
    args.pop("local_rank")
    run_file = Path(args.pop("config")) if args.get("config") else None
    _check_environment()
    if run_file is not None:
        _check_run_file(run_file)
    flags = {k: v for k, v in args.items() if v is not None}
    token = _RUN_FILE.set(run_file)
    try:
        return RunConfig(**flags)
    except ValidationError as err:
        first = err.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "?"
        where = (
            _flag(name)
            if name in flags
            else f"LLM_{name.upper()}"
            if f"LLM_{name.upper()}" in os.environ
            else (f"{run_file} key {name}" if run_file else name)
        )
        raise UsageError(f"{where}: {_first_error(err)} (got {first.get('input')!r})") from None
    finally:
        _RUN_FILE.reset(token)


def _check_environment() -> None:
    valid = {f"LLM_{name.upper()}" for name in RunConfig.model_fields} | _NON_SETTING_ENV
    valid |= {f"LLM_S3_{name.upper()}" for name in S3Settings.model_fields}  # read by llm.storage.s3
    for var in os.environ:
        if var.upper().startswith("LLM_") and var.upper() not in valid:
            near = difflib.get_close_matches(var.upper(), sorted(valid), n=1)
            hint = f"did you mean {near[0]}?" if near else "unset it"
            raise UsageError(f"environment variable {var} is not a setting; {hint}")


def _check_run_file(path: Path) -> None:
    if path.suffix not in (".toml", ".json"):
        raise UsageError(f"--config {path}: a run file must end in .toml or .json")
    try:
        text = path.read_text()
    except OSError as err:
        raise UsageError(f"--config {path}: cannot read it ({err.strerror})") from None
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"--config {path}: not valid {path.suffix[1:].upper()}: {err}") from None
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: must hold a table of settings")
    if DEEPSPEED_KEYS & set(values):
        key = sorted(DEEPSPEED_KEYS & set(values))[0]
        raise UsageError(
            f"--config {path}: this is a DeepSpeed config (it sets {key}); pass it to --deepspeed, and "
            "give --config a run file of our settings"
        )
    for key in values:
        if key not in RunConfig.model_fields:
            near = difflib.get_close_matches(key.replace("-", "_"), list(RunConfig.model_fields), n=1)
            hint = f'did you mean "{near[0]}"?' if near else "remove it"
            raise UsageError(f'--config {path}: unknown setting "{key}"; {hint}')
