"""Real training across two simulated nodes (own address, hostname, sshd and disk each), one rank per node."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.multinode.cluster import Cluster
from tests.multinode.jobs import config, finish, launch_pdsh, records, run_json, train_args, write_env

pytestmark = [pytest.mark.dist, pytest.mark.slow]


def _check_two_nodes_trained(cluster: Cluster, log: str) -> None:
    ranks = {r["rank"]: r for r in run_json(cluster)["ranks"]}
    assert [(ranks[r]["host"], ranks[r]["address"]) for r in (0, 1)] == [
        ("node0", cluster.address(0)),
        ("node1", cluster.address(1)),
    ], ranks
    assert f"nodes: node0 ({cluster.address(0)}) rank 0; node1 ({cluster.address(1)}) rank 1" in log
    val = [r["val_loss"] for r in records(cluster, "eval")]
    assert len(val) >= 2 and val[-1] < val[0] * 0.9, val
    print(f"val loss {val[0]:.3f} -> {val[-1]:.3f} across node0 and node1")


def test_pdsh_hostfile_run_trains_one_rank_on_each_node(cluster: Cluster, tmp_path: Path) -> None:
    print(write_env(cluster))
    steps = ["--max-steps", "40", "--eval-every", "20", "--save-every", "40"]
    args = train_args(cluster, config(tmp_path), *steps)
    code, log = finish(launch_pdsh(cluster, args, log=tmp_path / "log"), tmp_path / "log")
    assert code == 0, log[-4000:]
    _check_two_nodes_trained(cluster, log)
    # no shared filesystem: each node's disk holds what its own rank wrote, and only that
    step = "checkpoints/step_00000040"
    own = {i: {p.name for p in (cluster.disk(i) / "run" / step).iterdir()} for i in (0, 1)}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "rng_state_rank0.pt"} <= own[0], own
    assert {"zero_pp_rank_1_mp_rank_00_optim_states.pt", "rng_state_rank1.pt"} <= own[1], own
    assert not own[0] & own[1] - {"manifest.json"}, own  # nothing written on one node is seen on the other
    assert not (cluster.disk(1) / "run" / "run.json").exists()
