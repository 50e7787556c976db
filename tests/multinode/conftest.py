"""Fixtures for runs across simulated nodes (tests/multinode/cluster.py); skipped, with the reason, only
where network namespaces cannot be made here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.multinode.cluster import Cluster, netns_problem

_PROBLEM = netns_problem()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _PROBLEM is None:
        return
    skip = pytest.mark.skip(reason=f"simulated nodes cannot run here: {_PROBLEM}")
    for item in items:
        if "tests/multinode/" in str(item.path):
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    return f"simulated nodes: {'available' if _PROBLEM is None else 'unavailable, ' + _PROBLEM}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path / "cluster", nodes=2) as nodes:
        yield nodes
