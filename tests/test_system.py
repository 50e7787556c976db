"""The hardware panel's samples: NVML on a GPU, psutil without one.

There is no NVIDIA GPU here, so the NVML path runs against a stand-in `pynvml` module with the
functions the sampler calls and NVML's units (bytes, milliwatts); the CPU path runs for real.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator

import psutil
import pytest

from llm.telemetry import system
from llm.telemetry.system import DeviceSampler


class FakeNvmlError(Exception):
    pass


def fake_pynvml(*, temperature_fails: bool) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    calls: list[str] = []

    def device(index: int) -> str:
        calls.append(f"handle {index}")
        return f"gpu{index}"

    def temperature(handle: str, sensor: int) -> int:
        if temperature_fails:
            raise FakeNvmlError("not supported")
        assert sensor == module.NVML_TEMPERATURE_GPU
        return 61

    module.__dict__.update(
        NVMLError=FakeNvmlError,
        NVML_TEMPERATURE_GPU=0,
        calls=calls,
        nvmlInit=lambda: calls.append("init"),
        nvmlDeviceGetHandleByIndex=device,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87, memory=40),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=18_500_000_000, total=24_000_000_000),
        nvmlDeviceGetTemperature=temperature,
        nvmlDeviceGetPowerUsage=lambda h: 312_500,  # milliwatts
        nvmlDeviceGetName=lambda h: b"NVIDIA GeForce RTX 3090",
    )
    return module


@pytest.fixture
def nvml_cache() -> Iterator[None]:
    system._nvml.cache_clear()
    yield
    system._nvml.cache_clear()


@pytest.mark.parametrize("temperature_fails", [False, True])
def test_a_gpu_rank_reports_nvml_figures_in_the_schemas_units(
    monkeypatch: pytest.MonkeyPatch, nvml_cache: None, temperature_fails: bool
) -> None:
    fake = fake_pynvml(temperature_fails=temperature_fails)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    stats = DeviceSampler(rank=3, local_rank=1, gpu_index=1).sample()
    assert fake.calls == ["init", "handle 1"]
    assert (stats.kind, stats.rank, stats.index, stats.name) == ("gpu", 3, 1, "NVIDIA GeForce RTX 3090")
    assert stats.utilization == 87.0
    assert (stats.memory_used_gb, stats.memory_total_gb) == (18.5, 24.0)
    assert stats.power_w == 312.5
    # a field the card does not report is left out, the rest still come
    assert stats.temperature_c == (None if temperature_fails else 61.0)


def test_without_a_driver_a_gpu_rank_falls_back_to_its_process(
    monkeypatch: pytest.MonkeyPatch, nvml_cache: None
) -> None:
    fake = fake_pynvml(temperature_fails=False)

    def no_driver() -> None:
        raise FakeNvmlError("NVML Shared Library Not Found")

    fake.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    stats = DeviceSampler(rank=0, local_rank=0, gpu_index=0).sample()
    assert stats.kind == "cpu"


def test_a_cpu_rank_reports_its_share_of_the_machine_and_its_memory() -> None:
    sampler = DeviceSampler(rank=1, local_rank=1, gpu_index=None)
    busy = 0
    for i in range(3_000_000):  # some CPU time in the window
        busy += i
    stats = sampler.sample()
    me = psutil.Process(os.getpid())
    assert (stats.kind, stats.rank, stats.index) == ("cpu", 1, 1)
    assert stats.utilization is not None and 0 < stats.utilization <= 100
    rss = me.memory_info().rss / 1e9
    assert stats.memory_used_gb == pytest.approx(rss, rel=0.2)
    assert stats.memory_total_gb == pytest.approx(psutil.virtual_memory().total / 1e9)
    assert stats.temperature_c is None and stats.power_w is None
