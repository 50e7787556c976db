"""Small CPU-side collectives at step boundaries: stop flags, decisions from rank 0, problem reports."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


class Collectives:
    """Small CPU-side collectives at step boundaries (stop flags, decisions from rank 0).

    They run over gloo even when gradients go over NCCL, so they never synchronise the GPU, and they
    inherit the job's timeout: a frozen rank ends the job instead of hanging it.
    """

    def __init__(self, *, timeout_s: float, force_group: bool = False) -> None:
        # every rank must create groups in the same order: callers construct Collectives identically
        own_group = force_group or dist.get_backend() != "gloo"
        self._group = (
            dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s)) if own_group else None
        )
        self.world_size = dist.get_world_size()

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any rank."""
        return self.flags(flag)[0]

    def flags(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true on every rank if it is true on any rank: one small all-reduce for all."""
        if self.world_size == 1:
            return flags
        values = torch.tensor([int(f) for f in flags], dtype=torch.int32)
        dist.all_reduce(values, op=dist.ReduceOp.MAX, group=self._group)
        return tuple(bool(v) for v in values.tolist())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._group)
        return out

    def mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, group=self._group)
        return float(tensor.item()) / self.world_size

    def sum(self, values: torch.Tensor) -> None:
        """Sum a CPU tensor over ranks, in place."""
        if self.world_size > 1:
            dist.all_reduce(values, group=self._group)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier(group=self._group)

    def unresponsive_ranks(self, *, timeout_s: float = 10.0) -> list[int]:
        """After a collective timed out: the ranks that do not answer a monitored barrier ([] if unknown).

        Every rank that noticed the timeout calls this; gloo's monitored barrier names the ranks that
        never arrive (dead or frozen). Run it on a group the failed collective did not use.
        """
        if self.world_size == 1:
            return []
        try:
            dist.monitored_barrier(
                group=self._group, timeout=timedelta(seconds=timeout_s), wait_all_ranks=True
            )
        except RuntimeError as err:
            found = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", str(err))
            return [int(r) for r in found.group(1).split(",")] if found else []
        return []
