"""Model FLOPs utilisation: achieved model FLOP/s over the hardware's peak.

On GPUs the peak comes from the vendors' dense figures (no sparsity), looked up by the full device
name torch reports. A CPU has no such figure, so its peak is measured (`cpu_peak_flops`) and the best
value ever seen on this machine is kept in a small cache file. Both say how the figure was obtained,
for run.json: `peak_flops(precision, matmul_shapes=...) -> (flops, provenance)`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

# Dense peak TFLOP/s by the exact device name torch.cuda.get_device_name() returns. fp16/bf16 are
# tensor-core figures with fp32 accumulation (what torch's matmuls use); fp32 is the plain
# (non-TF32) rate. "Dense" halves the data sheets' "with sparsity" figures. No two entries share a
# name: A100 names carry their memory size, and H100 PCIe / SXM (sold as "H100 80GB HBM3") / NVL
# have names of their own. A name not listed gets no peak (MFU 0, with the reason in run.json)
# rather than a neighbour's figure: a MIG slice, an "NVL" card or a "Ti" is not the full card.
_A100 = {"fp16": 312.0, "bf16": 312.0, "fp32": 19.5}  # A100 data sheet: 624 sparse; PCIe = SXM
_H100_SXM = {"fp16": 989.4, "bf16": 989.4, "fp32": 66.9}  # H100 whitepaper: 1,978.9 sparse; fp32 66.9
GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # GA102 whitepaper, appendix A: FP16/BF16 tensor with FP32 accumulate 71 (142 sparse), FP32 35.6
    "NVIDIA GeForce RTX 3090": {"fp16": 71.0, "bf16": 71.0, "fp32": 35.6},
    # Ada (AD102) whitepaper: FP16/BF16 tensor with FP32 accumulate 165.2 (330.4 sparse), FP32 82.6
    "NVIDIA GeForce RTX 4090": {"fp16": 165.2, "bf16": 165.2, "fp32": 82.6},
    "NVIDIA A100-SXM4-40GB": _A100,
    "NVIDIA A100-SXM4-80GB": _A100,
    "NVIDIA A100-SXM-80GB": _A100,
    "NVIDIA A100-PCIE-40GB": _A100,
    "NVIDIA A100 80GB PCIe": _A100,
    "NVIDIA H100 80GB HBM3": _H100_SXM,  # the SXM5 card
    # H100 PCIe product brief / whitepaper: 1,513 sparse -> 756 dense; FP32 51.2 (data sheet: 51)
    "NVIDIA H100 PCIe": {"fp16": 756.0, "bf16": 756.0, "fp32": 51.2},
    "NVIDIA H200": _H100_SXM,  # H200 (SXM) data sheet: the H100 SXM's compute, 1,979 sparse, FP32 67
    # L4 data sheet: FP16/BF16 tensor 242 with sparsity -> 121 dense; FP32 30.3
    "NVIDIA L4": {"fp16": 121.0, "bf16": 121.0, "fp32": 30.3},
    # L40S data sheet: FP16/BF16 tensor 362.05 dense (733 sparse); FP32 91.6
    "NVIDIA L40S": {"fp16": 362.05, "bf16": 362.05, "fp32": 91.6},
}

MatmulShape = tuple[int, int, int]  # (M, K, N): an (M, K) @ (K, N) product, 2*M*K*N FLOPs
# Square probes that fit a core's L2 cache: each takes well under a scheduler time slice, so the
# best of many repeats is an uncontended one even when another process shares the core.
PROBE_SHAPES: tuple[MatmulShape, ...] = ((128, 256, 256), (256, 256, 256), (384, 384, 384))
MAX_REPEAT_FLOPS = 6.4e7  # per timed matmul (about 2 ms on one 35 GFLOP/s core): larger ones are cut
PROBE_REPEATS = 4  # on one thread, back to back per round: the later ones find the operands in cache
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gpu_peak_flops(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s for a GPU by its full name, or None when the GPU is not in the table."""
    wanted = " ".join(device_name.split()).lower()
    for name, peaks in GPU_PEAK_TFLOPS.items():
        if name.lower() == wanted:
            return peaks[precision] * 1e12
    return None


def model_matmul_shapes(*, tokens: int, width: int, vocab: int) -> list[MatmulShape]:
    """The GEMMs of one GPT training micro-step: `tokens` = B*T rows, C = `width`, V = `vocab`.

    Forward x @ W for c_attn (C->3C), attn.c_proj (C->C), c_fc (C->4C), mlp.c_proj (4C->C) and
    lm_head (C->V); backward the input gradient (dy @ W^T) and the weight gradient (x^T @ dy).
    """
    C, M = width, tokens
    shapes: list[MatmulShape] = []
    for k, n in ((C, 3 * C), (C, C), (C, 4 * C), (4 * C, C), (C, vocab)):
        for shape in ((M, k, n), (M, n, k), (k, M, n)):
            if shape not in shapes:
                shapes.append(shape)
    return shapes


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), or the platform's best guess."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_peak_cache_path() -> Path:
    """$XDG_CACHE_HOME/llm/cpu_peak.json, else ~/.cache/llm/cpu_peak.json (without a home: in $TMPDIR)."""
    root = os.environ.get("XDG_CACHE_HOME")
    if not root:
        try:
            root = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory to be found
            root = tempfile.gettempdir()
    return Path(root) / "llm" / "cpu_peak.json"


def measure_cpu_peak_flops(
    *, shapes: Sequence[MatmulShape] = (), threads: int | None = None, seconds: float = 1.0
) -> float:
    """fp32 matmul peak FLOP/s measured now, with no cache (see `_measure` for how)."""
    return _measure(shapes=shapes, threads=threads, seconds=seconds, dtypes=(torch.float32,))[0]


def _measure(
    *,
    shapes: Sequence[MatmulShape],
    threads: int | None,
    seconds: float,
    dtypes: Sequence[torch.dtype],
) -> tuple[float, dict[str, Any]]:
    """The best matmul FLOP/s this machine shows with `threads` threads, and how it was found.

    Times single matmuls of the probe shapes and of `shapes` (cut to MAX_REPEAT_FLOPS each), in
    every dtype, on one thread and on `threads` threads, in rounds until `seconds` have passed
    (one round at least, however long it takes). A shape's figure is its fastest repeat. On one
    thread the clock is the thread's own CPU time, which stands still while another process holds
    the core, and the figure counts `threads` times (as many cores, each as fast as one measured
    alone); on `threads` threads it is wall time. Rounds spread every shape's repeats over the
    whole measurement, so a competitor that holds the cores for part of it cannot lower them all.
    """
    threads = threads or torch.get_num_threads()
    probes = [_fit(s) for s in PROBE_SHAPES]
    timed = list(dict.fromkeys([*probes, *(_fit(s) for s in shapes)]))
    # its own generator: measuring must not move the global RNG that dropout and data draw from
    rng = torch.Generator().manual_seed(0)
    operands = {
        (shape, dtype): (
            torch.randn(shape[0], shape[1], dtype=dtype, generator=rng),
            torch.randn(shape[1], shape[2], dtype=dtype, generator=rng),
        )
        for shape in timed
        for dtype in dtypes
    }
    counts = (1, threads) if threads > 1 else (1,)
    best: dict[tuple[MatmulShape, torch.dtype, int], float] = {}
    start_all = time.perf_counter()
    deadline, rounds = start_all + seconds, 0
    with _num_threads(threads):
        while rounds == 0 or time.perf_counter() < deadline:
            for count in counts:
                torch.set_num_threads(count)
                # one thread runs the product on this thread: its CPU time is the product's
                clock = time.thread_time if count == 1 else time.perf_counter
                for (shape, dtype), (a, b) in operands.items():
                    if rounds == 0:
                        torch.mm(a, b)  # warm up kernels and allocator for this thread count
                    elif time.perf_counter() > deadline:
                        break
                    for _ in range(PROBE_REPEATS if count == 1 and shape in probes else 1):
                        start = clock()
                        torch.mm(a, b)
                        elapsed = max(clock() - start, 1e-9)
                        rate = 2.0 * shape[0] * shape[1] * shape[2] / elapsed * (threads / count)
                        key = (shape, dtype, count)
                        best[key] = max(best.get(key, 0.0), rate)
            rounds += 1
    (shape, dtype, count), flops = max(best.items(), key=lambda item: item[1])
    return flops, {
        "threads": threads,
        "shapes": [list(s) for s in timed],
        "dtypes": [str(d).removeprefix("torch.") for d in dtypes],
        "rounds": rounds,
        "seconds_taken": round(time.perf_counter() - start_all, 3),
        "best": {"shape": list(shape), "dtype": str(dtype).removeprefix("torch."), "threads_used": count},
    }


def cpu_peak_flops(
    *,
    matmul_shapes: Sequence[MatmulShape] = (),
    threads: int | None = None,
    precision: str = "fp32",
    seconds: float | None = None,
    cache_path: Path | None = None,
) -> tuple[float, dict[str, Any]]:
    """This CPU's peak matmul FLOP/s for `threads` threads, and a record of how it was obtained.

    Measured now (`_measure`, in fp32 and in the run's dtype) and compared with the
    best value seen before on this machine, kept in `cache_path` (default: cpu_peak_cache_path())
    under the CPU's model, the thread count and the precision. The higher of the two is the peak,
    and the cache only ever rises. A first measurement (nothing cached) runs 2 s, later ones 0.5 s.

    Limit: the figure is what this process could see. A peak measured while other processes held
    every core for the whole measurement, on a machine with no cached value yet, can still be too
    low, and MFU then too high; the next unloaded run raises the cache and with it every later
    run's peak. Repeats short against a scheduler time slice, a single-thread figure counted per
    thread, and shapes timed in rounds make it hard for a competitor to lower the first value.
    """
    threads = threads or torch.get_num_threads()
    path = cache_path or cpu_peak_cache_path()
    key = f"{cpu_model()} | {threads} threads | {precision}"
    cached = _read_cache(path).get(key)
    if seconds is None:
        seconds = 0.5 if cached else 2.0
    dtypes = [torch.float32] if precision == "fp32" else [torch.float32, _DTYPES[precision]]
    measured, how = _measure(shapes=matmul_shapes, threads=threads, seconds=seconds, dtypes=dtypes)
    peak = max(measured, cached or 0.0)
    if cached is None or measured > cached:
        _raise_cache(path, key, measured)
    return peak, {
        "flops": peak,
        "source": "measured" if peak == measured else "cache",
        "device": cpu_model(),
        "precision": precision,
        "measured_flops": measured,
        "cached_flops": cached,
        "cache_file": str(path),
        "seconds": seconds,
        **how,
    }


def peak_flops(precision: str, *, matmul_shapes: Sequence[MatmulShape] = ()) -> tuple[float, dict[str, Any]]:
    """Peak FLOP/s of this process's device, and how the figure was obtained (for run.json).

    `matmul_shapes` (from `model_matmul_shapes`) are timed too on a CPU, so the peak is at least
    what the model's own matmuls reach. With CUDA the figure is the data sheet's, or 0 when the
    device is not in the table (MFU is then reported as 0).
    """
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = gpu_peak_flops(name, precision)
        if peak is not None:
            return peak, {"flops": peak, "source": "data sheet", "device": name, "precision": precision}
        return 0.0, {
            "flops": 0.0,
            "source": "unknown device",
            "device": name,
            "precision": precision,
            "note": "not in llm.telemetry.mfu.GPU_PEAK_TFLOPS: MFU reported as 0",
        }
    return cpu_peak_flops(matmul_shapes=matmul_shapes, precision=precision)


def _fit(shape: MatmulShape) -> MatmulShape:
    """`shape` with its largest dimension halved until one product is at most MAX_REPEAT_FLOPS."""
    dims = list(shape)
    while 2 * math.prod(dims) > MAX_REPEAT_FLOPS and max(dims) >= 32:
        largest = dims.index(max(dims))
        dims[largest] //= 2
    return dims[0], dims[1], dims[2]


@contextlib.contextmanager
def _num_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _read_cache(path: Path) -> dict[str, float]:
    """Cached peaks by key; a missing, unreadable or malformed file (or entry) counts as empty."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    peaks = data.get("peaks") if isinstance(data, dict) else None
    if not isinstance(peaks, dict):
        return {}
    return {
        key: float(value)
        for key, value in peaks.items()
        if isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    }


def _raise_cache(path: Path, key: str, flops: float) -> None:
    """Store `flops` under `key` unless a higher value is there already; best effort, atomic."""
    with contextlib.suppress(OSError), _locked(path):
        peaks = _read_cache(path)
        if flops <= peaks.get(key, 0.0):
            return  # another process raised it meanwhile
        peaks[key] = flops
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cpu_peak.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump({"version": 1, "peaks": peaks}, out, indent=1, sort_keys=True)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside `path` (ranks on one machine update the cache in turn)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        try:
            import fcntl
        except ImportError:  # not POSIX: the atomic replace alone still leaves a valid file
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
