"""Model FLOPs utilisation: achieved model FLOP/s over the hardware's peak.

On GPUs the peak comes from a table of dense tensor-core figures (no sparsity) by precision; on the
CPU there is no such figure, so we measure it once at start with a large fp32 matmul.
"""

from __future__ import annotations

import time

import torch

# Dense peak TFLOP/s by device name fragment and precision, from the vendors' data sheets.
# fp16/bf16 are tensor-core figures with fp32 accumulation; fp32 is the plain (non-TF32) rate.
GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "RTX 3090": {"fp16": 71.0, "bf16": 71.0, "fp32": 35.6},
    "RTX 4090": {"fp16": 165.2, "bf16": 165.2, "fp32": 82.6},
    "A100": {"fp16": 312.0, "bf16": 312.0, "fp32": 19.5},
    "H100": {"fp16": 989.4, "bf16": 989.4, "fp32": 66.9},
    "H200": {"fp16": 989.4, "bf16": 989.4, "fp32": 66.9},
}


def gpu_peak_flops(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s for a GPU by name, or None when the GPU is not in the table."""
    for fragment, peaks in GPU_PEAK_TFLOPS.items():
        if fragment.lower() in device_name.lower():
            return peaks[precision] * 1e12
    return None


def measure_cpu_peak_flops(*, size: int = 1024, seconds: float = 0.5) -> float:
    """fp32 matmul FLOP/s this process reaches with its torch threads (best of repeated runs)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm up the kernels and allocator
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        elapsed = time.perf_counter() - start
        best = max(best, 4 * 2 * size**3 / elapsed)
    return best


def peak_flops(precision: str) -> tuple[float, str]:
    """Peak FLOP/s for this process's device and where the figure came from."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = gpu_peak_flops(name, precision)
        if peak is not None:
            return peak, f"{name} data sheet ({precision})"
        return 0.0, f"{name}: not in the peak table, MFU reported as 0"
    return measure_cpu_peak_flops(), f"measured fp32 matmul, {torch.get_num_threads()} threads"
