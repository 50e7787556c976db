"""Faults across nodes end the whole job in bounded time, leave no rank behind, and `--resume auto`
continues from the last checkpoint at the checkpoint URI (no filesystem is shared between nodes)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.multinode.cluster import Cluster
from tests.multinode.jobs import (
    config,
    finish,
    finish_all,
    launch_each_node,
    launch_pdsh,
    per_node_command,
    rank_processes,
    records,
    switch_s3,
    train_args,
    uploaded_steps,
    wait_for_step,
    write_env,
)

pytestmark = [pytest.mark.dist, pytest.mark.slow]

DIST_TIMEOUT = 20
BOUND = DIST_TIMEOUT + 60  # the bound, from the fault to the launcher's exit


def _inject(cluster: Cluster, fault: str) -> None:
    if fault == "kill -9 node1":
        cluster.kill_node(1)
    elif fault == "partition":
        cluster.cut_link(1)
    else:
        [rank] = rank_processes(cluster, 1)
        rank.send_signal(signal.SIGKILL if fault == "kill -9 rank 1" else signal.SIGSTOP)


def _repair(cluster: Cluster, fault: str) -> None:
    if fault == "kill -9 node1":
        cluster.stop_node(1)
        cluster.start_node(1, fresh=True)  # a replacement machine: nothing on its disk
    elif fault == "partition":
        cluster.mend_link(1)


@pytest.mark.parametrize("fault", ["kill -9 node1", "kill -9 rank 1", "partition", "SIGSTOP rank 1"])
def test_a_fault_ends_the_whole_job_in_bounded_time_then_resume_auto_continues(
    cluster: Cluster, tmp_path: Path, fault: str
) -> None:
    with switch_s3(cluster) as s3:
        write_env(cluster, **s3.env)
        args = train_args(
            cluster, config(tmp_path), "--max-steps", "100000", "--save-every", "5", "--log-every", "1",
            "--eval-every", "100000", "--dist-timeout", str(DIST_TIMEOUT),
            "--checkpoint-uri", s3.uri("runs/r"),
        )  # fmt: skip
        log = tmp_path / "log"
        job = launch_pdsh(cluster, args, log=log)
        wait_for_step(cluster, 7, job, log)
        deadline = time.monotonic() + 120
        while not uploaded_steps(log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.5)
        _inject(cluster, fault)
        started = time.monotonic()
        code, text = finish(job, log, timeout=BOUND + 60)
        elapsed = time.monotonic() - started
        print(f"{fault}: the launcher at node0 exited {code} after {elapsed:.1f} s")
        assert code != 0, text[-3000:]
        assert elapsed <= BOUND, text[-4000:]
        # no rank is left behind on any node that still runs (a partitioned node's ranks time out too)
        nodes = [0] if fault == "kill -9 node1" else [0, 1]
        while any(rank_processes(cluster, i) for i in nodes) and time.monotonic() - started < BOUND:
            time.sleep(0.5)
        assert not any(rank_processes(cluster, i) for i in nodes), [rank_processes(cluster, i) for i in nodes]
        if fault == "SIGSTOP rank 1":  # the frozen rank is named by the survivor and by its watchdog
            assert "error: rank 1 stopped answering" in text, text[-4000:]
            assert "rank 1 on node1" in text and "gave no sign of life" in text, text[-4000:]

        committed = uploaded_steps(text)
        assert committed, text[-4000:]
        _repair(cluster, fault)
        k = max(committed)
        resume_args = [
            *args[: args.index("--max-steps") + 1],
            str(k + 2),
            *args[args.index("--max-steps") + 2 :],
        ]
        code, text = finish(launch_pdsh(cluster, [*resume_args, "--resume", "auto"], log=tmp_path / "resume"),
                            tmp_path / "resume")  # fmt: skip
        assert code == 0, text[-4000:]
        states = [(r["state"], r["step"]) for r in records(cluster, "run_state")]
        assert ("resumed", k) in states and states[-1] == ("finished", k + 2), states


@pytest.mark.parametrize(("launcher", "fault"), [("torchrun", "SIGSTOP rank 1"), ("no_ssh", "partition")])
def test_with_one_launcher_per_node_every_nodes_launcher_ends_in_bounded_time(
    cluster: Cluster, tmp_path: Path, launcher: str, fault: str
) -> None:
    """No pdsh to tear the job down: each node's own launcher must end (torchrun's agent, DeepSpeed's
    --no_ssh), the frozen rank by its watchdog, the partitioned node by its own timeout."""
    cfg = config(tmp_path)
    args = train_args(
        cluster, cfg, "--max-steps", "100000", "--save-every", "100000", "--log-every", "1",
        "--eval-every", "100000", "--dist-timeout", str(DIST_TIMEOUT),
    )  # fmt: skip
    logs = tmp_path / "logs"
    procs = launch_each_node(cluster, per_node_command(launcher, cfg, args, cluster.hostfile()), logs=logs,
                             GLOO_SOCKET_IFNAME="eth0")  # fmt: skip
    wait_for_step(cluster, 5, procs[0], logs / "node0")
    _inject(cluster, fault)
    started = time.monotonic()
    codes, text = finish_all(procs, logs, timeout=BOUND + 60)
    elapsed = time.monotonic() - started
    print(f"{launcher}, {fault}: both nodes' launchers exited {codes} within {elapsed:.1f} s")
    assert all(code != 0 for code in codes), text[-4000:]
    assert elapsed <= BOUND, text[-4000:]
    assert not any(rank_processes(cluster, i) for i in (0, 1))
    if fault == "SIGSTOP rank 1":
        assert "error: rank 1 stopped answering" in text and "gave no sign of life" in text, text[-4000:]
