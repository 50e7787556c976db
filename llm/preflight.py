"""Checks before a multi-node launch: `python -m llm.preflight --hostfile hostfile --deepspeed CONFIG`.

One line per check, `ok` or `FAIL` with what to do; exit 1 when any fails (2 for a usage error). What
runs here, on the launching host:
  hostfile      DeepSpeed's MPI-style format (`host slots=N`, `#` comments), every host once
  batch         the JSON's batch arithmetic for the hostfile's world size (sum of slots)
  master port   free on this host (the launcher's master is the hostfile's first host)
  disk          free space for checkpoints under --run-dir's parent (--min-free-gb)
  checkpoint    with --checkpoint-uri: the bucket answers, and a probe object can be written, read
                and deleted under the URI's prefix
`--write-env` writes `.deepspeed_env`, the one way DeepSpeed's ssh launcher passes settings to remote
ranks: PATH with this venv first, DS_ACCELERATOR, the socket interface, PYTHONUNBUFFERED and the
LLM_* / LLM_S3_* settings of this environment. Credentials never go in it: each node reads its own
(instance role, profile) through boto3's chain.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from llm import nodes
from llm.errors import UsageError

DEEPSPEED_ENV = ".deepspeed_env"
# never written to .deepspeed_env: secrets reach remote nodes through their own credential chain
SECRET_VARIABLES = frozenset(
    {"LLM_DASHBOARD_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"}
)
# carried to remote ranks by .deepspeed_env when set here: where things are, never what unlocks them
CARRIED = frozenset(
    {"DS_ACCELERATOR", "CUDA_VISIBLE_DEVICES", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
     "AWS_ENDPOINT_URL", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"}
)  # fmt: skip
CARRIED_PREFIXES = ("LLM_", "NCCL_", "GLOO_", "FI_")  # ours, the communication libraries', EFA's libfabric
_HOST_LINE = re.compile(r"^(?P<host>[A-Za-z0-9][A-Za-z0-9._-]*)\s+slots\s*=\s*(?P<slots>\d+)\s*$")


@dataclass(frozen=True)
class Host:
    name: str
    slots: int


def read_hostfile(path: Path) -> list[Host]:
    """DeepSpeed's hostfile: `host slots=N` a line; blank lines and `#` comments ignored."""
    try:
        text = path.read_text()
    except OSError as err:
        raise UsageError(
            f"--hostfile {path}: cannot read it ({err.strerror}); give a file of `host slots=N` lines"
        ) from None
    hosts: list[Host] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        found = _HOST_LINE.match(line)
        if found is None:
            raise UsageError(f"{path}:{number}: {raw.strip()!r} is not `HOST slots=N` (e.g. `node0 slots=8`)")
        host = Host(found["host"], int(found["slots"]))
        if host.slots < 1:
            raise UsageError(f"{path}:{number}: {host.name} has slots={host.slots}; give 1 or more")
        if any(h.name == host.name for h in hosts):
            raise UsageError(f"{path}:{number}: {host.name} is listed twice; list each host once")
        hosts.append(host)
    if not hosts:
        raise UsageError(f"{path}: no hosts; give one `host slots=N` line per node")
    return hosts


@dataclass(frozen=True)
class Outcome:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def _check(name: str, fn: Callable[[], str]) -> Outcome:
    try:
        return Outcome(name, True, fn())
    except UsageError as err:
        return Outcome(name, False, str(err))


def check_batch(config: Path, hosts: list[Host], *, max_steps: int) -> str:
    import torch

    from llm.ds_config import load_ds_config

    world = sum(h.slots for h in hosts)
    settings = load_ds_config(
        config, world_size=world, cuda_available=torch.cuda.is_available(), max_steps=max_steps
    )
    return (
        f"{world} ranks ({len(hosts)} nodes): micro-batch {settings.micro_batch} x accumulation "
        f"{settings.gradient_accumulation} x {world} = {settings.train_batch} sequences a step"
    )


def check_port(port: int) -> str:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as err:
            raise UsageError(
                f"port {port} is taken here ({err.strerror}); pass another with deepspeed --master_port"
            ) from None
    return f"{port} is free here"


def check_disk(run_dir: Path, *, min_free_gb: float) -> str:
    where = next((p for p in [run_dir, *run_dir.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(where).free / 1e9
    if free < min_free_gb:
        raise UsageError(
            f"{where} has {free:.1f} GB free, less than --min-free-gb {min_free_gb:g}; free space or "
            "choose another --run-dir"
        )
    return f"{free:.1f} GB free at {where}"


def check_checkpoint_uri(text: str) -> str:
    from llm.storage.s3 import S3Storage
    from llm.storage.uri import parse_s3_uri

    storage = S3Storage(parse_s3_uri(text, what="--checkpoint-uri"))
    storage.check_bucket()
    probe = f"preflight/{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    storage.write_bytes(probe, b"llm preflight probe")
    if storage.read_bytes(probe) != b"llm preflight probe":
        raise UsageError(f"{storage.describe(probe)}: the probe read back differs; check the endpoint")
    storage.delete(probe)
    return f"{storage.describe()} at {storage.endpoint}: written, read and deleted a probe"


def deepspeed_env(*, socket_ifname: str | None, environ: dict[str, str]) -> dict[str, str]:
    """What remote ranks need that DeepSpeed's launcher does not pass: one KEY=VALUE each."""
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    env = {"PATH": os.pathsep.join([venv_bin, *path]), "PYTHONUNBUFFERED": "1"}
    for key, value in sorted(environ.items()):
        if (key in CARRIED or key.startswith(CARRIED_PREFIXES)) and key not in SECRET_VARIABLES:
            env[key] = value
    if socket_ifname:
        env["GLOO_SOCKET_IFNAME"] = env["NCCL_SOCKET_IFNAME"] = socket_ifname
    bad = [k for k, v in env.items() if "\n" in v]
    if bad:
        raise UsageError(f"{bad[0]} holds a newline, which .deepspeed_env cannot carry; unset it")
    return env


def deepspeed_env_path(environ: dict[str, str]) -> Path:
    """Where DeepSpeed's launcher reads the file: $DS_ENV_FILE (a name, or a path), else .deepspeed_env,
    here (it also reads ~/ that name)."""
    return Path.cwd() / environ.get("DS_ENV_FILE", DEEPSPEED_ENV)


def write_deepspeed_env(path: Path, env: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))  # no blank lines, no comments
    return path


def run_checks(args: argparse.Namespace, hosts: list[Host]) -> list[Outcome]:
    outcomes = [Outcome("hostfile", True, ", ".join(f"{h.name} ({h.slots})" for h in hosts))]
    outcomes.append(_check("batch", lambda: check_batch(args.deepspeed, hosts, max_steps=args.max_steps)))
    outcomes.append(_check("master port", lambda: check_port(args.master_port)))
    outcomes.append(_check("disk", lambda: check_disk(args.run_dir, min_free_gb=args.min_free_gb)))
    if args.checkpoint_uri:
        outcomes.append(_check("checkpoint uri", lambda: check_checkpoint_uri(args.checkpoint_uri)))
    if len(hosts) > 1 and not args.no_ssh:  # DeepSpeed runs a one-host job without ssh
        outcomes += check_nodes(args, hosts)
    return outcomes


def check_nodes(args: argparse.Namespace, hosts: list[Host]) -> list[Outcome]:
    """Over ssh, as the launcher will: each host's software, PATH, disk and GPUs against this host's."""
    environ = dict(os.environ)
    keepalive = nodes.keepalive_problem(hosts[0].name, ssh_port=args.ssh_port)
    outcomes = [Outcome("ssh keep-alive", not keepalive, keepalive or "on (ServerAliveInterval)")]
    env_file = deepspeed_env_path(environ)
    written = _read_env_file(env_file)
    here = nodes.facts(args.run_dir)
    venv_bin = str(Path(sys.executable).parent)

    def one(host: Host) -> Outcome:
        try:
            there = nodes.probe(host.name, cwd=Path.cwd(), path=written.get("PATH"), run_dir=args.run_dir,
                                ssh_port=args.ssh_port)  # fmt: skip
        except UsageError as err:
            return Outcome(f"node {host.name}", False, str(err))
        differ = nodes.differences(here, there)
        problems = [f"{', '.join(differ)}: {nodes.SAME_FIX}"] if differ else []
        if there["path_first"] != venv_bin:
            fix = (
                f"python -m llm.preflight ... --write-env writes {env_file}"
                if not written
                else f"fix {env_file}"
            )
            problems.append(
                f"PATH there starts with {there['path_first']!r}, not this venv's {venv_bin} ({fix})"
            )
        if there["disk_free_gb"] < args.min_free_gb:
            problems.append(f"{there['disk_free_gb']} GB free at {there['disk_at']}, under --min-free-gb")
        gpu = nodes.gpu_problem(there["gpus"], host.slots, {**environ, **written})
        if gpu:
            problems.append(gpu)
        if problems:
            return Outcome(f"node {host.name}", False, "; ".join(problems))
        gpus = f"{len(there['gpus'])} GPU(s)" if there["gpus"] else "no GPU"
        return Outcome(
            f"node {host.name}", True,
            f"{there['host']}: python {there['python']}, torch {there['torch']}, deepspeed "
            f"{there['deepspeed']}, llm {there['llm']}, venv first on PATH, {there['disk_free_gb']} GB free, "
            f"{gpus}",
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=16) as pool:
        return outcomes + list(pool.map(one, hosts))


def _read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .deepspeed_env ({} when there is none)."""
    if not path.is_file():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llm.preflight",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--hostfile", type=Path, help="DeepSpeed's hostfile (`host slots=N`); required")
    parser.add_argument("--deepspeed", type=Path, help="the DeepSpeed JSON the run will use; required")
    parser.add_argument(
        "--max-steps", type=int, default=5000, help="the run's --max-steps (for 'auto' schedules)"
    )
    parser.add_argument("--master-port", type=int, default=29500, help="the launcher's --master_port")
    parser.add_argument(
        "--run-dir", type=Path, default=Path("runs"), help="where checkpoints will be written"
    )
    parser.add_argument("--min-free-gb", type=float, default=10.0, help="free disk the run needs (GB)")
    parser.add_argument("--checkpoint-uri", help="s3://bucket/prefix the run will upload checkpoints to")
    parser.add_argument(
        "--write-env",
        action="store_true",
        help=f"write {DEEPSPEED_ENV} here ($DS_ENV_FILE if set) for remote ranks",
    )
    parser.add_argument("--socket-ifname", help="GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME for .deepspeed_env")
    parser.add_argument("--ssh-port", type=int, help="the port of the nodes' sshd (deepspeed --ssh_port)")
    parser.add_argument(
        "--no-ssh",
        action="store_true",
        help="this host's checks only (one launcher per node: deepspeed --no_ssh, torchrun, accelerate)",
    )
    parser.add_argument(
        "--facts", action="store_true", help="print this node's facts as JSON (what ssh asks)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.facts:
        nodes.print_facts(args.run_dir)
        return 0
    try:
        if args.hostfile is None or args.deepspeed is None:
            raise UsageError("give --hostfile HOSTFILE and --deepspeed CONFIG (the launch's own)")
        hosts = read_hostfile(args.hostfile)  # a bad hostfile is a usage error: nothing else can be checked
        written = None
        if args.write_env:  # first: the checks over ssh then see what remote ranks will get
            environ = dict(os.environ)
            env = deepspeed_env(socket_ifname=args.socket_ifname, environ=environ)
            # for MPI launchers (pdsh's ranks get the launcher's --master_addr/--master_port instead)
            env.update(MASTER_ADDR=hosts[0].name, MASTER_PORT=str(args.master_port))
            written = write_deepspeed_env(deepspeed_env_path(environ), env)
        outcomes = run_checks(args, hosts)
        if written is not None:
            outcomes.append(Outcome("deepspeed env", True, f"written to {written} (no credentials in it)"))
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for outcome in outcomes:
        print(outcome.line(), flush=True)
    failed = [o for o in outcomes if not o.ok]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
