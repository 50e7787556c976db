"""The DeepSpeed JSON is checked before launch: each mistake is one line naming file, key and fix."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from llm.ds_config import SECTION_KEYS, TOP_LEVEL_KEYS, load_ds_config
from llm.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "ds_configs").glob("*.json"))


def _write(tmp_path: Path, config: dict | str) -> Path:
    path = tmp_path / "ds.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    return path


def _load(path: Path, *, world_size: int = 1, cuda: bool = False, max_steps: int = 100):
    return load_ds_config(path, world_size=world_size, cuda_available=cuda, max_steps=max_steps)


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(UsageError) as caught:
        _load(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    needs_cuda = "fp16" in json.loads(path.read_text())
    settings = _load(path, world_size=2, cuda=needs_cuda, max_steps=50)
    assert settings.train_batch == settings.micro_batch * settings.gradient_accumulation * 2
    assert settings.config["train_batch_size"] == settings.train_batch
    total = settings.config.get("scheduler", {}).get("params", {}).get("total_num_steps")
    assert total in (None, 50)  # "auto" became --max-steps


def test_cpu_configs_are_fp32_and_bf16() -> None:
    assert _load(REPO / "ds_configs/cpu.json").precision == "fp32"
    assert _load(REPO / "ds_configs/cpu-bf16.json").precision == "bf16"
    assert _load(REPO / "ds_configs/3090.json", cuda=True).precision == "fp16"


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path, '{\n  "train_micro_batch_size_per_gpu": 8,\n  "zero_optimization": {"stage": 2,}\n}'
    )
    assert _error(path).startswith(f"{path}:3:")


def test_missing_file(tmp_path: Path) -> None:
    message = _error(tmp_path / "nope.json")
    assert "no such DeepSpeed config" in message and "ds_configs/" in message


def test_unknown_top_level_key_suggests_the_nearest(tmp_path: Path) -> None:
    path = _write(tmp_path, {"train_micro_batch_size_per_gpu": 8, "gradient_acumulation_steps": 2})
    assert (
        _error(path)
        == f'{path}: unknown key "gradient_acumulation_steps"; did you mean "gradient_accumulation_steps"?'
    )


def test_unknown_nested_key_suggests_the_nearest(tmp_path: Path) -> None:
    path = _write(tmp_path, {"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stgae": 2}})
    assert 'unknown key "zero_optimization.stgae"; did you mean "zero_optimization.stage"?' in _error(path)


def test_batch_sizes_must_multiply_out_for_the_world_size(tmp_path: Path) -> None:
    config = {"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2}
    path = _write(tmp_path, config)
    assert _load(path, world_size=4).train_batch == 32
    message = _error(path, world_size=2)
    assert '"train_batch_size" 32' in message and "= 16" in message and "set it to 16" in message


def test_train_batch_alone_derives_the_rest(tmp_path: Path) -> None:
    settings = _load(
        _write(tmp_path, {"train_batch_size": 16, "gradient_accumulation_steps": 2}), world_size=2
    )
    assert (settings.micro_batch, settings.gradient_accumulation) == (4, 2)
    assert "not divisible" in _error(_write(tmp_path, {"train_batch_size": 15}), world_size=2)


def test_fp16_without_cuda_points_to_the_cpu_config(tmp_path: Path) -> None:
    path = _write(tmp_path, {"train_micro_batch_size_per_gpu": 8, "fp16": {"enabled": True}})
    message = _error(path)
    assert '"fp16" needs a CUDA GPU' in message and "ds_configs/cpu.json" in message
    assert _load(path, cuda=True).precision == "fp16"


def test_bad_values(tmp_path: Path) -> None:
    assert "whole number" in _error(_write(tmp_path, {"train_micro_batch_size_per_gpu": "8"}))
    zero = {"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 4}}
    assert "must be 0, 1, 2 or 3" in _error(_write(tmp_path, zero))
    both = {"train_micro_batch_size_per_gpu": 8, "fp16": {"enabled": True}, "bf16": {"enabled": True}}
    assert "both true" in _error(_write(tmp_path, both), cuda=True)
    assert "JSON object" in _error(_write(tmp_path, "[1, 2]"))


@pytest.mark.parametrize(("section", "package"), [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_a_monitor_without_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, package: str
) -> None:
    """DeepSpeed would fail deep inside initialize; we say which package to install before launch."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a)
    )
    path = _write(tmp_path, {"train_micro_batch_size_per_gpu": 8, section: {"enabled": True}})
    assert f"pip install {package}" in _error(path)
    disabled = _write(tmp_path, {"train_micro_batch_size_per_gpu": 8, section: {"enabled": False}})
    assert _load(disabled).config[section] == {"enabled": False}  # a disabled monitor needs nothing


def _deepspeed_model_keys(module: str, name: str) -> set[str]:
    model = getattr(importlib.import_module(module), name)
    return {alias for n, f in model.model_fields.items() for alias in (n, f.alias) if alias}


@pytest.mark.parametrize(
    ("section", "module", "name"),
    [
        ("zero_optimization", "deepspeed.runtime.zero.config", "DeepSpeedZeroConfig"),
        ("zero_optimization.offload_optimizer", "deepspeed.runtime.zero.offload_config",
         "DeepSpeedZeroOffloadOptimizerConfig"),
        ("zero_optimization.offload_param", "deepspeed.runtime.zero.offload_config",
         "DeepSpeedZeroOffloadParamConfig"),
        ("fp16", "deepspeed.runtime.precision_config", "DeepSpeedFP16Config"),
        ("bf16", "deepspeed.runtime.precision_config", "DeepSpeedBF16Config"),
        ("tensorboard", "deepspeed.monitor.config", "TensorBoardConfig"),
        ("csv_monitor", "deepspeed.monitor.config", "CSVConfig"),
        ("wandb", "deepspeed.monitor.config", "WandbConfig"),
    ],
)  # fmt: skip
def test_section_keys_cover_deepspeeds_own(section: str, module: str, name: str) -> None:
    """Our key lists never refuse a key the installed DeepSpeed accepts (and catch drift on upgrade)."""
    missing = _deepspeed_model_keys(module, name) - SECTION_KEYS[section]
    assert not missing, f"add to SECTION_KEYS[{section!r}]: {sorted(missing)}"


def test_top_level_keys_cover_deepspeeds_own() -> None:
    import deepspeed.runtime.config as ds_config
    import deepspeed.runtime.constants as constants

    source = Path(ds_config.__file__).read_text()
    names = set(re.findall(r"get_scalar_param\(param_dict, ([A-Z_]+)", source))
    names |= set(re.findall(r"param_dict\.get\(([A-Z_]+)", source))
    keys = {getattr(constants, n) for n in names if isinstance(getattr(constants, n, None), str)}
    keys |= set(re.findall(r"param_dict\.get\([\"'](\w+)[\"']", source))
    keys |= set(re.findall(r"[\"'](\w+)[\"'] in param_dict", source))
    assert len(keys) > 20
    assert not keys - TOP_LEVEL_KEYS, f"add to TOP_LEVEL_KEYS: {sorted(keys - TOP_LEVEL_KEYS)}"
