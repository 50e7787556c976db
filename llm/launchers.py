"""Which launcher started this process, and the rank variables torch.distributed reads, from any of them.

DeepSpeed's own launcher (pdsh/ssh or --no_ssh), torchrun, `accelerate launch` and srun-started
torchrun set RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. MPI
launchers (`deepspeed --launcher openmpi`, a bare mpirun) and a bare `srun` set their own instead;
this maps them, before anything reads the world size. MPI and srun know nothing of a master: the
address and port come from .deepspeed_env (`python -m llm.preflight --write-env` writes them) or
the batch script.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path

from llm.errors import UsageError

# (launcher, rank, world size, local rank, local world size)
_SOURCES = (
    ("OpenMPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("MPICH / Intel MPI", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("SLURM srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
)  # fmt: skip


def adopt_launcher_env(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Set RANK & co. from an MPI or SLURM launch (not set already); the launcher's name, or None."""
    env = os.environ if environ is None else environ
    if "RANK" in env:
        return None
    for name, rank, world, local, local_world in _SOURCES:
        if rank not in env or world not in env:
            continue
        local_size = _first_count(env.get(local_world, "")) or int(env[world])
        env.update(
            RANK=env[rank], WORLD_SIZE=env[world], LOCAL_RANK=env.get(local, "0"),
            LOCAL_WORLD_SIZE=str(local_size),
        )  # fmt: skip
        if int(env[world]) > 1 and "MASTER_ADDR" not in env:
            raise UsageError(
                f"started by {name} without MASTER_ADDR: set MASTER_ADDR (the first host) and MASTER_PORT "
                "for every rank (python -m llm.preflight --hostfile HOSTFILE --deepspeed CONFIG --write-env "
                "puts them in .deepspeed_env, which deepspeed --launcher openmpi passes on)"
            )
        env.setdefault("MASTER_PORT", "29500")
        return name
    return None


def _first_count(text: str) -> int:
    """SLURM writes tasks per node as '2' or '2(x3),1': the first node's count."""
    found = re.match(r"\d+", text)
    return int(found.group()) if found else 0


def trainer_env(*, cpu: bool, drop: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """The environment for a trainer started from Python (benchmarks, tests): this one less the LLM_*
    variables (settings: they would override the command line's) and any other prefix in `drop`,
    unbuffered, this interpreter's bin first on PATH (its `deepspeed`), then `extra`. With `cpu`, the CPU
    path even where a GPU exists: DeepSpeed's launcher resets CUDA_VISIBLE_DEVICES for its ranks, so
    DS_ACCELERATOR too (launch/train.py hides CUDA again when the accelerator is the CPU)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", *drop))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    if cpu:
        env.update(CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu")
    env.update(extra)
    return env
