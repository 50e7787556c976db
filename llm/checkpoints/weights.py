"""Full fp32 model weights from a checkpoint of any ZeRO stage, without DeepSpeed.

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
"""

from __future__ import annotations

import math
import pickle
import re
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


def _zero12(folder: Path, param_shapes: list[dict[str, torch.Size]]) -> dict[str, torch.Tensor]:
    shards = _optimizer_shards(folder)
    weights: dict[str, torch.Tensor] = {}
    for group, shapes in enumerate(param_shapes):
        flat = torch.cat([shard["single_partition_of_fp32_groups"][group] for shard in shards])
        paddings = shards[0].get("param_alignment_paddings")
        offset = 0
        for index, (name, shape) in enumerate(shapes.items()):
            numel = math.prod(shape)
            weights[name] = flat.narrow(0, offset, numel).view(shape).clone()
            offset += numel + (paddings[group][index] if paddings else 0)
        if offset > flat.numel():
            raise ValueError(f"group {group} needs {offset} numbers, the shards hold {flat.numel()}")
    return weights


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
    weights = (_zero3 if zero_stage == 3 else _zero12)(folder, param_shapes)
    for alias, source in dict(states.get("shared_params", {})).items():
        weights[alias] = weights[source]
    return {**buffers, **weights}


def load_model_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The full fp32 model state dict from a complete checkpoint, whatever ZeRO stage wrote it."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise UsageError(f"{folder}: not a complete checkpoint (no valid manifest.json)")
    return read_zero_weights(folder, zero_stage=manifest.zero_stage)
