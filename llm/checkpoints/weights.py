"""Full fp32 model weights (and Adam's states) from a checkpoint of any ZeRO stage, without DeepSpeed.

DeepSpeed's shards are torch pickles that name a few DeepSpeed classes (an enum for the ZeRO stage,
config objects); importing DeepSpeed to unpickle them costs seconds and its accelerator set-up. We
read them with stand-ins for those classes and rebuild the weights ourselves:

- ZeRO 0: `mp_rank_00_model_states.pt` holds the whole state dict.
- ZeRO 1 and 2: each rank's `*_optim_states.pt` holds its slice of one flat fp32 vector per parameter
  group; concatenated in rank order they give the group's vector, in which the parameters lie one
  after another in the order of `param_shapes` (saved in the model states file).
- ZeRO 3: every parameter is split into `world_size` equal pieces (the last padded); each rank's flat
  group holds its piece of every parameter in order, so a parameter is the concatenation of the
  ranks' pieces at the same offset, cut to its size.
Tied parameters are saved once; `shared_params` names the alias (lm_head.weight -> wte.weight).

Adam's moments lie the same way: in ZeRO 0's torch optimizer state dict, indexed by the parameters'
order across groups (the order of `param_shapes`), and in ZeRO 1 and 2's flat partitions beside the
fp32 weights. `read_adam_states` reads them per parameter name, so a checkpoint of one layout can be
loaded into an engine of the other (llm/train/checkpoint.py).
"""

from __future__ import annotations

import functools
import math
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from llm.checkpoints.catalogue import read_manifest
from llm.errors import UsageError


class _Opaque:
    """Stands in for any DeepSpeed class in a pickle: keeps what it was given, means nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "deepspeed":
            return type(name, (_Opaque,), {"__module__": module})
        return super().find_class(module, name)


# what torch.load needs of a pickle module
_PICKLE = SimpleNamespace(Unpickler=_Unpickler, load=pickle.load, __name__="llm_checkpoint_pickle")


def _load(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PICKLE, mmap=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path.name} does not hold a dict")
    return state


def _rank_of(path: Path) -> int:
    found = re.search(r"zero_pp_rank_(\d+)_", path.name)
    if found is None:
        raise ValueError(f"{path.name}: no rank in the file name")
    return int(found.group(1))


def _optimizer_shards(folder: Path) -> list[dict[str, Any]]:
    files = sorted(folder.glob("*_optim_states.pt"), key=_rank_of)
    if not files:
        raise ValueError("no *_optim_states.pt files")
    shards = [_load(f)["optimizer_state_dict"] for f in files]
    if [_rank_of(f) for f in files] != list(range(len(files))):
        raise ValueError("the optimizer shards are not ranks 0..N-1")
    return shards


def _zero12(
    shards: list[dict[str, Any]],
    param_shapes: list[dict[str, torch.Size]],
    flat_of: Callable[[dict[str, Any], int], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Per parameter, the numbers `flat_of(shard, group)` gives for each rank's partition of a group."""
    out: dict[str, torch.Tensor] = {}
    for group, shapes in enumerate(param_shapes):
        flat = torch.cat([flat_of(shard, group) for shard in shards])
        paddings = shards[0].get("param_alignment_paddings")
        offset = 0
        for index, (name, shape) in enumerate(shapes.items()):
            numel = math.prod(shape)
            out[name] = flat.narrow(0, offset, numel).view(shape).clone()
            offset += numel + (paddings[group][index] if paddings else 0)
        if offset > flat.numel():
            raise ValueError(f"group {group} needs {offset} numbers, the shards hold {flat.numel()}")
    return out


def _fp32_weights(shard: dict[str, Any], group: int) -> torch.Tensor:
    return shard["single_partition_of_fp32_groups"][group]


def _zero3(folder: Path, param_shapes: list[dict[str, torch.Size]]) -> dict[str, torch.Tensor]:
    shards = _optimizer_shards(folder)
    world = len(shards)
    # each rank's groups, end to end: its piece of every parameter, in order
    flats = [torch.cat(list(shard["fp32_flat_groups"])) for shard in shards]
    weights: dict[str, torch.Tensor] = {}
    offset = 0
    for shapes in param_shapes:
        for name, shape in shapes.items():
            numel = math.prod(shape)
            piece = math.ceil(numel / world)
            pieces = [flat.narrow(0, offset, piece) for flat in flats]
            weights[name] = torch.cat(pieces)[:numel].view(shape).clone()
            offset += piece
    if offset != flats[0].numel():
        raise ValueError(f"the parameters need {offset} numbers per rank, the shards hold {flats[0].numel()}")
    return weights


def read_zero_weights(folder: Path, *, zero_stage: int) -> dict[str, torch.Tensor]:
    """The fp32 state dict of the model in `folder`, for the ZeRO stage that wrote it."""
    model_file = folder / (
        "zero_pp_rank_0_mp_rank_00_model_states.pt" if zero_stage == 3 else "mp_rank_00_model_states.pt"
    )
    states = _load(model_file)
    if zero_stage == 0:
        return {k: v.float() for k, v in states["module"].items()}
    if states.get("frozen_param_shapes"):
        raise ValueError("frozen parameters are not supported")
    buffers = {k: v.float() for k, v in states["module"].items() if k in set(states.get("buffer_names", []))}
    param_shapes = list(states["param_shapes"])
    weights = (
        _zero3(folder, param_shapes)
        if zero_stage == 3
        else _zero12(_optimizer_shards(folder), param_shapes, _fp32_weights)
    )
    for alias, source in dict(states.get("shared_params", {})).items():
        weights[alias] = weights[source]
    return {**buffers, **weights}


def load_model_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The full fp32 model state dict from a complete checkpoint, whatever ZeRO stage wrote it."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise UsageError(f"{folder}: not a complete checkpoint (no valid manifest.json)")
    return read_zero_weights(folder, zero_stage=manifest.zero_stage)


ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


@dataclass(frozen=True)
class AdamStates:
    """Adam's moments per parameter name (fp32, full size) and the optimizer's step count."""

    moments: dict[str, dict[str, torch.Tensor]]
    step: float


def read_adam_states(folder: Path, *, zero_stage: int, order: dict[str, torch.Size]) -> AdamStates:
    """Adam's state of every parameter in a ZeRO 0, 1 or 2 checkpoint, by parameter name.

    `order`: the parameters' names and shapes in the order of the optimizer's groups, the order a
    ZeRO-0 optimizer state dict indexes them by (such a checkpoint does not name them).
    """
    if zero_stage not in (0, 1, 2):
        raise ValueError(f"ZeRO {zero_stage}: only ZeRO 0, 1 and 2 checkpoints are read per parameter")
    states = _load(folder / "mp_rank_00_model_states.pt")
    if zero_stage == 0:
        saved = states["optimizer"]["state"]
        if sorted(saved) != list(range(len(order))):
            raise ValueError(
                f"the optimizer holds state for {len(saved)} parameters, the model has {len(order)}"
            )
        moments = {name: {k: saved[i][k].float() for k in ADAM_MOMENTS} for i, name in enumerate(order)}
        steps = {float(state["step"]) for state in saved.values()}
    else:
        param_shapes, shards = list(states["param_shapes"]), _optimizer_shards(folder)  # read once
        by_key = {
            key: _zero12(shards, param_shapes, functools.partial(_moment, key=key)) for key in ADAM_MOMENTS
        }
        moments = {name: {key: by_key[key][name] for key in ADAM_MOMENTS} for name in by_key[ADAM_MOMENTS[0]]}
        steps = {float(state["step"]) for state in shards[0]["base_optimizer_state"]["state"].values()}
    for name, shape in order.items():
        found = moments.get(name, {}).get("exp_avg")
        if found is None or found.shape != shape:
            raise ValueError(
                f"{name}: the checkpoint holds {None if found is None else tuple(found.shape)}, "
                f"the model needs {tuple(shape)}"
            )
    if len(steps) != 1:
        raise ValueError(f"the parameters were stepped different numbers of times: {sorted(steps)}")
    return AdamStates(moments=moments, step=steps.pop())


def _moment(shard: dict[str, Any], group: int, *, key: str) -> torch.Tensor:
    return shard["base_optimizer_state"]["state"][group][key]
