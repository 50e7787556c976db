"""The DeepSpeed JSON is checked before launch: each mistake is one line naming file, key and fix."""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

from llm.ds_config import (
    ADAM_ENGINE_PARAMS,
    DEEPSPEED_OPTIMIZERS,
    OPTIMIZER_CLASS_PARAMS,
    SCHEDULER_PARAMS,
    SECTION_KEYS,
    TOP_LEVEL_KEYS,
    load_ds_config,
)
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


def _with(tmp_path: Path, base: str = "cpu.json", **sections: dict) -> Path:
    """A shipped config with `optimizer` / `scheduler` entries merged in (params merge one level deeper)."""
    config = json.loads((REPO / "ds_configs" / base).read_text())
    for name, update in sections.items():
        params = {**config.get(name, {}).get("params", {}), **update.pop("params", {})}
        config[name] = {**config.get(name, {}), **update, "params": params}
    return _write(tmp_path, config)


def test_optimizer_param_typo_suggests_the_nearest(tmp_path: Path) -> None:
    path = _with(tmp_path, optimizer={"params": {"weight_decy": 0.1}})
    assert _error(path) == (
        f'{path}: unknown key "optimizer.params.weight_decy"; did you mean "optimizer.params.weight_decay"?'
    )


def test_scheduler_param_typo_suggests_the_nearest(tmp_path: Path) -> None:
    path = _with(tmp_path, scheduler={"params": {"warmup_num_step": 10}})
    assert _error(path) == (
        f'{path}: unknown key "scheduler.params.warmup_num_step"; '
        'did you mean "scheduler.params.warmup_num_steps"?'
    )


def test_optimizer_params_follow_the_class_deepspeed_builds(tmp_path: Path) -> None:
    """torch_adam builds torch's AdamW, which takes `maximize`; DeepSpeed's FusedAdam and CPU Adam do not."""
    assert _load(_with(tmp_path, optimizer={"params": {"maximize": True, "foreach": False}})).config
    fused = json.loads((REPO / "ds_configs/bf16.json").read_text())
    fused["optimizer"]["params"]["maximize"] = True
    message = _error(_write(tmp_path, fused))
    assert 'unknown key "optimizer.params.maximize"' in message and "DeepSpeed's FusedAdam" in message
    assert "weight_decay" in message  # no near key: the line lists the keys the class takes
    offload = json.loads((REPO / "ds_configs/offload.json").read_text())
    offload["optimizer"]["params"]["set_grad_none"] = True  # FusedAdam takes it, DeepSpeedCPUAdam does not
    assert "DeepSpeed's DeepSpeedCPUAdam" in _error(_write(tmp_path, offload), cuda=True)
    # "Adam" (any case) with adam_w_mode false builds torch's Adam, which alone takes decoupled_weight_decay
    adam = {"type": "adam", "params": {"adam_w_mode": False, "decoupled_weight_decay": True}}
    assert _load(_with(tmp_path, optimizer=adam)).config["optimizer"]["params"]["adam_w_mode"] is False
    adamw = _with(tmp_path, optimizer={"params": {"decoupled_weight_decay": True}})
    assert 'unknown key "optimizer.params.decoupled_weight_decay"' in _error(adamw)


def test_scheduler_params_keep_auto_and_last_batch_iteration(tmp_path: Path) -> None:
    path = _with(tmp_path, scheduler={"params": {"last_batch_iteration": -1}})
    assert _load(path, max_steps=7).config["scheduler"]["params"]["total_num_steps"] == 7
    warmup = _with(tmp_path, scheduler={"type": "WarmupLR", "params": {}})
    assert 'unknown key "scheduler.params.total_num_steps"' in _error(warmup)  # WarmupLR has no end


@pytest.mark.parametrize(
    ("section", "kind", "hint"),
    [
        ("optimizer", "AdamWW", 'did you mean "AdamW"?'),
        ("optimizer", "sgd", 'did you mean "SGD"?'),  # torch.optim names are case-sensitive in DeepSpeed
        ("scheduler", "WarmupCosine", 'did you mean "WarmupCosineLR"?'),
        ("scheduler", "cosineannealinglr", 'did you mean "CosineAnnealingLR"?'),
        ("optimizer", "Frobnicate", "use one of Adagrad, Adam, AdamW"),
    ],
)
def test_unknown_type_suggests_the_nearest(tmp_path: Path, section: str, kind: str, hint: str) -> None:
    path = _with(tmp_path, **{section: {"type": kind}})
    assert _error(path).startswith(f'{path}: unknown {section} "{kind}" in "{section}.type"; {hint}')


def test_torch_fallback_types_are_checked_against_torch(tmp_path: Path) -> None:
    """A type DeepSpeed does not build itself is torch.optim.<type> or torch.optim.lr_scheduler.<type>."""
    sgd = {"type": "SGD", "params": {"lr": 0.1, "momentum": 0.9, "nesterov": True}}
    step = {"type": "StepLR", "params": {"step_size": 10, "gamma": 0.5}}
    settings = _load(
        _write(tmp_path, {"train_micro_batch_size_per_gpu": 8, "optimizer": sgd, "scheduler": step})
    )
    assert settings.config["optimizer"]["type"] == "SGD"
    sgd["params"] = {"lr": 0.1, "nestrov": True}
    message = _error(_write(tmp_path, {"train_micro_batch_size_per_gpu": 8, "optimizer": sgd}))
    assert 'did you mean "optimizer.params.nesterov"?' in message
    step["params"] = {"step_size": 10, "gama": 0.5}
    message = _error(_write(tmp_path, {"train_micro_batch_size_per_gpu": 8, "scheduler": step}))
    assert 'did you mean "scheduler.params.gamma"?' in message


def test_other_optimizer_mistakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = _error(_with(tmp_path, optimizer={"params": {"max_grad_norm": 1.0}}))
    assert '"optimizer.params.max_grad_norm"' in clip and '"gradient_clipping"' in clip
    untyped = {"train_micro_batch_size_per_gpu": 8, "optimizer": {"params": {"lr": 1e-3}}}
    assert '"optimizer" has no "type"' in _error(_write(tmp_path, untyped))
    listed = {"train_micro_batch_size_per_gpu": 8, "scheduler": {"type": "WarmupLR", "params": [100]}}
    assert '"scheduler.params" must be a JSON object' in _error(_write(tmp_path, listed))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mup" else real(name, *a)
    )
    assert "pip install mup" in _error(_with(tmp_path, optimizer={"type": "MuAdamW"}))


def _signature_keywords(cls: type, *, passed_by_deepspeed: set[str]) -> set[str]:
    params = list(inspect.signature(cls).parameters)[1:]  # after params / model_params / optimizer
    return set(params) - passed_by_deepspeed


# keyword arguments the engine passes itself (get_optimizer_configuration) or refuses (max_grad_norm)
_PASSED_BY_DEEPSPEED = {
    "deepspeed.ops.adam.FusedAdam": {"adam_w_mode"},
    "deepspeed.ops.adam.DeepSpeedCPUAdam": {"adamw_mode", "fp32_optimizer_states"},
    "deepspeed.ops.lamb.FusedLamb": {"max_grad_norm"},
}


@pytest.mark.parametrize("qualname", [n for n in OPTIMIZER_CLASS_PARAMS if not n.endswith("MuonWithAuxAdam")])
def test_optimizer_params_match_the_real_signatures(qualname: str) -> None:
    """Our static table equals each class's keyword arguments, so it neither refuses a real one nor drifts."""
    module, name = qualname.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    passed = _PASSED_BY_DEEPSPEED.get(qualname, set())
    assert OPTIMIZER_CLASS_PARAMS[qualname] == _signature_keywords(cls, passed_by_deepspeed=passed)


def test_optimizer_table_matches_the_engine() -> None:
    """Names, the keys the engine pops itself, and Muon's keys, read from DeepSpeed's own engine."""
    import deepspeed.runtime.config as ds_config
    import deepspeed.runtime.engine as engine

    assert {n.lower() for n in DEEPSPEED_OPTIMIZERS} == set(ds_config.DEEPSPEED_OPTIMIZERS)
    source = Path(engine.__file__).read_text()
    popped = re.findall(r"optimizer_parameters\.pop\((\w+|'\w+'|\"\w+\")", source)
    keys = {p.strip("'\"") if p[0] in "'\"" else getattr(ds_config, p) for p in popped}
    assert keys == ADAM_ENGINE_PARAMS | {"foreach"}
    assert '"max_grad_norm" in optimizer_parameters' in source  # the refusal we turn into one line
    overrides = set(re.findall(r'_muon_half_defaults\(optimizer_parameters,\s*\w+,\s*"(\w+)"\)', source))
    muon = {*engine.DeepSpeedEngine._MUON_HALF_KEYS, *engine.DeepSpeedEngine._ADAM_HALF_KEYS, *overrides}
    assert (
        overrides
        and OPTIMIZER_CLASS_PARAMS["deepspeed.runtime.zero.muon.muon_optimizer.MuonWithAuxAdam"] == muon
    )


def test_scheduler_params_match_deepspeeds_schedules() -> None:
    from deepspeed.runtime import lr_schedules

    assert set(SCHEDULER_PARAMS) == set(lr_schedules.VALID_LR_SCHEDULES)
    for name, keys in SCHEDULER_PARAMS.items():
        assert keys == _signature_keywords(getattr(lr_schedules, name), passed_by_deepspeed=set()), name


@pytest.mark.parametrize(
    ("base", "zero", "world_size", "cuda", "runs"),
    [
        ("cpu.json", {"stage": 1}, 1, False, 0),  # one fp32 rank: nothing to partition
        ("cpu.json", {"stage": 2, "overlap_comm": True}, 1, False, 0),
        ("cpu.json", {"stage": 1}, 2, False, 1),  # two ranks partition
        ("cpu.json", {"stage": 3}, 1, False, 3),  # ZeRO-3 checkpoints load only into ZeRO-3
        ("cpu-bf16.json", {"stage": 1}, 1, False, 1),  # bf16's ZeRO-0 optimizer saves another layout
        ("3090.json", None, 1, True, 2),  # fp16 likewise
        ("offload.json", None, 1, True, 2),  # offload is there to move memory off the device
        ("cpu.json", {"stage": 1, "offload_optimizer": {"device": "cpu"}}, 1, False, 1),
        ("sgd", {"stage": 1}, 1, False, 1),  # Adam's states are what moves between the layouts
        ("fused adam", {"stage": 1}, 1, False, 1),  # and torch's Adam keeps them per parameter
    ],
)
def test_one_rank_runs_zero1_and_2_at_zero0_where_fp32_states_stay_portable(
    tmp_path: Path, base: str, zero: dict | None, world_size: int, cuda: bool, runs: int
) -> None:
    config = json.loads(
        (REPO / "ds_configs" / base.replace("sgd", "cpu.json").replace("fused adam", "cpu.json")).read_text()
    )
    if base == "sgd":
        config["optimizer"] = {"type": "SGD", "params": {"lr": 0.5}}
        config["zero_allow_untested_optimizer"] = True
    if base == "fused adam":
        config["optimizer"]["params"] = {"lr": 1e-3}  # DeepSpeed's FusedAdam
    if zero is not None:
        config["zero_optimization"] = zero
    settings = _load(_write(tmp_path, config), world_size=world_size, cuda=cuda)
    assert settings.json_zero_stage == config["zero_optimization"]["stage"]
    assert settings.zero_stage == runs
    assert settings.config["zero_optimization"]["stage"] == runs  # what DeepSpeed is handed
    assert {k: v for k, v in settings.config["zero_optimization"].items() if k != "stage"} == {
        k: v for k, v in config["zero_optimization"].items() if k != "stage"
    }
