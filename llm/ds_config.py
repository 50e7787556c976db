"""The DeepSpeed JSON: load it, check it, explain what is wrong, before any rank starts work.

DeepSpeed silently ignores keys it does not know, so a typo (`"gradient_acumulation_steps"`) would
train with the default instead. We refuse unknown keys, suggesting the nearest valid one. Keys inside
`optimizer.params` and `scheduler.params` are handed to a constructor as keyword arguments, where a typo
ends in a TypeError deep inside `deepspeed.initialize`: we check them against the class DeepSpeed would
build, from static tables (no DeepSpeed import) or, for a torch.optim fallback, torch's own signature.

Two values may be written as `"auto"`, as in Hugging Face's integration: `train_batch_size`
(micro-batch x accumulation x world size) and `scheduler.params.total_num_steps` (`--max-steps`).
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llm.errors import UsageError, read_json

Precision = Literal["fp32", "fp16", "bf16"]

# Top-level keys DeepSpeed 0.19 reads (runtime/config.py and the feature configs it hands sections to).
# tests/test_ds_config.py checks these against DeepSpeed's own sources so the list cannot drift.
TOP_LEVEL_KEYS = frozenset(
    """
    train_batch_size train_micro_batch_size_per_gpu gradient_accumulation_steps steps_per_print
    dump_state optimizer scheduler fp16 bf16 bfloat16 amp torch_autocast gradient_clipping
    prescale_gradients gradient_predivide_factor gradient_allreduce_op sparse_gradients
    communication_data_type seq_parallel_communication_data_type zero_optimization
    zero_allow_untested_optimizer zero_force_ds_cpu_optimizer activation_checkpointing
    wall_clock_breakdown memory_breakdown flops_profiler tensorboard wandb csv_monitor comet
    comms_logger aio checkpoint data_types dataloader_drop_last disable_allgather disable_python_gc
    elasticity autotuning curriculum_learning data_efficiency compression_training sparse_attention
    pipeline pld progressive_layer_drop eigenvalue quantize_training hybrid_engine compile
    weight_quantization expert_parallel use_data_before_expert_parallelism vocabulary_size
    sequence_parallel_size mics_shard_size mics_hierarchical_params_gather nebula timers
    graph_harvesting use_node_local_storage load_universal_checkpoint log_level
    managed_gradient_accumulation tensor_parallel zenflow
    """.split()
)

_OFFLOAD_OPTIMIZER = frozenset(
    "device nvme_path buffer_count pin_memory pipeline_read pipeline_write fast_init ratio "
    "cpuadam_cores_perc super_offload".split()
)
_OFFLOAD_PARAM = frozenset("device nvme_path buffer_count buffer_size max_in_cpu pin_memory".split())

# Sections whose keys we also check (those our shipped configs use). Other sections pass through.
SECTION_KEYS: dict[str, frozenset[str]] = {
    "zero_optimization": frozenset(
        """
        stage contiguous_gradients reduce_scatter reduce_bucket_size use_multi_rank_bucket_allreduce
        allgather_partitions allgather_bucket_size overlap_comm load_from_fp32_weights
        elastic_checkpoint offload_param offload_optimizer sub_group_size cpu_offload_param
        cpu_offload_use_pin_memory cpu_offload prefetch_bucket_size stage3_prefetch_bucket_size
        param_persistence_threshold stage3_param_persistence_threshold model_persistence_threshold
        stage3_model_persistence_threshold max_live_parameters stage3_max_live_parameters
        max_reuse_distance stage3_max_reuse_distance gather_16bit_weights_on_model_save
        stage3_gather_16bit_weights_on_model_save stage3_gather_fp16_weights_on_model_save
        module_granularity_threshold stage3_module_granularity_threshold use_all_reduce_for_fetch_params
        stage3_use_all_reduce_for_fetch_params allgather_sequential stage3_allgather_sequential
        ignore_unused_parameters legacy_stage1 round_robin_gradients zero_hpz_partition_size
        zero_quantized_weights zero_quantized_nontrainable_weights zero_quantized_gradients
        memory_efficient_linear pipeline_loading_checkpoint override_module_apply
        log_trace_cache_warnings enable_sanity_checks leaf_module compute_grad_norm parameter_alignment
        save_muon_momentum_buffer_in_memory zenflow mics_shard_size mics_hierarchical_params_gather
        """.split()
    ),
    "zero_optimization.offload_optimizer": _OFFLOAD_OPTIMIZER,
    "zero_optimization.offload_param": _OFFLOAD_PARAM,
    "fp16": frozenset(
        "enabled auto_cast loss_scale initial_scale_power loss_scale_window hysteresis "
        "consecutive_hysteresis min_loss_scale fp16_master_weights_and_grads".split()
    ),
    "bf16": frozenset(
        "enabled immediate_grad_update check_grad_overflow bf16_master_weights_and_grads "
        "bf16_optimizer_states".split()
    ),
    "optimizer": frozenset({"type", "params", "legacy_fusion"}),
    "scheduler": frozenset({"type", "params"}),
    "tensorboard": frozenset({"enabled", "output_path", "job_name"}),
    "csv_monitor": frozenset({"enabled", "output_path", "job_name"}),
    "wandb": frozenset({"enabled", "group", "team", "project"}),
    "activation_checkpointing": frozenset(
        "partition_activations number_checkpoints contiguous_memory_optimization "
        "synchronize_checkpoint_boundary profile cpu_checkpointing".split()
    ),
}

# What `optimizer.params` may hold, per class DeepSpeed 0.19's `_configure_basic_optimizer` builds: its
# keyword arguments minus the parameters and those the engine passes itself. tests/test_ds_config.py checks
# each against the class's signature, so the table cannot drift.
OPTIMIZER_CLASS_PARAMS: dict[str, frozenset[str]] = {
    "deepspeed.ops.adam.FusedAdam": frozenset(
        "lr bias_correction betas eps weight_decay amsgrad set_grad_none".split()
    ),
    "deepspeed.ops.adam.DeepSpeedCPUAdam": frozenset(
        "lr bias_correction betas eps weight_decay amsgrad".split()
    ),
    "deepspeed.ops.lamb.FusedLamb": frozenset(
        "lr bias_correction betas eps eps_inside_sqrt weight_decay max_coeff min_coeff amsgrad".split()
    ),
    "deepspeed.ops.lion.FusedLion": frozenset("lr betas weight_decay set_grad_none".split()),
    "deepspeed.ops.lion.DeepSpeedCPULion": frozenset("lr betas weight_decay fp32_optimizer_states".split()),
    "deepspeed.ops.adagrad.DeepSpeedCPUAdagrad": frozenset(
        "lr eps weight_decay amsgrad fp32_optimizer_states".split()
    ),
    "torch.optim.Adam": frozenset(
        "lr betas eps weight_decay amsgrad foreach maximize capturable differentiable fused "
        "decoupled_weight_decay".split()
    ),
    "torch.optim.AdamW": frozenset(
        "lr betas eps weight_decay amsgrad maximize foreach capturable differentiable fused".split()
    ),
    "torch.optim.Adagrad": frozenset(
        "lr lr_decay weight_decay initial_accumulator_value eps foreach maximize differentiable fused".split()
    ),
    # MuonWithAuxAdam takes prepared groups: the engine reads these keys into them and ignores others
    "deepspeed.runtime.zero.muon.muon_optimizer.MuonWithAuxAdam": frozenset(
        "lr momentum weight_decay ns_method betas eps muon_lr adam_lr".split()
    ),
}
# Keys the engine pops from `optimizer.params` for Adam, AdamW and Muon (`foreach` too, with torch_adam)
ADAM_ENGINE_PARAMS = frozenset({"torch_adam", "adam_w_mode", "fp32_optimizer_states"})
# `optimizer.type` names the engine builds itself (any case); any other type is torch.optim.<type>
DEEPSPEED_OPTIMIZERS = ("Adagrad", "Adam", "AdamW", "Lamb", "Lion", "Muon", "MuAdam", "MuAdamW", "MuSGD")
_MUP_OPTIMIZERS = frozenset({"muadam", "muadamw", "musgd"})  # mup's functions forward **kwargs; not checked

# `scheduler.type` names in deepspeed.runtime.lr_schedules (case-sensitive), with their constructors' keyword
# arguments minus `optimizer`; any other type is torch.optim.lr_scheduler.<type>. Checked by the tests too.
_WARMUP = "warmup_min_lr warmup_max_lr warmup_num_steps warmup_type last_batch_iteration"
SCHEDULER_PARAMS: dict[str, frozenset[str]] = {
    "LRRangeTest": frozenset(
        "lr_range_test_min_lr lr_range_test_step_size lr_range_test_step_rate lr_range_test_staircase "
        "last_batch_iteration".split()
    ),
    "OneCycle": frozenset(
        "cycle_min_lr cycle_max_lr decay_lr_rate cycle_first_step_size cycle_second_step_size "
        "cycle_first_stair_count cycle_second_stair_count decay_step_size cycle_momentum cycle_min_mom "
        "cycle_max_mom decay_mom_rate last_batch_iteration".split()
    ),
    "WarmupLR": frozenset(_WARMUP.split()),
    "WarmupDecayLR": frozenset(["total_num_steps", *_WARMUP.split()]),
    "WarmupCosineLR": frozenset(
        "total_num_steps warmup_min_ratio warmup_num_steps cos_min_ratio warmup_type "
        "last_batch_iteration".split()
    ),
}

_AUTO = "auto"


@dataclass(frozen=True)
class DeepSpeedSettings:
    """The values our code needs from the JSON, and the JSON itself as handed to DeepSpeed."""

    path: Path
    config: dict[str, Any]
    micro_batch: int
    gradient_accumulation: int
    train_batch: int
    precision: Precision
    zero_stage: int  # the stage DeepSpeed runs (config's), which on one rank may be below the JSON's
    json_zero_stage: int  # the stage the JSON asks for


def load_ds_config(path: Path, *, world_size: int, cuda_available: bool, max_steps: int) -> DeepSpeedSettings:
    """Read and validate `path`; raise UsageError with one line naming file, key and fix."""
    config = _read_json(path)
    _check_keys(path, config)
    _check_optimizer(path, config)
    _check_scheduler(path, config)
    precision = _precision(path, config, cuda_available=cuda_available)
    micro, accum, total = _batch_sizes(path, config, world_size=world_size)
    config["train_micro_batch_size_per_gpu"] = micro
    config["gradient_accumulation_steps"] = accum
    config["train_batch_size"] = total
    _resolve_scheduler(path, config, max_steps=max_steps)
    _check_monitor_packages(path, config)
    json_stage = _zero_stage(path, config)
    stage = one_rank_stage(config, json_stage, world_size=world_size, precision=precision)
    if stage != json_stage:
        config["zero_optimization"] = {**config["zero_optimization"], "stage": stage}
    return DeepSpeedSettings(
        path=path,
        config=config,
        micro_batch=micro,
        gradient_accumulation=accum,
        train_batch=total,
        precision=precision,
        zero_stage=stage,
        json_zero_stage=json_stage,
    )


def one_rank_stage(config: dict[str, Any], stage: int, *, world_size: int, precision: Precision) -> int:
    """The ZeRO stage to run: 0 where the JSON's 1 or 2 would partition over a single fp32 rank.

    ZeRO 1 and 2 split the optimizer states and gradients among ranks; on one rank they split nothing,
    yet DeepSpeed still copies every gradient into its buckets and partitions, flattens them again and
    copies the weights back each step: 1.56x ZeRO-0's step at gpt2-small's shape on a CPU
    (benchmarks/engine_ab.py). ZeRO-0 runs the same optimizer on the same numbers. Its checkpoints differ
    in layout only, and llm/train/checkpoint.py moves Adam's states between the layouts. So this holds
    for torch's Adam and AdamW (`"torch_adam": true`) in fp32; fp16 and bf16 keep the JSON's stage
    (DeepSpeed's ZeRO-0 optimizers for them save yet other layouts), as do other optimizers and
    ZeRO-Offload (it is there to move memory off the device).
    """
    optimizer = config.get("optimizer") or {}
    torch_adam = str(optimizer.get("type", "")).lower() in ("adam", "adamw") and bool(
        (optimizer.get("params") or {}).get("torch_adam")
    )
    if world_size == 1 and stage in (1, 2) and precision == "fp32" and torch_adam and not _offloads(config):
        return 0
    return stage


def _offloads(config: dict[str, Any]) -> bool:
    zero = config.get("zero_optimization") or {}
    return _optimizer_on_cpu(config) or (zero.get("offload_param") or {}).get("device") in ("cpu", "nvme")


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(
        path,
        what="DeepSpeed config",
        fix="give a file from ds_configs/ to --deepspeed (JSON has no comments or trailing commas)",
    )
    if not isinstance(data, dict):
        raise UsageError(
            f"{path}: a DeepSpeed config must be a JSON object {{...}}, not {type(data).__name__}"
        )
    return data


def _check_keys(path: Path, config: dict[str, Any]) -> None:
    _reject_unknown(path, "", config, TOP_LEVEL_KEYS)
    for section, valid in SECTION_KEYS.items():
        node: Any = config
        for part in section.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            continue
        if not isinstance(node, dict):
            raise UsageError(f'{path}: "{section}" must be a JSON object {{...}}')
        _reject_unknown(path, section + ".", node, valid)


def _reject_unknown(
    path: Path, prefix: str, node: dict[str, Any], valid: frozenset[str], *, owner: str | None = None
) -> None:
    """Refuse a key not in `valid`; `owner` names the class a params section is handed to."""
    for key in node:
        if key in valid:
            continue
        near = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
        if near:
            hint = f'did you mean "{prefix}{near[0]}"?'
        elif owner:
            hint = f"{owner} takes: {', '.join(sorted(valid)) or 'none'}"
        else:
            hint = "remove it (DeepSpeed would ignore it)"
        raise UsageError(f'{path}: unknown key "{prefix}{key}"; {hint}')


def _type_and_params(path: Path, config: dict[str, Any], section: str) -> tuple[str, dict[str, Any]] | None:
    """`section.type` and `section.params` as DeepSpeed reads them; None when the section is absent."""
    node = config.get(section)
    if node is None:
        return None
    kind, params = node.get("type"), node.get("params", {})
    if not isinstance(params, dict):
        raise UsageError(f'{path}: "{section}.params" must be a JSON object {{...}}')
    if kind is None:  # DeepSpeed would then ignore the whole section, params included
        raise UsageError(f'{path}: "{section}" has no "type"; name the {section}, e.g. {_EXAMPLE[section]}')
    if not isinstance(kind, str):
        raise UsageError(
            f'{path}: "{section}.type" must be a name such as {_EXAMPLE[section]}, got {json.dumps(kind)}'
        )
    return kind, params


_EXAMPLE = {"optimizer": '"AdamW"', "scheduler": '"WarmupCosineLR"'}


def _unknown_type(path: Path, section: str, kind: str, names: list[str]) -> UsageError:
    by_lower = {name.lower(): name for name in names}  # the hint ignores case; torch's names do not
    near = difflib.get_close_matches(kind.lower(), sorted(by_lower), n=1, cutoff=0.6)
    hint = f'did you mean "{by_lower[near[0]]}"?' if near else f"use one of {', '.join(by_lower.values())}"
    return UsageError(f'{path}: unknown {section} "{kind}" in "{section}.type"; {hint}')


def _torch_classes(module: str, base: str) -> dict[str, type]:
    """Public subclasses of `base` in a torch.optim module (imported only for a non-DeepSpeed type)."""
    namespace = vars(importlib.import_module(module))
    root = namespace[base]
    return {
        name: obj
        for name, obj in namespace.items()
        if isinstance(obj, type) and issubclass(obj, root) and obj is not root and not name.startswith("_")
    }


def _keyword_params(cls: type) -> frozenset[str] | None:
    """A torch class's keyword arguments after the first (params / optimizer); None if it takes **kwargs."""
    params = list(inspect.signature(cls).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _optimizer_on_cpu(config: dict[str, Any]) -> bool:
    """DeepSpeed's zero_use_cpu_optimizer(): ZeRO-Offload builds its CPU optimizers instead."""
    zero = config.get("zero_optimization") or {}
    offload = zero.get("offload_optimizer")
    if isinstance(offload, dict):
        return offload.get("device") in ("cpu", "nvme")
    return bool(zero.get("cpu_offload"))  # the deprecated spelling of offload_optimizer.device = cpu


def _deepspeed_optimizer_class(
    name: str, params: dict[str, Any], *, on_cpu: bool
) -> tuple[str, frozenset[str]]:
    """The class DeepSpeed builds for one of its own `optimizer.type`s, and the keys that allows."""
    adam_like, torch_adam = name in ("adam", "adamw", "muon"), bool(params.get("torch_adam"))
    if name == "muon":
        cls = "deepspeed.runtime.zero.muon.muon_optimizer.MuonWithAuxAdam"
    elif adam_like and torch_adam:
        adam_w = name == "adamw" or params.get("adam_w_mode", True)  # as the engine decides
        cls = "torch.optim.AdamW" if adam_w else "torch.optim.Adam"
    elif adam_like:
        cls = "deepspeed.ops.adam.DeepSpeedCPUAdam" if on_cpu else "deepspeed.ops.adam.FusedAdam"
    elif name == "adagrad":
        cls = "deepspeed.ops.adagrad.DeepSpeedCPUAdagrad" if on_cpu else "torch.optim.Adagrad"
    elif name == "lion":
        cls = "deepspeed.ops.lion.DeepSpeedCPULion" if on_cpu else "deepspeed.ops.lion.FusedLion"
    else:
        cls = "deepspeed.ops.lamb.FusedLamb"
    valid = OPTIMIZER_CLASS_PARAMS[cls]
    if adam_like:
        valid |= ADAM_ENGINE_PARAMS | ({"foreach"} if torch_adam else set())
    return cls if cls.startswith("torch.") else f"DeepSpeed's {cls.rsplit('.', 1)[1]}", valid


def _check_optimizer(path: Path, config: dict[str, Any]) -> None:
    found = _type_and_params(path, config, "optimizer")
    if found is None:
        return
    kind, params = found
    if "max_grad_norm" in params:  # DeepSpeed raises on it for every optimizer
        raise UsageError(
            f'{path}: "optimizer.params.max_grad_norm" is not taken by DeepSpeed; set the top-level '
            '"gradient_clipping" instead'
        )
    name = kind.lower()
    if name in _MUP_OPTIMIZERS:
        if importlib.util.find_spec("mup") is None:
            raise UsageError(
                f'{path}: optimizer "{kind}" needs the mup package; pip install mup (into .venv)'
            )
        return
    if name in {n.lower() for n in DEEPSPEED_OPTIMIZERS}:
        cls, valid = _deepspeed_optimizer_class(name, params, on_cpu=_optimizer_on_cpu(config))
    else:
        classes = _torch_classes("torch.optim", "Optimizer")
        if kind not in classes:
            raise _unknown_type(path, "optimizer", kind, [*DEEPSPEED_OPTIMIZERS, *sorted(classes)])
        cls, maybe_valid = f"torch.optim.{kind}", _keyword_params(classes[kind])
        if maybe_valid is None:
            return
        valid = maybe_valid
    _reject_unknown(path, "optimizer.params.", params, valid, owner=f'optimizer "{kind}" ({cls})')


def _check_scheduler(path: Path, config: dict[str, Any]) -> None:
    found = _type_and_params(path, config, "scheduler")
    if found is None:
        return
    kind, params = found
    valid = SCHEDULER_PARAMS.get(kind)
    owner = f'scheduler "{kind}"'
    if valid is None:
        classes = _torch_classes("torch.optim.lr_scheduler", "LRScheduler")
        if kind not in classes:
            raise _unknown_type(path, "scheduler", kind, [*SCHEDULER_PARAMS, *sorted(classes)])
        valid, owner = _keyword_params(classes[kind]), f"{owner} (torch.optim.lr_scheduler.{kind})"
        if valid is None:
            return
    _reject_unknown(path, "scheduler.params.", params, valid, owner=owner)


def _enabled(config: dict[str, Any], section: str) -> bool:
    value = config.get(section, {})
    return bool(isinstance(value, dict) and value.get("enabled", False))


def _precision(path: Path, config: dict[str, Any], *, cuda_available: bool) -> Precision:
    fp16, bf16 = _enabled(config, "fp16"), _enabled(config, "bf16")
    if fp16 and bf16:
        raise UsageError(f'{path}: "fp16.enabled" and "bf16.enabled" are both true; enable one of them')
    if fp16 and not cuda_available:
        raise UsageError(
            f'{path}: "fp16" needs a CUDA GPU and none was found; use ds_configs/cpu.json (fp32) on this '
            "machine"
        )
    return "fp16" if fp16 else "bf16" if bf16 else "fp32"


def _positive_int(path: Path, config: dict[str, Any], key: str) -> int | None:
    value = config.get(key)
    if value is None or (value == _AUTO and key == "train_batch_size"):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f'{path}: "{key}" must be a whole number >= 1, got {json.dumps(value)}')
    return value


def _batch_sizes(path: Path, config: dict[str, Any], *, world_size: int) -> tuple[int, int, int]:
    """Resolve micro-batch, accumulation and train batch as DeepSpeed does, but fail with a fix."""
    micro = _positive_int(path, config, "train_micro_batch_size_per_gpu")
    accum = _positive_int(path, config, "gradient_accumulation_steps")
    total = _positive_int(path, config, "train_batch_size")
    if micro is None and total is None:
        raise UsageError(f'{path}: set "train_micro_batch_size_per_gpu" (the batch each rank runs at once)')
    if micro is None:
        assert total is not None
        accum = accum or 1
        micro, rest = divmod(total, accum * world_size)
        if rest or micro == 0:
            raise UsageError(
                f'{path}: "train_batch_size" {total} is not divisible by gradient_accumulation_steps '
                f"{accum} x {world_size} ranks; set it to a multiple of {accum * world_size}"
            )
    elif accum is None:
        if total is None:
            accum = 1
        else:
            accum, rest = divmod(total, micro * world_size)
            if rest or accum == 0:
                raise UsageError(
                    f'{path}: "train_batch_size" {total} is not a multiple of train_micro_batch_size_per_gpu '
                    f"{micro} x {world_size} ranks; set it to {micro * world_size * max(1, accum)} or "
                    '"auto"'
                )
    expected = micro * accum * world_size
    if total is not None and total != expected:
        raise UsageError(
            f'{path}: "train_batch_size" {total} != train_micro_batch_size_per_gpu {micro} x '
            f"gradient_accumulation_steps {accum} x {world_size} ranks = {expected}; set it to {expected} "
            'or "auto"'
        )
    return micro, accum, expected


def _resolve_scheduler(path: Path, config: dict[str, Any], *, max_steps: int) -> None:
    params = config.get("scheduler", {}).get("params", {})
    if not isinstance(params, dict):
        raise UsageError(f'{path}: "scheduler.params" must be a JSON object {{...}}')
    if params.get("total_num_steps") == _AUTO:
        params["total_num_steps"] = max_steps


# DeepSpeed imports these only when the monitor is created, deep inside deepspeed.initialize
_MONITOR_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "comet": "comet_ml"}


def _check_monitor_packages(path: Path, config: dict[str, Any]) -> None:
    for section, package in _MONITOR_PACKAGES.items():
        if _enabled(config, section) and importlib.util.find_spec(package) is None:
            raise UsageError(
                f'{path}: "{section}.enabled" needs the {package} package, which is not installed; '
                f"pip install {package} (into .venv), or disable the section"
            )


def _zero_stage(path: Path, config: dict[str, Any]) -> int:
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise UsageError(f'{path}: "zero_optimization.stage" must be 0, 1, 2 or 3, got {json.dumps(stage)}')
    return int(stage)
