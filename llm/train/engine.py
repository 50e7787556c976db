"""The one place that starts torch.distributed and calls deepspeed.initialize."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
from torch import nn

from llm.checkpoints.weights import ADAM_MOMENTS, AdamStates
from llm.ds_config import DeepSpeedSettings
from llm.errors import UsageError, fail
from llm.telemetry.gpu_memory import apply_memory_cap


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_node_main(self) -> bool:
        return self.local_rank == 0


def dist_env() -> DistInfo:
    """What the launcher told this process (rank 0 of 1 when started without a launcher)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", 1))),
        node=socket.gethostname(),
    )


@dataclass(frozen=True)
class Placement:
    """Where one rank runs: what rank 0 records for every rank (run.json `ranks`) and prints by node."""

    rank: int
    local_rank: int
    host: str
    address: str  # the address this rank reaches the master from: the node's, on its job network
    pid: int


def placement(info: DistInfo) -> Placement:
    return Placement(
        rank=info.rank,
        local_rank=info.local_rank,
        host=info.node,
        address=route_address(
            os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", 9))
        ),
        pid=os.getpid(),
    )


def route_address(host: str, port: int) -> str:
    """This machine's address on the route to host:port (a UDP connect sends nothing), or '' if none."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((host, port))
            return str(sock.getsockname()[0])
    except OSError:
        return ""


def describe_nodes(ranks: list[Placement]) -> str:
    """`node0 (10.77.0.1) ranks 0-7; node1 (10.77.0.2) ranks 8-15`: one entry per node, in rank order."""
    nodes: dict[tuple[str, str], list[int]] = {}
    for p in sorted(ranks, key=lambda p: p.rank):
        nodes.setdefault((p.host, p.address), []).append(p.rank)
    parts = []
    for (host, address), numbers in nodes.items():
        if len(numbers) == 1:
            label = f"rank {numbers[0]}"
        elif numbers == list(range(numbers[0], numbers[-1] + 1)):
            label = f"ranks {numbers[0]}-{numbers[-1]}"
        else:
            label = "ranks " + ",".join(map(str, numbers))
        parts.append(f"{host} ({address or 'no route'}) {label}")
    return "; ".join(parts)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed(*, timeout_s: float) -> DistInfo:
    """Join the job with every collective bounded by `timeout_s`.

    `deepspeed.init_distributed(timeout=...)` bounds only the default group; ZeRO's own groups come
    from `dist.new_group` and would wait torch's 30-minute default on a frozen rank, so we lower that
    default first (measured in shared/recipes/multinode.md).
    """
    if "RANK" not in os.environ:  # `python launch/train.py`: a job of one, without MPI discovery
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())
        )
    # the ZeRO step allocates large flat buffers at once: let the allocator grow segments instead of failing
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    info = dist_env()
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        # ranks on one machine share its cores; oversubscribed threads slow every rank down
        torch.set_num_threads(cpu_threads(info.local_world_size))
    timeout = timedelta(seconds=timeout_s)
    # Groups made without a timeout (ZeRO's, DeepSpeed's) take torch's default for their backend:
    # gloo's and NCCL's are separate (NCCL's is 10 minutes), so lower both.
    dist.distributed_c10d.default_pg_timeout = timeout
    dist.distributed_c10d.default_pg_nccl_timeout = timeout
    deepspeed.init_distributed(auto_mpi_discovery=False, timeout=timeout, verbose=False)
    _unlink_shared_buffer(info)
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
        try:
            apply_memory_cap()  # GPU_MEMORY_CAP_GIB: how `make gpu-check` plays a 24 GB card on a larger one
        except UsageError as err:
            fail(str(err), quiet=not info.is_main)
    return info


def shared_buffer_path(rank: int) -> Path:
    """The /dev/shm file DeepSpeed's CPU all-reduce creates for `rank` of the job at MASTER_ADDR:PORT."""
    addr, port = os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]
    return Path("/dev/shm") / f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}"


def _unlink_shared_buffer(info: DistInfo) -> None:
    """Remove the name of this rank's shared-memory all-reduce buffer once every rank has mapped it.

    On the CPU, DeepSpeed maps a 69 MB /dev/shm file per rank and never unlinks it: each job left
    that much memory (tmpfs) behind per rank for good (19 GB after a day of test runs on a 24 GB
    machine). DeepSpeed's initialisation returns only once a rank has mapped every other rank's file,
    so after a barrier the names can go; the mappings stay valid until the ranks exit, however they
    exit (a killed rank leaks nothing either).
    """
    if torch.cuda.is_available():
        return
    if info.world_size > 1:
        dist.barrier()
    shared_buffer_path(info.rank).unlink(missing_ok=True)


def group_timeouts() -> dict[str, float]:
    """Every process group of this process and its timeout in seconds, read back from torch.

    Keyed by group name, with ":cpu" / ":cuda" added where a group has a separate backend per device.
    """
    found: dict[str, float] = {}
    for group in list(dist.distributed_c10d._world.pg_map):
        backends: dict[int, tuple[str, Any]] = {}
        for kind in ("cuda", "cpu"):
            try:
                backend = group._get_backend(torch.device(kind))
            except RuntimeError:
                continue  # no backend of this group serves that device
            backends.setdefault(id(backend), (kind, backend))
        for kind, backend in backends.values():
            name = group.group_name if len(backends) == 1 else f"{group.group_name}:{kind}"
            found[name] = backend.options._timeout.total_seconds()
    return found


def cpu_threads(local_world_size: int) -> int:
    """Threads for each of a node's `local_world_size` ranks: the CPUs this process may run on (its
    affinity: taskset, a cgroup's cpuset), shared among them."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform (macOS)
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, local_world_size))


def device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )


def optimizer_order(model: nn.Module) -> dict[str, torch.Size]:
    """The parameters' names and shapes in the order of the optimizer's groups (build_engine's)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return {names[id(p)]: p.shape for group in _param_groups(model) for p in group["params"]}


def set_adam_states(engine: Any, states: AdamStates) -> None:
    """Put Adam's moments and step count, given per parameter name, into a ZeRO 0, 1 or 2 engine.

    How a checkpoint of one layout resumes in the other (llm/train/checkpoint.py); the weights come
    in through DeepSpeed's own loading of the module.
    """
    names = {id(p): name for name, p in engine.module.named_parameters()}
    stage = engine.zero_optimization_stage()

    def step() -> torch.Tensor:  # one tensor each: torch's fused AdamW counts steps in place
        return torch.tensor(states.step)

    if stage == 0:
        optimizer = engine.optimizer
        params = [p for group in optimizer.param_groups for p in group["params"]]
        per_param = [{"step": step(), **states.moments[names[id(p)]]} for p in params]
    elif stage in (1, 2):
        zero = engine.optimizer
        optimizer = zero.optimizer
        rank = dist.get_rank(group=zero.dp_process_group)
        per_param = []
        for index, group in enumerate(zero.bit16_groups):
            if optimizer.param_groups[index]["params"] != [zero.single_partition_of_fp32_groups[index]]:
                raise RuntimeError("DeepSpeed's optimizer groups are not one flat partition each")
            flat = zero.bit16_groups_flat[index]
            size = int(zero.partition_size[index])
            full = {key: torch.zeros(flat.numel(), device=flat.device) for key in ADAM_MOMENTS}
            for p in group:
                start = (p.data.data_ptr() - flat.data_ptr()) // flat.element_size()
                if p.data.untyped_storage().data_ptr() != flat.untyped_storage().data_ptr() or not (
                    start >= 0 and start + p.numel() <= flat.numel()
                ):
                    raise RuntimeError(f"{names[id(p)]} is not a view into its group's flat buffer")
                for key in ADAM_MOMENTS:
                    full[key][start : start + p.numel()] = states.moments[names[id(p)]][key].reshape(-1)
            own = {key: tensor.narrow(0, rank * size, size).clone() for key, tensor in full.items()}
            per_param.append({"step": step(), **own})
    else:
        raise ValueError(f"ZeRO {stage}: Adam's states are set per parameter at ZeRO 0, 1 and 2 only")
    saved = optimizer.state_dict()
    saved["state"] = dict(enumerate(per_param))
    optimizer.load_state_dict(saved)


def _param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Weight decay on matrices only; biases, norms (1-D) go without, as in GPT-2 and nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2]},  # weight_decay from the JSON
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_engine(model: nn.Module, settings: DeepSpeedSettings) -> Any:
    """Wrap the model in a DeepSpeed engine, its optimizer and schedule taken from the JSON."""
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=_param_groups(model), config=settings.config
    )
    if dist.get_world_size() == 1 and engine.zero_optimization_stage() == 0:
        # One rank has nothing to average, but DeepSpeed would still flatten every gradient into
        # one buffer, all-reduce it with itself and copy it back, each step: 9 ms of a 1.5 s CPU
        # step here, 3% on a busy machine (benchmarks/README.md). ZeRO 1-3 reduce into their own
        # buffers, so they keep it.
        engine.enable_backward_allreduce = False
    if (
        engine.zero_optimization_stage() == 0
        and settings.precision == "fp32"
        and engine.gradient_clipping() > 0
    ):
        engine.clip_fp32_gradients = lambda: _clip_keeping_the_norm(engine)
    return engine


def _clip_keeping_the_norm(engine: Any) -> None:
    """Clip as DeepSpeed's ZeRO-0 fp32 step does, and keep the norm it drops.

    DeepSpeed's ZeRO and fp16/bf16 optimizers report the gradient norm before clipping; its plain fp32
    path computes it, clips, and discards it, so train records would have no grad_norm (every one-rank
    run with the shipped CPU config). torch's clip_grad_norm_ uses the same coefficient, max / (norm +
    1e-6) capped at 1, and returns the norm; the gradients are already averaged over the ranks here, so
    each rank's norm is the job's. Kept as a tensor: read (a device sync) only on steps that log.
    """
    grads = [p for p in engine.module.parameters() if p.grad is not None]
    engine._global_grad_norm = torch.nn.utils.clip_grad_norm_(grads, engine.gradient_clipping())


def step_stats(engine: Any) -> dict[str, Any]:
    """What the engine knows about the last optimizer step (may synchronise the device)."""
    grad_norm = engine.get_global_grad_norm()
    if isinstance(grad_norm, torch.Tensor):
        grad_norm = grad_norm.item()
    return {
        "lr": float(engine.get_lr()[0]),
        "grad_norm": None if grad_norm is None else float(grad_norm),
        "loss_scale": loss_scale(engine),
        "skipped_steps": int(engine.skipped_steps),
    }


def loss_scale(engine: Any) -> float:
    """The optimizer's current loss scale (1.0 where it keeps none: fp32, bf16)."""
    optimizer = engine.optimizer
    return float(getattr(optimizer, "cur_scale", None) or getattr(optimizer, "loss_scale", None) or 1.0)


def monitor_writer(engine: Any) -> Any:
    """DeepSpeed's own monitor (tensorboard / wandb / csv_monitor), or None when none is enabled."""
    monitor = getattr(engine, "monitor", None)
    return monitor.write_events if monitor is not None and monitor.enabled else None
