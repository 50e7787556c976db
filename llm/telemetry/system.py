"""What each rank's device is doing: a GPU's utilisation, memory, temperature and power from NVML, or,
with no GPU, the rank's own CPU share and resident memory from psutil (so the panel is never empty).

Each rank samples its own device; the loop gathers the samples to rank 0 at a step boundary that rank
0 picks every SAMPLE_EVERY_S (llm/train/control.py), and rank 0 writes one `system` record.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from typing import Any

import psutil

from llm.telemetry.schema import DeviceStats

SAMPLE_EVERY_S = 5.0
GB = 1e9


@cache
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def _nvml() -> Any:
    """pynvml, initialised, or None without an NVIDIA driver (NVMLError_LibraryNotFound here)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # ImportError, or any NVMLError: no GPU telemetry on this machine
        return None


class DeviceSampler:
    """One rank's sampler; the first CPU sample covers the time since it was made."""

    def __init__(self, *, rank: int, local_rank: int, gpu_index: int | None) -> None:
        self.rank, self.local_rank = rank, local_rank
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # start the CPU-time window
        self._handle = None
        nvml = _nvml() if gpu_index is not None else None
        if nvml is not None:
            try:
                self._handle = nvml.nvmlDeviceGetHandleByIndex(gpu_index)
            except nvml.NVMLError:
                self._handle = None
        self._gpu_index = gpu_index

    def sample(self) -> DeviceStats:
        if self._handle is not None:
            return self._gpu()
        return DeviceStats(
            node=platform.node(), rank=self.rank, kind="cpu", index=self.local_rank, name=_cpu_name(),
            # percent of the whole machine, so ranks sharing a node add up to at most 100
            utilization=min(100.0, self._process.cpu_percent(None) / (psutil.cpu_count() or 1)),
            memory_used_gb=self._process.memory_info().rss / GB,
            memory_total_gb=psutil.virtual_memory().total / GB,
        )  # fmt: skip

    def _gpu(self) -> DeviceStats:
        nvml = _nvml()
        handle = self._handle

        def read(fn: Any, *args: Any) -> Any:
            try:
                return fn(handle, *args)
            except nvml.NVMLError:  # not every card reports every field
                return None

        util = read(nvml.nvmlDeviceGetUtilizationRates)
        memory = read(nvml.nvmlDeviceGetMemoryInfo)
        temperature = read(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)
        power = read(nvml.nvmlDeviceGetPowerUsage)
        name = read(nvml.nvmlDeviceGetName)
        return DeviceStats(
            node=platform.node(), rank=self.rank, kind="gpu", index=self._gpu_index or 0,
            name=name.decode() if isinstance(name, bytes) else str(name or "GPU"),
            utilization=float(util.gpu) if util is not None else None,
            memory_used_gb=memory.used / GB if memory is not None else None,
            memory_total_gb=memory.total / GB if memory is not None else None,
            temperature_c=float(temperature) if temperature is not None else None,
            power_w=power / 1000 if power is not None else None,
        )  # fmt: skip
