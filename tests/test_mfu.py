"""The CPU's peak FLOP/s: measured so that a competing process cannot push MFU above 1, and cached."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from llm.model.config import from_preset
from llm.model.gpt import GPT
from llm.telemetry import mfu
from llm.telemetry.mfu import cpu_peak_flops, measure_cpu_peak_flops, model_matmul_shapes

# A busy loop in pure Python, and a process spinning fp32 matmuls on one thread (as another
# training job would): each ends by itself after a minute and is killed as soon as the peak is taken.
_SPIN = (
    "import time\nprint('ready', flush=True)\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"
)
_MATMULS = (
    "import os\nos.environ['OPENBLAS_NUM_THREADS'] = '1'\nimport time, numpy\n"
    "a = numpy.ones((512, 512), numpy.float32)\nprint('ready', flush=True)\n"
    "end = time.monotonic() + 60\nwhile time.monotonic() < end: a @ a"
)
TINY_BATCH = 2  # sequences per micro-step: small, so the test stays quick on a busy machine


@contextmanager
def _competitors(*programs: str) -> Iterator[None]:
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for code in programs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _gemms_achieved(shapes: list[tuple[int, int, int]], clock: Callable[[], float]) -> float:
    """FLOP/s of the model's matmuls at full size run back to back, as in a step (best of 3 passes)."""
    operands = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    best = 0.0
    for _ in range(4):  # the first pass warms up
        start = clock()
        for a, b in operands:
            torch.mm(a, b)
        best = max(best, flops / (clock() - start))
    return best


def _gpt_step_achieved(clock: Callable[[], float]) -> float:
    """Model FLOP/s of the tiny preset's forward + backward (best of 3 steps after a warm-up)."""
    cfg = from_preset("tiny", vocab_size=8192)
    torch.manual_seed(0)
    model = GPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (TINY_BATCH, cfg.block_size))
    flops = GPT.flops_per_token(cfg) * x.numel()
    best = 0.0
    for _ in range(4):
        start = clock()
        _, loss = model(x, x)
        assert loss is not None
        loss.backward()
        best = max(best, flops / (clock() - start))
    return best


@contextmanager
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_mfu_stays_at_most_one_when_the_peak_is_measured_under_competing_processes(tmp_path: Path) -> None:
    """A peak taken while other processes hold the cores is still above what the model reaches without them.

    Two readings of "what the model reaches": on every thread by the wall clock, as a run reads its
    MFU (on a machine that other work keeps busy this one is low either way); and on one thread by
    that thread's CPU time, times the thread count, which the machine's other work does not lower:
    the most a run on that many cores could read.
    """
    cfg = from_preset("tiny", vocab_size=8192)
    shapes = model_matmul_shapes(tokens=TINY_BATCH * cfg.block_size, width=cfg.n_embd, vocab=cfg.vocab_size)
    threads = torch.get_num_threads()
    with _competitors(_SPIN, _SPIN, _MATMULS, _MATMULS):  # more busy processes than cores
        peak, how = cpu_peak_flops(matmul_shapes=shapes, cache_path=tmp_path / "cpu_peak.json")
    assert how["source"] == "measured" and how["cached_flops"] is None  # no earlier value helped
    # now without the competitors
    achieved = {"matmuls": _gemms_achieved(shapes, time.perf_counter)}
    achieved["GPT step"] = _gpt_step_achieved(time.perf_counter)
    with _one_thread():
        achieved["matmuls, per core"] = threads * _gemms_achieved(shapes, time.thread_time)
        achieved["GPT step, per core"] = threads * _gpt_step_achieved(time.thread_time)
    ratios = {name: value / peak for name, value in achieved.items()}
    print(f"peak {peak / 1e9:.1f} GFLOP/s {how['best']}, {how['rounds']} round(s); achieved / peak:", ratios)
    assert all(ratio <= 1.0 for ratio in ratios.values()), ratios


def _fake_measure(values: list[float], seen: list[dict[str, Any]]) -> Any:
    def measure(**kwargs: Any) -> tuple[float, dict[str, Any]]:
        seen.append(kwargs)
        return values.pop(0), {"threads": kwargs["threads"], "rounds": 3}

    return measure


def test_the_cache_is_keyed_by_cpu_model_and_threads_and_only_rises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cpu_peak.json"
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(mfu, "_measure", _fake_measure([5e9, 3e9, 7e9, 2e9, 1e9], seen))
    monkeypatch.setattr(mfu, "cpu_model", lambda: "CPU A")

    peak, how = cpu_peak_flops(threads=2, cache_path=path)
    assert (peak, how["source"], how["cached_flops"]) == (5e9, "measured", None)
    assert seen[-1]["seconds"] == 2.0  # nothing cached: the first measurement is the long one
    peak, how = cpu_peak_flops(threads=2, cache_path=path)  # a slower reading (a busy machine)
    assert (peak, how["source"], how["measured_flops"]) == (5e9, "cache", 3e9)
    assert seen[-1]["seconds"] == 0.5
    peak, how = cpu_peak_flops(threads=2, cache_path=path)  # a faster one raises the cache
    assert (peak, how["source"]) == (7e9, "measured")
    assert json.loads(path.read_text())["peaks"] == {"CPU A | 2 threads | fp32": 7e9}

    peak, _ = cpu_peak_flops(threads=1, cache_path=path)  # another thread count: its own entry
    assert peak == 2e9
    monkeypatch.setattr(mfu, "cpu_model", lambda: "CPU B")  # another CPU: its own entry
    peak, how = cpu_peak_flops(threads=2, cache_path=path)
    assert (peak, how["source"], how["device"]) == (1e9, "measured", "CPU B")
    assert json.loads(path.read_text())["peaks"] == {
        "CPU A | 2 threads | fp32": 7e9,
        "CPU A | 1 threads | fp32": 2e9,
        "CPU B | 2 threads | fp32": 1e9,
    }


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        '{"peaks": [1]}',
        '{"peaks": {"CPU A | 2 threads | fp32": "9e99"}}',
        '{"peaks": {"CPU A | 2 threads | fp32": -1}}',
        '{"peaks": {"CPU A | 2 threads | fp32": NaN}}',
        '{"peaks": {"CPU A | 2 threads | fp32": true}}',
    ],
)
def test_a_corrupt_cache_is_ignored_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    path = tmp_path / "cpu_peak.json"
    path.write_text(content)
    monkeypatch.setattr(mfu, "_measure", _fake_measure([4e9], []))
    monkeypatch.setattr(mfu, "cpu_model", lambda: "CPU A")
    peak, how = cpu_peak_flops(threads=2, cache_path=path)
    assert (peak, how["source"], how["cached_flops"]) == (4e9, "measured", None)
    assert json.loads(path.read_text())["peaks"] == {"CPU A | 2 threads | fp32": 4e9}


def test_the_cache_lives_under_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert mfu.cpu_peak_cache_path() == tmp_path / "llm" / "cpu_peak.json"


def test_a_real_measurement_names_its_shapes_and_threads(tmp_path: Path) -> None:
    shapes = model_matmul_shapes(tokens=64, width=32, vocab=100)
    peak, how = cpu_peak_flops(matmul_shapes=shapes, threads=1, seconds=0.05, cache_path=tmp_path / "c.json")
    assert peak > 1e8  # at least 0.1 GFLOP/s on any machine
    assert how["threads"] == 1 and how["rounds"] >= 1 and [64, 32, 96] in how["shapes"]
    json.dumps(how)  # goes into run.json as it is
    assert measure_cpu_peak_flops(threads=1, seconds=0.05) > 1e8
