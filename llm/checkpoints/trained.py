"""Open a trained model from a run directory or one checkpoint folder, without DeepSpeed's engine.

What a run leaves behind is enough to rebuild it: RUN_DIR/run.json holds the model shape ("model")
and the prepared dataset whose `tokenizer.json` the run used ("dataset.path"); a checkpoint folder
holds the weights in whatever layout its ZeRO stage wrote (`weights.load_model_weights` reads any).
`python -m llm.generate` and `python -m llm.export` both start here.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from llm.checkpoints.catalogue import read_manifest, resolve_checkpoint
from llm.checkpoints.weights import load_model_weights
from llm.data.tokenizer import Tokenizer, tokenizer_hash
from llm.errors import UsageError, read_json
from llm.model.config import GPTConfig, stored_config
from llm.model.gpt import GPT

RUN_RECORD = "run.json"


@dataclass(frozen=True)
class TrainedModel:
    model: GPT  # in eval mode, fp32, on the device asked for
    config: GPTConfig
    tokenizer: Tokenizer
    tokenizer_path: Path  # the dataset's tokenizer.json the run trained with
    checkpoint: Path  # the checkpoint folder the weights came from
    step: int  # optimizer steps the checkpoint had taken
    run_dir: Path


def read_run_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_RECORD
    record = read_json(path, what="run record", fix="give a run directory written by launch/train.py")
    if not isinstance(record, dict) or "model" not in record or not isinstance(record.get("dataset"), dict):
        raise UsageError(f'{path}: no "model" or "dataset" section; was it written by launch/train.py?')
    return record


def model_config(record: dict[str, Any], *, where: Path) -> GPTConfig:
    try:
        return stored_config(record["model"])
    except ValidationError as err:
        first = err.errors()[0]
        raise UsageError(f'{where}: "model" is not a valid GPTConfig: {first["msg"]}') from None


def tokenizer_path(record: dict[str, Any], *, run_dir: Path) -> Path:
    """The run's tokenizer.json: its own copy in the run directory (runs since the copy was made), else
    the prepared dataset's; refuses one that is gone or is not the file the run trained with."""
    where = run_dir / RUN_RECORD
    own = run_dir / str(record.get("tokenizer", "tokenizer.json"))
    dataset = Path(str(record["dataset"].get("path", "")))
    path = own if own.is_file() else dataset / "tokenizer.json"
    if not path.is_file():
        relative = "" if dataset.is_absolute() else " (a relative path: run from where training ran)"
        raise UsageError(
            f"{where}: the run's tokenizer.json is not in {run_dir}, and the dataset folder {dataset}"
            f"{relative} is gone; prepare the same data again (same --data, --vocab-size, --data-cache) "
            "to recreate it"
        )
    expected = record.get("tokenizer_hash")
    if expected and tokenizer_hash(path) != expected:
        raise UsageError(f"{path} is not the tokenizer this run trained with (sha256 differs from {where})")
    return path


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    try:
        return load_model_weights(folder)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(
            f"{folder}: the weights could not be read ({reason}); try an earlier checkpoint"
        ) from None


def load_trained(path: Path, *, device: str | torch.device = "cpu") -> TrainedModel:
    """A run directory or a checkpoint folder -> the model (eval mode, fp32), its config and tokenizer."""
    folder = resolve_checkpoint(Path(path))
    run_dir = folder.parent.parent  # RUN_DIR/checkpoints/<tag>
    record = read_run_record(run_dir)
    config = model_config(record, where=run_dir / RUN_RECORD)
    tokenizer_file = tokenizer_path(record, run_dir=run_dir)
    tokenizer = Tokenizer.from_file(tokenizer_file)
    if tokenizer.vocab_size != config.vocab_size:
        raise UsageError(
            f"{tokenizer_file} has {tokenizer.vocab_size} tokens, the model in {run_dir / RUN_RECORD} "
            f"{config.vocab_size}; the dataset folder was replaced"
        )
    model = GPT(config)
    try:
        model.load_state_dict(_read_weights(folder), strict=True)
    except RuntimeError as err:  # missing/unexpected keys or shapes: a checkpoint of another model
        reason = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise UsageError(f"{folder}: weights do not fit the model in run.json ({reason})") from None
    manifest = read_manifest(folder)
    return TrainedModel(
        model=model.to(device).eval(),
        config=config,
        tokenizer=tokenizer,
        tokenizer_path=tokenizer_file,
        checkpoint=folder,
        step=manifest.step if manifest is not None else 0,
        run_dir=run_dir,
    )
