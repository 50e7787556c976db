"""Suite-wide set-up: which path (CPU or CUDA) the machine offers, and a fake CUDA device to prove it.

Every trainer subprocess is pinned to the CPU (`CUDA_VISIBLE_DEVICES=""` in tests.helpers.child_env),
so the suite tests the same CPU path on any machine. Tests of what happens without CUDA are marked
`no_cuda` and skipped, with the reason printed, where CUDA is visible. `TEST_FAKE_CUDA=1` makes this
process see one (fake) CUDA device, so a machine without a GPU shows that the suite passes on one
that has it (tests/test_fake_cuda.py runs the in-process tests that way).
"""

from __future__ import annotations

import os

import pytest
import torch

FAKE_CUDA = os.environ.get("TEST_FAKE_CUDA") == "1"
FAKE_NAME = "NVIDIA GeForce RTX 3090 (fake: TEST_FAKE_CUDA=1)"

if FAKE_CUDA:  # before any test module asks
    torch.cuda.is_available = lambda: True  # type: ignore[assignment]
    torch.cuda.device_count = lambda: 1  # type: ignore[assignment]
    torch.cuda.get_device_name = lambda device=None: FAKE_NAME  # type: ignore[assignment]
    torch.cuda.synchronize = lambda device=None: None  # type: ignore[assignment]
    torch.cuda.max_memory_allocated = lambda device=None: 0  # type: ignore[assignment]


def cuda_visible() -> bool:
    return torch.cuda.is_available()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "no_cuda: checks the path of a machine without CUDA; skipped where CUDA is"
    )


def pytest_report_header(config: pytest.Config) -> str:
    if FAKE_CUDA:
        return f"CUDA: a fake device ({FAKE_NAME}); no_cuda tests are skipped"
    return f"CUDA: {'visible, no_cuda tests are skipped' if cuda_visible() else 'none (CPU path)'}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not cuda_visible():
        return
    skip = pytest.mark.skip(reason="a CUDA device is visible: this checks what happens without one")
    for item in items:
        if "no_cuda" in item.keywords:
            item.add_marker(skip)


# the S3 server fixtures (moto on loopback) for every test that asks for them
from tests.radosgw_server import radosgw, rgw  # noqa: E402, F401
from tests.s3_server import moto_server, s3  # noqa: E402, F401
