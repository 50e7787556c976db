"""The suite on a machine with CUDA: trainer subprocesses stay on the CPU path, no-CUDA checks skip.

Run here with a fake CUDA device (TEST_FAKE_CUDA=1, tests/conftest.py) over the in-process tests
whose code asks torch whether CUDA is there. `make test-fake-cuda` runs every fast test that way.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO, child_env

IN_PROCESS = [
    "tests/test_fake_cuda.py::test_this_machine_has_no_cuda",
    "tests/test_config.py",
    "tests/test_ds_config.py",
    "tests/test_checkpoint.py",
    "tests/test_train_timing.py",
    "tests/test_gpu_memory.py",
    "tests/test_telemetry.py",
]


@pytest.mark.no_cuda
def test_this_machine_has_no_cuda() -> None:
    assert not torch.cuda.is_available()
    assert child_env()["CUDA_VISIBLE_DEVICES"] == ""  # and trainer subprocesses are pinned to the CPU


@pytest.mark.slow
def test_the_in_process_tests_pass_with_a_fake_cuda_device() -> None:
    if torch.cuda.is_available():
        pytest.skip("a real CUDA device is visible: the whole suite already runs with it")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", *IN_PROCESS],
        cwd=REPO, env=child_env(TEST_FAKE_CUDA="1"), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    print(done.stdout[-600:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "CUDA: a fake device" in done.stdout
    assert "SKIPPED [1] tests/test_fake_cuda.py" in done.stdout
    assert "a CUDA device is visible: this checks what happens without one" in done.stdout
    assert " 1 skipped" in done.stdout and " failed" not in done.stdout
