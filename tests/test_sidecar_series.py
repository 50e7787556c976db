"""The sidecar's bucketed series view (llm/sidecar/series.py): spikes survive, the newest point is last,
smoothing is TensorBoard's debiased EMA and leaves a constant series alone, non-finite values are markers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llm.sidecar.series import SeriesQuery, bucketed_view, debiased_ema


def noisy(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.arange(n, dtype=float), 2.0 + 0.01 * rng.standard_normal(n)


def test_a_spike_in_100000_points_survives_as_a_bucket_max() -> None:
    x, y = noisy(100_000)
    y[53_421], y[71_000] = 50.0, -7.0  # a loss spike, and a dip
    view = bucketed_view(x, y, query=SeriesQuery(buckets=1500))
    assert view["raw"] is False and view["count"] == 100_000
    assert len(view["points"]) == 1500
    spiked = [p for p in view["points"] if p["max"] == 50.0]
    assert len(spiked) == 1 and spiked[0]["x"] >= 53_421 > spiked[0]["x"] - 100_000 / 1500
    assert [p for p in view["points"] if p["min"] == -7.0]
    assert sum(p["max"] > 3 for p in view["points"]) == 1


def test_the_newest_point_is_always_the_last_of_the_final_bucket() -> None:
    for n in (100_000, 4_999, 1_501):
        x, y = noisy(n, seed=n)
        view = bucketed_view(x, y, query=SeriesQuery(buckets=1500))
        last = view["points"][-1]
        assert (last["x"], last["last"]) == (x[-1], y[-1])
        zoomed = bucketed_view(x, y, query=SeriesQuery(buckets=100, x_min=10, x_max=n - 7))
        assert (zoomed["points"][-1]["x"], zoomed["points"][-1]["last"]) == (n - 7, y[n - 7])


def test_few_points_come_back_raw() -> None:
    x, y = noisy(1_000)
    view = bucketed_view(x, y, query=SeriesQuery(buckets=1500))
    assert view["raw"] is True
    assert [p["x"] for p in view["points"]] == x.tolist()
    assert all(
        p["min"] == p["max"] == p["last"] == v for p, v in zip(view["points"], y.tolist(), strict=True)
    )
    zoomed = bucketed_view(*noisy(100_000), query=SeriesQuery(buckets=1500, x_min=500, x_max=1_499))
    assert zoomed["raw"] is True and zoomed["count"] == 1_000  # zooming in gives raw points back


@pytest.mark.parametrize("smoothing", [0.0, 0.6, 0.9, 0.99, 0.999])
def test_smoothing_a_constant_series_gives_the_constant(smoothing: float) -> None:
    y = np.full(10_000, 3.852)
    y[[5, 500, 9_000]] = [math.nan, math.inf, -math.inf]  # skipped, not smoothed in
    view = bucketed_view(np.arange(10_000.0), y, query=SeriesQuery(buckets=10_000, smoothing=smoothing))
    assert {p["smoothed"] for p in view["points"]} == {3.852}


def test_smoothing_is_the_debiased_ema() -> None:
    values = np.array([1.0, 4.0, 2.0, 8.0, 5.0])
    s = 0.6
    expected, m = [], 0.0
    for n, v in enumerate(values, start=1):  # TensorBoard: m = S m + (1 - S) v, shown as m / (1 - S^n)
        m = s * m + (1 - s) * v
        expected.append(m / (1 - s**n))
    assert debiased_ema(values, s) == pytest.approx(expected, rel=1e-12)


def test_smoothing_runs_over_the_whole_run_before_zooming() -> None:
    x, y = noisy(10_000)
    whole = bucketed_view(x, y, query=SeriesQuery(buckets=10_000, smoothing=0.9))
    zoomed = bucketed_view(x, y, query=SeriesQuery(buckets=10_000, smoothing=0.9, x_min=5_000, x_max=5_010))
    assert [p["smoothed"] for p in zoomed["points"]] == [p["smoothed"] for p in whole["points"][5_000:5_011]]


def test_non_finite_values_are_markers_not_points() -> None:
    x, y = noisy(10_000)
    y[[100, 200, 300]] = [math.nan, math.inf, -math.inf]
    for buckets in (50, 10_000):  # bucketed and raw
        view = bucketed_view(x, y, query=SeriesQuery(buckets=buckets))
        assert view["markers"] == [
            {"x": 100, "kind": "nan"},
            {"x": 200, "kind": "inf"},
            {"x": 300, "kind": "-inf"},
        ]
        assert all(math.isfinite(p[k]) for p in view["points"] for k in ("min", "max", "last", "smoothed"))
        assert view["count"] == 9_997


def test_skipped_fp16_steps_are_markers_and_many_markers_are_thinned() -> None:
    x = np.arange(100.0)
    skipped = np.array([0.0] * 10 + [2.0] * 50 + [3.0] * 40)  # 2 steps skipped at x=10, 1 more at x=60
    view = bucketed_view(x, np.full(100, 65536.0), query=SeriesQuery(buckets=10), skipped_steps=skipped)
    assert view["markers"] == [
        {"x": 10, "kind": "skipped", "count": 2},
        {"x": 60, "kind": "skipped", "count": 1},
    ]
    y = np.full(100_000, math.nan)  # a run that diverged for good: one marker per bucket, the last one
    many = bucketed_view(np.arange(100_000.0), y, query=SeriesQuery(buckets=100))
    assert len(many["markers"]) == 100 and many["markers"][-1]["x"] == 99_999
    assert many["points"] == [] and many["count"] == 0


def test_an_empty_series() -> None:
    view = bucketed_view(np.zeros(0), np.zeros(0), query=SeriesQuery())
    assert view["points"] == [] and view["markers"] == [] and view["raw"] is True
