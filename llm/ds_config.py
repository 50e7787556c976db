"""The DeepSpeed JSON: load it, check it, explain what is wrong, before any rank starts work.

DeepSpeed silently ignores keys it does not know, so a typo (`"gradient_acumulation_steps"`) would
train with the default instead. We refuse unknown keys, suggesting the nearest valid one.

Two values may be written as `"auto"`, as in Hugging Face's integration: `train_batch_size`
(micro-batch x accumulation x world size) and `scheduler.params.total_num_steps` (`--max-steps`).
"""

from __future__ import annotations

import difflib
import importlib.util
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
    zero_stage: int


def load_ds_config(path: Path, *, world_size: int, cuda_available: bool, max_steps: int) -> DeepSpeedSettings:
    """Read and validate `path`; raise UsageError with one line naming file, key and fix."""
    config = _read_json(path)
    _check_keys(path, config)
    precision = _precision(path, config, cuda_available=cuda_available)
    micro, accum, total = _batch_sizes(path, config, world_size=world_size)
    config["train_micro_batch_size_per_gpu"] = micro
    config["gradient_accumulation_steps"] = accum
    config["train_batch_size"] = total
    _resolve_scheduler(path, config, max_steps=max_steps)
    _check_monitor_packages(path, config)
    stage = _zero_stage(path, config)
    return DeepSpeedSettings(
        path=path,
        config=config,
        micro_batch=micro,
        gradient_accumulation=accum,
        train_batch=total,
        precision=precision,
        zero_stage=stage,
    )


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


def _reject_unknown(path: Path, prefix: str, node: dict[str, Any], valid: frozenset[str]) -> None:
    for key in node:
        if key in valid:
            continue
        near = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
        hint = f'did you mean "{prefix}{near[0]}"?' if near else "remove it (DeepSpeed would ignore it)"
        raise UsageError(f'{path}: unknown key "{prefix}{key}"; {hint}')


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
