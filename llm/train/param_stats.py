"""Per-layer weight norm, gradient norm and update ratio for the dashboard's Model panel.

Every figure comes from the part of each parameter that this rank owns, as a sum of squares; one
all-reduce of those sums (float64, four numbers per parameter) gives the whole-model figures on every
rank. No parameter is gathered whole on the step path:

* ZeRO-3: the rank's fp32 partition of the weight and of the reduced gradient (DeepSpeed's
  ``safe_get_local_fp32_param`` / ``safe_get_local_grad``);
* ZeRO-1/2 (and DeepSpeed's bf16 optimizer): the fp32 fragment that ``_hp_mapping`` links to the
  parameter, and its fragment of the reduced gradient (only between backward and step);
* no ZeRO: every rank holds the whole parameter and its all-reduced gradient, so rank 0 counts it.

Gradients are read after the last backward of a step and before the optimizer step, so they are the
averaged gradients before clipping (divided by the loss scale under fp16), the same ones whose norm
DeepSpeed reports as the global gradient norm. The update ratio is ‖w_after − w_before‖ / ‖w_before‖ over
that optimizer step. The one histogram a record carries gathers one parameter with DeepSpeed's safe
accessor, taking the layers in turn so each layer's histogram is refreshed every few records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from deepspeed.utils import safe_get_full_fp32_param, safe_get_local_fp32_param, safe_get_local_grad

from llm.telemetry.schema import Histogram, LayerStats
from llm.train.collectives import Collectives
from llm.train.engine import device, loss_scale

HISTOGRAM_BINS = 40


@dataclass(frozen=True)
class ParamsSample:
    layers: list[LayerStats]
    histogram: Histogram | None


class ParamStats:
    """Samples every `every` optimizer steps: call `before_step` after the step's last backward and
    `after_step` after its optimizer step, on every rank (both only on steps where `due`)."""

    def __init__(self, engine: Any, collectives: Collectives, *, every: int, rank: int) -> None:
        self.engine, self.collectives, self.every, self.rank = engine, collectives, every, rank
        self.named = [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]
        # histograms for matrices (embeddings, projections): the layers whose spread tells most
        # (under ZeRO-3 a parameter's own tensor is an empty placeholder: its shape is `ds_shape`)
        self._matrices = [(n, p) for n, p in self.named if len(getattr(p, "ds_shape", p.shape)) >= 2]
        self._before: list[torch.Tensor | None] = []
        self._grad_sq: torch.Tensor | None = None
        self._samples = 0

    def due(self, step: int) -> bool:
        """Whether the optimizer step that will make `step` steps is sampled."""
        return self.every > 0 and step % self.every == 0

    def before_step(self) -> None:
        # the gradients are still scaled by fp16's loss scale (unscaled in the optimizer step)
        scale = loss_scale(self.engine) if self.engine.fp16_enabled() else 1.0
        grad_sq = []
        self._before = []
        for _, p in self.named:
            weight, grad = _owned(p, self.rank)
            self._before.append(None if weight is None else weight.detach().float().clone())
            grad_sq.append(_sum_sq(grad) / (scale * scale))
        empty = torch.zeros(0, dtype=torch.float64, device=device())
        self._grad_sq = torch.stack(grad_sq) if grad_sq else empty

    def after_step(self) -> ParamsSample:
        assert self._grad_sq is not None, "before_step first"
        weight_sq, update_sq, before_sq = [], [], []
        for (_, p), before in zip(self.named, self._before, strict=True):
            weight, _ = _owned(p, self.rank, grad=False)
            weight_sq.append(_sum_sq(weight))
            before_sq.append(_sum_sq(before))
            update_sq.append(
                _sum_sq(None if weight is None or before is None else weight.detach().float() - before)
            )
        # one copy to the host for all of them (a device synchronisation on sampled steps only)
        sums = torch.stack([self._grad_sq, *(torch.stack(v) for v in (weight_sq, update_sq, before_sq))])
        sums = sums.cpu()
        self.collectives.sum(sums)  # every rank's partition
        grad, weight, update, before_all = (row.tolist() for row in sums)
        layers = [
            LayerStats(
                name=name,
                numel=p.ds_numel if hasattr(p, "ds_numel") else p.numel(),
                weight_norm=math.sqrt(w),
                grad_norm=_finite_sqrt(g),
                update_ratio=math.sqrt(u) / math.sqrt(b) if b > 0 else None,
            )
            for (name, p), g, w, u, b in zip(self.named, grad, weight, update, before_all, strict=True)
        ]
        self._before, self._grad_sq = [], None
        histogram = self._histogram()
        self._samples += 1
        return ParamsSample(layers=layers, histogram=histogram)

    def _histogram(self) -> Histogram | None:
        """One matrix's fp32 weights, gathered on every rank (a collective), binned on rank 0."""
        if not self._matrices:
            return None
        name, param = self._matrices[self._samples % len(self._matrices)]
        full = safe_get_full_fp32_param(param)
        if full is None:  # no ZeRO and no mixed-precision optimizer: the parameter is whole here
            full = param.detach()
        if self.rank != 0:
            return None
        values = full.detach().float().flatten().cpu()
        low, high = float(values.min()), float(values.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            return None
        if high <= low:
            high = low + 1e-12
        counts = torch.histc(values, bins=HISTOGRAM_BINS, min=low, max=high)
        edges = torch.linspace(low, high, HISTOGRAM_BINS + 1)
        return Histogram(name=name, edges=edges.tolist(), counts=[int(c) for c in counts.tolist()])


def _owned(
    p: torch.nn.Parameter, rank: int, *, grad: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The part of `p` (weight, gradient) that this rank accounts for; (None, None) where none."""
    if hasattr(p, "ds_id"):  # ZeRO-3: this rank's partition
        return safe_get_local_fp32_param(p), safe_get_local_grad(p) if grad else None
    if hasattr(p, "_hp_mapping"):  # ZeRO-1/2, bf16 optimizer: the fp32 fragment in this partition
        mapping = p._hp_mapping
        if mapping is None:
            return None, None
        if not grad:
            return mapping.get_hp_fragment(), None
        index = p._index_in_param_group  # type: ignore[attr-defined]
        fragment = mapping.get_lp_grad_fragment(index).flatten()
        address = mapping.lp_fragment_address
        if fragment.numel() == p.numel() and fragment.numel() != address.numel:
            # a whole-parameter accumulation buffer (bf16): only this partition's fragment counts
            fragment = fragment.narrow(0, address.start, address.numel)
        return mapping.get_hp_fragment(), fragment
    if rank != 0:  # no ZeRO: every rank holds the same whole parameter and gradient
        return None, None
    return p, p.grad if grad else None


def _sum_sq(t: torch.Tensor | None) -> torch.Tensor:
    if t is None:
        return torch.zeros((), dtype=torch.float64, device=device())
    return t.detach().double().pow(2).sum().to(device())


def _finite_sqrt(v: float) -> float | None:
    return math.sqrt(v) if math.isfinite(v) else None
