"""benchmarks/storage.py end to end, short: an 8 MiB file, one round, against its own moto server.

What is checked is the arithmetic and the report, never the speed: each printed rate is the JSON's
median, each ratio is the JSON's rates divided (printed and stored alike), and the .md holds the table
that was printed. Without `aws` on PATH the benchmark must say that it skipped aws-cli, and nothing else
is accepted where `aws` is there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llm.storage.s3 import S3Settings
from tests.helpers import REPO, child_env

pytestmark = pytest.mark.slow

SIZE_MB = 8
CELLS = r" \| (?P<upload>[^|]+) \| (?P<download>[^|]+) \| (?P<verified>[^|]+) \|$"
# | ours: S3Storage, 64 MiB parts × 8, MB/s | **12.3** | **45.6** | 40.1 |
RATE_ROW = re.compile(r"^\| (?P<label>[^|]+), MB/s" + CELLS)
# | ours 64×8 ÷ aws (its defaults) | **2.987** | **8.117** | 4.890 |
RATIO_ROW = re.compile(r"^\| (?P<ours>[^|÷]+) ÷ (?P<theirs>[^|]+)" + CELLS)
DIRECTIONS = {"upload": "upload", "download": "download", "verified": "download_verified"}
DEFAULTS = {k: S3Settings.model_fields[k].default for k in ("multipart_mb", "concurrency")}
OURS = "ours_{multipart_mb}x{concurrency}".format(**DEFAULTS)  # ours with S3Settings' defaults


def cell(text: str) -> float | None:
    text = text.strip().strip("*").replace(",", "")
    return None if text == "—" else float(text)


def run_benchmark(out: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    cmd = [
        sys.executable,
        "benchmarks/storage.py",
        "--size-mb",
        str(SIZE_MB),
        "--rounds",
        "1",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads((out / "storage.json").read_text())


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if RATE_ROW.match(line) or RATIO_ROW.match(line)]


def check_rates(stdout: str, result: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Each printed rate is the JSON's median (to its one decimal); the JSON's medians are its rates'."""
    tools = result["tools"]
    by_label = {t["label"]: name for name, t in tools.items()}
    printed: dict[str, dict[str, float | None]] = {}
    for m in filter(None, map(RATE_ROW.match, stdout.splitlines())):
        name = by_label[m["label"]]
        printed[name] = {d: cell(m[key]) for key, d in DIRECTIONS.items()}
    assert list(printed) == result["order"], stdout
    size = result["settings"]["bytes"]
    assert size == SIZE_MB * 2**20
    for name, tool in tools.items():
        for d, shown in printed[name].items():
            if shown is None:  # aws-cli does not verify
                assert tool["kind"] == "aws" and d == "download_verified", (name, d)
                continue
            (seconds,) = tool["seconds"][d]
            (rate,) = tool["rates_mb_s"][d]
            assert rate == pytest.approx(size / 1e6 / seconds, rel=1e-12)
            assert tool["median_mb_s"][d] == rate
            assert shown == round(rate, 1), (name, d, shown, rate)
    return printed


def test_storage_benchmark_ratios_are_its_rates_divided(tmp_path: Path) -> None:
    env = child_env()
    done, result = run_benchmark(tmp_path, env)
    tools, stdout = result["tools"], done.stdout
    printed = check_rates(stdout, result)
    ours = result["order"][0]
    assert ours == OURS and tools[ours]["kind"] == "ours" and tools[ours]["settings"] == DEFAULTS
    if shutil.which("aws", path=env["PATH"]) is None:
        # the only case where no ratio is acceptable: this machine has no aws-cli
        assert "aws-cli not found on PATH" in stdout and "aws" not in tools, stdout
        assert not any(map(RATIO_ROW.match, stdout.splitlines()))
        pytest.skip("aws-cli is not on PATH: only our legs were checked")
    assert set(result["order"]) == {ours, "aws"} and result["aws_startup_s"] > 0
    ratios = [m for m in map(RATIO_ROW.match, stdout.splitlines()) if m]
    assert [(m["ours"], m["theirs"]) for m in ratios] == [(tools[ours]["short"], tools["aws"]["short"])]
    (row,) = ratios
    for key, d in DIRECTIONS.items():
        theirs = "download" if d == "download_verified" else d  # aws's plain download: it verifies nothing
        stored = tools[ours]["over_aws"][d]
        # the stored ratio is the stored rates divided ...
        assert stored == pytest.approx(tools[ours]["median_mb_s"][d] / tools["aws"]["median_mb_s"][theirs])
        # ... the printed one is the stored one to its three decimals ...
        shown = cell(row[key])
        assert shown is not None and abs(shown - stored) <= 5e-4 + 1e-12, (d, shown, stored)
        # ... and the printed rates divided, within their rounding to one decimal
        a, b = printed[ours][d], printed["aws"][theirs]
        assert a is not None and b is not None
        slack = (a / b) * (0.05 / a + 0.05 / b) + 5e-4
        assert abs(shown - a / b) <= slack, (d, shown, a, b)
    upload, download = tools[ours]["over_aws"]["upload"], tools[ours]["over_aws"]["download"]
    verdict = "met" if upload >= 1 and download >= 1 else "not met"
    assert f"**{verdict}** (upload {upload:.3f}, download {download:.3f})" in stdout
    # the .md holds what was printed
    md = (tmp_path / "storage.md").read_text()
    assert table_lines(md) == table_lines(stdout) and len(table_lines(md)) == 3
    assert md.strip() in stdout
    assert result["command"].endswith(f"--size-mb {SIZE_MB} --rounds 1 --out {tmp_path}")


def test_storage_benchmark_without_aws_cli_says_it_skipped_it(tmp_path: Path) -> None:
    """The same run with every folder that holds an `aws` taken off PATH: our legs only, and said so."""
    env = child_env()
    folders = env["PATH"].split(os.pathsep)
    env["PATH"] = os.pathsep.join(f for f in folders if shutil.which("aws", path=f) is None)
    done, result = run_benchmark(tmp_path, env)
    assert "aws-cli not found on PATH: the aws s3 cp legs are skipped (no ratios)" in done.stdout
    assert result["order"] == [OURS] and result["aws_startup_s"] is None
    assert "over_aws" not in result["tools"][OURS] and result["machine"]["aws_cli"] is None
    check_rates(done.stdout, result)
    md = (tmp_path / "storage.md").read_text()
    assert "aws-cli is not on PATH: its legs were skipped, so there are no ratios" in md
    assert table_lines(md) == table_lines(done.stdout) and len(table_lines(md)) == 1
