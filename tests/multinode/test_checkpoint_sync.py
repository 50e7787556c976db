"""No shared filesystem: checkpoint at step k, tear the nodes down, bring up empty nodes, resume, and
steps k+1.. log the same losses as a run never stopped; through S3 and through --checkpoint-sync rsync."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.multinode.cluster import Cluster
from tests.multinode.jobs import (
    config,
    finish,
    launch_pdsh,
    records,
    switch_s3,
    train_args,
    wait_for_line,
    write_env,
)

pytestmark = [pytest.mark.dist, pytest.mark.slow]

K, STEPS = 10, 20


def _losses(cluster: Cluster, run: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for r in records(cluster, "train", run=run):
        out[r["step"]] = r["loss"]  # a step redone after the resume: its last record
    return out


def test_resume_on_empty_nodes_from_s3_and_from_rsync_matches_an_unbroken_run(
    cluster: Cluster, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    steps = ["--max-steps", str(STEPS), "--save-every", str(K), "--log-every", "1", "--eval-every", "1000"]
    with switch_s3(cluster) as s3:
        write_env(cluster, **s3.env)
        code, log = finish(launch_pdsh(cluster, train_args(cluster, cfg, *steps, run="unbroken"),
                                       log=tmp_path / "unbroken"), tmp_path / "unbroken")  # fmt: skip
        assert code == 0, log[-4000:]
        unbroken = _losses(cluster, "unbroken")
        assert sorted(unbroken) == list(range(1, STEPS + 1))

        for mode, sync, committed in [
            ("s3", ["--checkpoint-uri", s3.uri("runs/r")], f"checkpoint step_{K:08d} uploaded to"),
            ("rsync", ["--checkpoint-sync", "rsync"], f"checkpoint step_{K:08d} gathered"),
        ]:
            log = tmp_path / f"{mode}-first"
            job = launch_pdsh(cluster, train_args(cluster, cfg, *steps, *sync, run=mode), log=log)
            wait_for_line(log, committed, job)
            for i in (0, 1):  # the whole cluster goes, mid-run, after step k is committed
                cluster.stop_node(i)
            job.wait(timeout=60)
            # S3: every node is a new machine; rsync: the first node's disk holds the checkpoints
            cluster.start_node(0, fresh=mode == "s3")
            cluster.start_node(1, fresh=True)
            assert not (cluster.disk(1) / mode).exists()
            write_env(cluster, **s3.env)
            started = time.monotonic()
            resume = launch_pdsh(
                cluster, train_args(cluster, cfg, *steps, *sync, "--resume", "auto", run=mode),
                log=tmp_path / f"{mode}-resume",
            )  # fmt: skip
            code, text = finish(resume, tmp_path / f"{mode}-resume")
            assert code == 0, text[-4000:]
            states = [(r["state"], r["step"]) for r in records(cluster, "run_state", run=mode)]
            assert ("resumed", K) in states and states[-1] == ("finished", STEPS), states
            losses = _losses(cluster, mode)
            worst = max(abs(losses[s] - unbroken[s]) for s in range(K + 1, STEPS + 1))
            print(f"{mode}: resumed at step {K} on empty nodes in {time.monotonic() - started:.0f} s; "
                  f"largest loss difference over steps {K + 1}..{STEPS}: {worst:.2e}")  # fmt: skip
            assert worst <= 1e-5, {s: (losses[s], unbroken[s]) for s in range(K + 1, STEPS + 1)}
            if mode == "rsync":  # node1 got its shards back from node0, and node0 holds the whole checkpoint
                assert (
                    cluster.disk(1) / mode / "checkpoints" / f"step_{K:08d}" / "rng_state_rank1.pt"
                ).exists()
                tag = cluster.disk(0) / mode / "checkpoints" / f"step_{STEPS:08d}"
                assert {"rng_state_rank0.pt", "rng_state_rank1.pt", "manifest.json"} <= {
                    p.name for p in tag.iterdir()
                }
