"""The 24 GB cap of `make gpu-check`, read back on the CPU through a stand-in for torch.cuda, and
the peak memory benchmarks/run_configs.py tabulates from the ranks' reports."""

from __future__ import annotations

import atexit
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from llm.errors import UsageError
from llm.telemetry import gpu_memory
from llm.telemetry.gpu_memory import GIB, apply_memory_cap
from tests.helpers import REPO


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A 141 GiB GPU (an H200) that records what was asked of it."""
    seen: dict[str, Any] = {}
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=141 * GIB))
    monkeypatch.setattr(
        cuda, "set_per_process_memory_fraction", lambda fraction, device: seen.update(fraction=fraction)
    )
    monkeypatch.setattr(cuda, "max_memory_allocated", lambda: 20 * GIB)
    monkeypatch.setattr(cuda, "max_memory_reserved", lambda: 21 * GIB)
    registered: list[Any] = []
    monkeypatch.setattr(atexit, "register", lambda fn, *args: registered.append((fn, args)))
    seen["at_exit"] = registered
    monkeypatch.setattr(gpu_memory, "_PENDING", [])
    return seen


def test_the_cap_sets_the_allocator_fraction_and_the_report_records_the_peak(
    fake_cuda: dict[str, Any], tmp_path: Path
) -> None:
    setting = apply_memory_cap(
        {"GPU_MEMORY_CAP_GIB": "24", "GPU_MEMORY_REPORT_DIR": str(tmp_path), "RANK": "3"}
    )
    assert fake_cuda["fraction"] == pytest.approx(24 / 141)
    assert setting == {"device": "NVIDIA H200", "total_gib": 141.0, "cap_gib": 24.0, "fraction": 24 / 141}
    assert gpu_memory.write_reports in [fn for fn, _ in fake_cuda["at_exit"]]
    gpu_memory.write_reports()  # what launch/train.py does before os._exit (and atexit elsewhere)
    report = json.loads((tmp_path / "rank3.json").read_text())
    assert report["rank"] == 3 and report["cap_gib"] == 24.0
    assert (report["max_allocated_gib"], report["max_reserved_gib"]) == (20.0, 21.0)


def test_no_variables_no_cap(fake_cuda: dict[str, Any]) -> None:
    assert apply_memory_cap({}) is None
    assert "fraction" not in fake_cuda
    assert gpu_memory._PENDING == []


def test_a_cap_above_the_card_leaves_it_uncapped(fake_cuda: dict[str, Any]) -> None:
    assert apply_memory_cap({"GPU_MEMORY_CAP_GIB": "200"})["fraction"] == 1.0  # type: ignore[index]
    assert "fraction" not in fake_cuda


@pytest.mark.parametrize("value", ["24GB", "0", "-1", "nan"])
def test_a_bad_cap_is_one_clear_error(fake_cuda: dict[str, Any], value: str) -> None:
    with pytest.raises(UsageError, match=r"GPU_MEMORY_CAP_GIB=.*positive number of GiB"):
        apply_memory_cap({"GPU_MEMORY_CAP_GIB": value})


def test_without_cuda_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_memory.apply_memory_cap({"GPU_MEMORY_CAP_GIB": "24"}) is None


def _run_configs() -> Any:
    spec = importlib.util.spec_from_file_location("run_configs", REPO / "benchmarks" / "run_configs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_configs_records_the_ranks_peaks_and_fails_a_run_over_the_cap(tmp_path: Path) -> None:
    run_configs = _run_configs()
    reports = tmp_path / "memory"
    reports.mkdir()
    for rank, (allocated, reserved) in enumerate([(15.9, 16.4), (16.2, 16.8)]):
        (reports / f"rank{rank}.json").write_text(
            json.dumps({"total_gib": 139.8, "max_allocated_gib": allocated, "max_reserved_gib": reserved})
        )
    memory = run_configs._memory(reports, cap_gib=22.5)
    assert memory == {
        "memory_cap_gib": 22.5,
        "gpu_memory_gib": 139.8,
        "peak_allocated_gib": 16.2,
        "peak_reserved_gib": 16.8,
        "over_cap": False,
    }
    assert run_configs._memory(reports, cap_gib=16.5)["over_cap"]
    assert run_configs._memory(tmp_path / "none", cap_gib=None)["peak_reserved_gib"] is None  # a CPU run

    failed = {"config": "ds_configs/3090.json", "model_preset": "1b-24gb-tight", "exit": 1}
    failed.update(error=["torch.OutOfMemoryError: CUDA out of memory."], **memory)
    text = run_configs.write_report([failed], out=tmp_path, name="r", command="run_configs.py")
    assert "| ds_configs/3090.json | failed (exit 1): torch.OutOfMemoryError" in text
    assert text.rstrip().endswith("| 16.20 / 16.80 | 22.50 |")
