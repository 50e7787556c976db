"""`python -m llm.preflight` over ssh, from node0 of two simulated nodes: each problem its own line."""

from __future__ import annotations

import json
import shlex
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from tests.helpers import REPO, VENV_BIN, ds_config
from tests.multinode.cluster import Cluster
from tests.multinode.jobs import MASTER_PORT, finish, launch_pdsh, node_env, train_args

pytestmark = [pytest.mark.dist]


def _preflight(cluster: Cluster, hostfile: Path, config: Path, *extra: str) -> tuple[int, dict[str, str]]:
    """Run it at node0; its exit code and its lines by check name."""
    command = (
        f"cd {REPO} && {VENV_BIN}/python -m llm.preflight --hostfile {hostfile} --deepspeed {config} "
        f"--master-port {MASTER_PORT} --run-dir {cluster.local} --min-free-gb 0 {' '.join(extra)}"
    )
    done = subprocess.run(
        ["nsenter", "-t", str(cluster.pid1[0]), "-n", "-u", "-m", "-p", "--", "bash", "-c", command],
        env=node_env(cluster), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    print(done.stdout, done.stderr)
    lines = {}
    for line in done.stdout.splitlines():
        if line.startswith(("ok", "FAIL")):
            name = line.split(None, 1)[1].split(":", 1)[0]
            lines[name] = line
    return done.returncode, lines


def test_preflight_names_an_unreachable_host_a_bad_venv_and_slots_against_the_batch(
    cluster: Cluster, tmp_path: Path
) -> None:
    config = ds_config(
        tmp_path, train_batch_size=16, train_micro_batch_size_per_gpu=4, gradient_accumulation_steps=2
    )
    hostfile = cluster.hostfile()
    code, lines = _preflight(cluster, hostfile, config, "--write-env", "--socket-ifname", "eth0")
    assert code == 0, lines
    for i in (0, 1):
        assert lines[f"node node{i}"].startswith(f"ok    node node{i}: node{i}: python "), lines
        assert "venv first on PATH" in lines[f"node node{i}"]
    assert lines["ssh keep-alive"].startswith("ok")
    env = dict(line.split("=", 1) for line in (cluster.root / "deepspeed_env").read_text().splitlines())
    assert env["MASTER_ADDR"] == "node0" and env["GLOO_SOCKET_IFNAME"] == "eth0"

    # node1's DeepSpeed differs (its package metadata says another version, in node1's view only)
    dist = metadata.distribution("deepspeed")
    original = Path(str(dist.locate_file(f"deepspeed-{dist.version}.dist-info/METADATA")))
    other = cluster.root / "METADATA"
    other.write_text(original.read_text().replace(f"Version: {dist.version}", "Version: 0.14.0", 1))
    cluster.sh(1, f"mount --bind {other} {shlex.quote(str(original))}")
    code, lines = _preflight(cluster, hostfile, config)
    assert code == 1 and lines["node node0"].startswith("ok"), lines
    assert (
        lines["node node1"].startswith("FAIL")
        and f"deepspeed 0.14.0 there, {dist.version} here" in lines["node node1"]
    )
    # the trainer's own start checks the same, before any data or model work: one line, exit 2
    job = launch_pdsh(cluster, train_args(cluster, config, "--max-steps", "5"), log=tmp_path / "log")
    code, log = finish(job, tmp_path / "log")
    assert code == 2, log[-4000:]
    assert (
        f"error: node1 runs other software than node0: deepspeed 0.14.0 there, {dist.version} on node0" in log
    )

    # node1 has no venv at all
    cluster.sh(1, f"mount -t tmpfs none {VENV_BIN.parent}")
    code, lines = _preflight(cluster, hostfile, config)
    assert code == 1 and "is missing there" in lines["node node1"] and "make setup" in lines["node node1"], (
        lines
    )

    # node1 is gone, and a hostfile of 3 ranks cannot make 16 = 4 x 2 x world
    cluster.stop_node(1)
    three = tmp_path / "three"
    three.write_text("node0 slots=2\nnode1 slots=1\n")
    code, lines = _preflight(cluster, three, config)
    assert code == 1, lines
    assert lines["node node1"].startswith("FAIL  node node1: node1: unreachable over ssh"), lines
    assert lines["batch"].startswith("FAIL") and "train_batch_size" in lines["batch"], lines
    assert lines["node node0"].startswith("ok"), lines
    print(json.dumps(lines, indent=1))
