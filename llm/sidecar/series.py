"""The bucketed view of one series (docs/dashboard.md): smoothed first, then equal x buckets of min/max/last.

Min and max per bucket keep a loss spike visible at any zoom (as W&B's point aggregation does; sampling
or averaging would hide it), and the last point of the final bucket is always the newest point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_BUCKETS = 1500
MAX_BUCKETS = 5000


@dataclass(frozen=True)
class SeriesQuery:
    buckets: int = DEFAULT_BUCKETS
    smoothing: float = 0.0  # debiased EMA factor, 0 <= S < 1
    x_min: float | None = None
    x_max: float | None = None


def debiased_ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """TensorBoard's debiased EMA: m = S·m + (1 − S)·v, divided by the weight 1 − Sⁿ.

    Computed as s += (1 − S) / w · (v − s), the same value, so a constant series stays exactly constant.
    """
    if smoothing == 0.0 or len(values) == 0:
        return values.copy()
    keep = 1.0 - smoothing
    out = []
    s = weight = 0.0
    for value in values.tolist():
        weight = smoothing * weight + keep
        s += keep / weight * (value - s)
        out.append(s)
    return np.array(out)


def _bucket_ends(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (inclusive) positions of each run of equal bucket numbers in sorted `idx`."""
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    return starts, np.r_[starts[1:], len(idx)] - 1


def _bucket_index(x: np.ndarray, lo: float, hi: float, buckets: int) -> np.ndarray:
    if hi <= lo:
        return np.zeros(len(x), dtype=np.int64)
    return np.clip(((x - lo) / (hi - lo) * buckets).astype(np.int64), 0, buckets - 1)


def _markers(
    x: np.ndarray,
    y: np.ndarray,
    grew: np.ndarray,
    in_range: np.ndarray,
    *,
    lo: float,
    hi: float,
    buckets: int,
) -> list[dict[str, Any]]:
    """Non-finite values and fp16 skipped steps in range, at most one of each kind per bucket."""
    found: list[tuple[np.ndarray, np.ndarray, str]] = []
    for kind, mask in (("nan", np.isnan(y)), ("inf", np.isposinf(y)), ("-inf", np.isneginf(y))):
        found.append((np.flatnonzero(mask & in_range), np.zeros(0), kind))
    skipped = np.flatnonzero((grew > 0) & in_range)
    found.append((skipped, grew[skipped], "skipped"))
    markers = []
    for positions, counts, kind in found:
        keep = np.arange(len(positions))
        if len(positions) > buckets:  # thin: the last one per bucket
            idx = _bucket_index(x[positions], lo, hi, buckets)
            order = np.argsort(idx, kind="stable")
            keep = order[_bucket_ends(idx[order])[1]]
        for i in keep.tolist():
            marker: dict[str, Any] = {"x": float(x[positions[i]]), "kind": kind}
            if kind == "skipped":
                marker["count"] = int(counts[i])
            markers.append(marker)
    markers.sort(key=lambda m: m["x"])
    return markers


def bucketed_view(
    x: np.ndarray, y: np.ndarray, *, query: SeriesQuery, skipped_steps: np.ndarray | None = None
) -> dict[str, Any]:
    """The view of values `y` (NaN/±Inf allowed) against `x`, both in seq order.

    `skipped_steps`, when given, is the fp16 overflow counter at each point: where it grew is a marker.
    """
    finite = np.isfinite(y)
    smoothed = np.full(len(y), math.nan)
    smoothed[finite] = debiased_ema(y[finite], query.smoothing)  # over the whole run, so zooming keeps it
    if len(x) == 0:
        return {"raw": True, "count": 0, "x_min": None, "x_max": None, "points": [], "markers": []}
    known = x[np.isfinite(x)]  # a record's time may be NaN (null in its JSON): such a point is nowhere
    if query.x_min is None and len(known) == 0:
        return {"raw": True, "count": 0, "x_min": None, "x_max": None, "points": [], "markers": []}
    lo = float(known.min()) if query.x_min is None else query.x_min
    hi = float(known.max()) if query.x_max is None else query.x_max
    in_range = (x >= lo) & (x <= hi)
    grew = np.zeros(len(x)) if skipped_steps is None else np.diff(skipped_steps, prepend=0.0)
    markers = _markers(x, y, grew, in_range, lo=lo, hi=hi, buckets=query.buckets)
    selected = in_range & finite
    xs, ys, ss = x[selected], y[selected], smoothed[selected]
    view = {"raw": len(xs) <= query.buckets, "count": len(xs), "x_min": lo, "x_max": hi, "markers": markers}
    if view["raw"]:
        columns = (xs, ys, ys, ys, ss)
    else:
        idx = _bucket_index(xs, lo, hi, query.buckets)
        if np.any(np.diff(idx) < 0):  # x went back (a clock step): group by bucket, seq order within
            order = np.argsort(idx, kind="stable")
            xs, ys, ss, idx = xs[order], ys[order], ss[order], idx[order]
        starts, ends = _bucket_ends(idx)
        mins, maxs = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts)
        columns = (xs[ends], mins, maxs, ys[ends], ss[ends])
    names = ("x", "min", "max", "last", "smoothed")
    view["points"] = [
        dict(zip(names, row, strict=True)) for row in zip(*(c.tolist() for c in columns), strict=True)
    ]
    return view
