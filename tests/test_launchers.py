"""Rank variables from every launcher (llm/launchers.py) and the preflight's GPU rule (llm/nodes.py)."""

from __future__ import annotations

import pytest

from llm.errors import UsageError
from llm.launchers import adopt_launcher_env
from llm.nodes import differences, gpu_problem, mismatch


def test_mpi_and_srun_variables_become_torchs() -> None:
    ompi = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "MASTER_ADDR": "node0"}  # fmt: skip
    assert adopt_launcher_env(ompi) == "OpenMPI"
    assert (ompi["RANK"], ompi["WORLD_SIZE"], ompi["LOCAL_RANK"], ompi["LOCAL_WORLD_SIZE"]) == (
        "3",
        "4",
        "1",
        "2",
    )
    assert ompi["MASTER_PORT"] == "29500"
    srun = {"SLURM_PROCID": "5", "SLURM_NTASKS": "6", "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "2(x3)",
            "MASTER_ADDR": "n0", "MASTER_PORT": "1234"}  # fmt: skip
    assert adopt_launcher_env(srun) == "SLURM srun"
    assert (srun["RANK"], srun["WORLD_SIZE"], srun["LOCAL_WORLD_SIZE"], srun["MASTER_PORT"]) == (
        "5",
        "6",
        "2",
        "1234",
    )
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}
    assert adopt_launcher_env(torchrun) is None and torchrun["RANK"] == "1"  # torch's own variables win
    alone: dict[str, str] = {}
    assert adopt_launcher_env(alone) is None and alone == {}


def test_an_mpi_launch_without_a_master_says_where_it_goes() -> None:
    with pytest.raises(UsageError, match=r"OpenMPI without MASTER_ADDR.*--write-env"):
        adopt_launcher_env({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"})
    one = {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1"}  # a job of one needs no master
    assert adopt_launcher_env(one) == "OpenMPI"


def test_gpus_against_slots_and_geforce_peer_to_peer() -> None:
    assert gpu_problem([], 4, {}) is None  # a CPU node: slots are processes
    assert "2 GPU(s) but slots=4" in str(gpu_problem(["NVIDIA A100"] * 2, 4, {}))
    geforce = ["NVIDIA GeForce RTX 3090"] * 2
    assert "NCCL_P2P_DISABLE=1" in str(gpu_problem(geforce, 2, {}))
    assert gpu_problem(geforce, 2, {"NCCL_P2P_DISABLE": "1"}) is None
    assert gpu_problem(geforce[:1], 1, {}) is None  # one card: no peer-to-peer
    assert gpu_problem(["NVIDIA H100 80GB HBM3"] * 8, 8, {}) is None


def test_the_first_differing_node_is_named() -> None:
    same = {"host": "a", "python": "3.11.7", "torch": "2.13.0", "deepspeed": "0.19.8", "llm": "abc"}
    other = {**same, "host": "b", "torch": "2.12.0"}
    assert differences(same, other) == ["torch 2.12.0 there, 2.13.0 here"]
    assert mismatch([same, None, {**same, "host": "c"}]) is None  # None: ranks that are not a node's first
    assert str(mismatch([same, None, other])).startswith(
        "b runs other software than a: torch 2.12.0 there, 2.13.0 on a"
    )
