"""`python -m llm.cloud hostfile`: a DeepSpeed hostfile from tagged EC2 instances on moto's server.

The suite's moto server answers EC2 too (it runs every service on one endpoint); instances are made
with boto3's run_instances and the real CLI runs as a subprocess. Each test tags its instances with
its own value, so tests sharing the server never see each other's instances. Credential checks need a
server that refuses keys: moto does that only in its IAM mode, which applies to the whole server, so
they run on a second moto server of their own.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llm.cloud import Instance, hostfile_hosts
from llm.preflight import read_hostfile
from tests.helpers import REPO, child_env
from tests.s3_server import ACCESS_KEY, SECRET_KEY, MotoServer

MOTO_EXAMPLE_AMI = "ami-12c6146b"


def _env(endpoint: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in child_env().items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,  # no ~/.aws of this machine's user leaks in
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",  # no wait on an instance role that is not there
    )
    if endpoint:
        env["LLM_EC2_ENDPOINT_URL"] = endpoint
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}  # extra KEY="" drops KEY


def _ec2(endpoint: str, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> Any:
    import boto3

    return boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


@functools.cache
def _image(endpoint: str) -> str:
    """An AMI moto knows: its usual example one, else the first it lists (listing all takes seconds)."""
    ec2 = _ec2(endpoint)
    try:
        return str(ec2.describe_images(ImageIds=[MOTO_EXAMPLE_AMI])["Images"][0]["ImageId"])
    except Exception:
        return str(ec2.describe_images()["Images"][0]["ImageId"])


def _launch(ec2: Any, instance_type: str, *, tags: dict[str, str], count: int = 1) -> list[str]:
    answer = ec2.run_instances(
        ImageId=_image(ec2.meta.endpoint_url),
        MinCount=count,
        MaxCount=count,
        InstanceType=instance_type,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    )
    return [i["InstanceId"] for i in answer["Instances"]]


def _described(ec2: Any, ids: list[str]) -> list[dict[str, Any]]:
    """The instances as EC2 describes them, in the order the hostfile must list them."""
    pages = ec2.get_paginator("describe_instances").paginate(InstanceIds=ids)
    found = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    return sorted(found, key=lambda i: (i["LaunchTime"], i["InstanceId"]))


def _hostfile(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm.cloud", "hostfile", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2 with exactly one `error:` line holding every word, nothing on stdout, no credentials."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert SECRET_KEY not in result.stderr
    return lines[0]


@pytest.fixture
def cluster() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def test_hostfile_lists_running_tagged_instances_with_gpu_slots(
    moto_server: MotoServer, cluster: str, tmp_path: Path
) -> None:
    ec2 = _ec2(moto_server.url)
    ours = {"Cluster": cluster, "Team": "ml"}
    # launched a second before the others: rank 0 by launch time, whatever its id
    first = _launch(ec2, "g5.xlarge", tags=ours)
    time.sleep(1.1)
    rest = _launch(ec2, "p4d.24xlarge", tags=ours, count=2)
    stopped = _launch(ec2, "p4d.24xlarge", tags=ours)
    ended = _launch(ec2, "g5.xlarge", tags=ours)
    other_team = _launch(ec2, "p4d.24xlarge", tags={"Cluster": cluster, "Team": "web"})
    other_cluster = _launch(ec2, "g5.xlarge", tags={"Cluster": f"{cluster}-other", "Team": "ml"})
    ec2.stop_instances(InstanceIds=stopped)
    ec2.terminate_instances(InstanceIds=ended)

    result = _hostfile("--tag", f"Cluster={cluster}", "--tag", "Team=ml", env=_env(moto_server.url))

    assert result.returncode == 0, result.stderr
    expected = _described(ec2, first + rest)
    assert expected[0]["InstanceId"] == first[0]
    slots = {"g5.xlarge": 1, "p4d.24xlarge": 8}
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == f"# llm.cloud hostfile: 3 running EC2 instances tagged Cluster={cluster} Team=ml in us-east-1"
    )
    assert lines[1:] == [f"{i['PrivateIpAddress']} slots={slots[i['InstanceType']]}" for i in expected]
    for left_out in stopped + ended + other_team + other_cluster:
        assert left_out not in result.stderr  # stderr names each instance listed
    for listed in first + rest:
        assert listed in result.stderr
    path = tmp_path / "hostfile"
    path.write_text(result.stdout)
    hosts = read_hostfile(path)
    assert [(h.name, h.slots) for h in hosts] == [
        (i["PrivateIpAddress"], slots[i["InstanceType"]]) for i in expected
    ]


def test_slots_from_the_flag_and_a_gpu_less_type_needs_it(moto_server: MotoServer, cluster: str) -> None:
    ec2 = _ec2(moto_server.url)
    cpu = _launch(ec2, "t3.micro", tags={"Cluster": cluster})
    gpu = _launch(ec2, "p4d.24xlarge", tags={"Cluster": cluster})
    # AWS_ENDPOINT_URL alone reaches the server too (botocore reads it)
    env = _env(None, AWS_ENDPOINT_URL=moto_server.url)

    line = _one_error(_hostfile("--tag", f"Cluster={cluster}", env=env), "t3.micro", cpu[0], "--slots N")
    assert "p4d" not in line

    result = _hostfile("--tag", f"Cluster={cluster}", "--slots", "2", env=env)
    assert result.returncode == 0, result.stderr
    expected = _described(ec2, cpu + gpu)
    assert result.stdout.splitlines()[1:] == [f"{i['PrivateIpAddress']} slots=2" for i in expected]


def test_every_page_of_instances_is_listed(moto_server: MotoServer, cluster: str) -> None:
    """moto answers 100 reservations a page: 101 one-instance launches need a second page."""
    ec2 = _ec2(moto_server.url)
    ids = [i for _ in range(101) for i in _launch(ec2, "g5.xlarge", tags={"Cluster": cluster})]

    result = _hostfile("--tag", f"Cluster={cluster}", env=_env(moto_server.url))

    assert result.returncode == 0, result.stderr
    hosts = result.stdout.splitlines()[1:]
    assert hosts == [f"{i['PrivateIpAddress']} slots=1" for i in _described(ec2, ids)]
    assert len(hosts) == 101


def test_errors_are_one_line_with_the_fix(moto_server: MotoServer, cluster: str) -> None:
    env = _env(moto_server.url)
    _one_error(
        _hostfile("--tag", f"Cluster={cluster}", env=env),
        f"no running EC2 instances tagged Cluster={cluster}",
    )
    _one_error(_hostfile("--tag", "Cluster", env=env), "'Cluster' is not KEY=VALUE", "--tag Cluster=mine")
    _one_error(_hostfile("--tag", "=x", env=env), "is not KEY=VALUE")
    _one_error(_hostfile("--tag", "A=1", "--tag", "A=2", env=env), "--tag A is given twice")
    _one_error(
        _hostfile("--tag", "A=1", env=_env(moto_server.url, AWS_DEFAULT_REGION="")),
        "no AWS region",
        "--region",
    )
    no_keys = _env(moto_server.url, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    _one_error(_hostfile("--tag", "A=1", env=no_keys), "no AWS credentials found", "AWS_ACCESS_KEY_ID")
    _one_error(_hostfile("--tag", "A=1", "--profile", "nosuch", env=env), "--profile nosuch", "~/.aws/config")
    # no endpoint: AWS's own URL for a region that does not exist (never resolves, online or not);
    # AWS_REGION is read, and wins over AWS_DEFAULT_REGION
    _one_error(
        _hostfile("--tag", "A=1", env=_env(None, AWS_REGION="xx-nowhere-9")),
        "cannot reach EC2",
        "'xx-nowhere-9' is not an EC2 region",
        "--region",
    )


def test_order_is_launch_time_then_id_and_addressless_instances_are_left_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # on the function itself: moto stamps launch times to the second and gives every instance an address
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    instances = [
        Instance("i-a", "g5.xlarge", "10.0.0.4", late),
        Instance("i-d", "g5.xlarge", "10.0.0.3", early),
        Instance("i-b", "g5.xlarge", None, early),
        Instance("i-c", "p4d.24xlarge", "10.0.0.2", early),
    ]
    hosts = hostfile_hosts(instances, {"g5.xlarge": 1, "p4d.24xlarge": 8}, slots=None)
    assert [(i.instance_id, i.address, n) for i, n in hosts] == [
        ("i-c", "10.0.0.2", 8),
        ("i-d", "10.0.0.3", 1),
        ("i-a", "10.0.0.4", 1),
    ]
    assert "i-b (g5.xlarge) has no private IPv4 address; left out" in capsys.readouterr().err


# -- credentials: a moto server of its own in IAM mode -----------------------------------------------
def _documented_policy() -> dict[str, Any]:
    """docs/multinode.md's IAM policy for llm.cloud: the JSON block after `<!-- policy: hostfile -->`."""
    text = (REPO / "docs" / "multinode.md").read_text()
    found = re.search(r"<!-- policy: hostfile -->\n```json\n(.*?)```", text, re.S)
    assert found, "docs/multinode.md: no JSON block after <!-- policy: hostfile -->"
    policy: dict[str, Any] = json.loads(found[1])
    return policy


def _allow(action: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]}


@pytest.fixture(scope="module")
def iam_server() -> Iterator[tuple[MotoServer, dict[str, tuple[str, str]], str]]:
    """A server that checks keys and policies; users `reader` (docs/multinode.md's policy), `no_types`
    and `types_only` (one of its two actions each), and one tagged running instance."""
    server = MotoServer()
    try:
        cluster = f"c-{uuid.uuid4().hex[:10]}"
        _launch(_ec2(server.url), "g5.xlarge", tags={"Cluster": cluster})
        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
        )
        keys = {}
        users = [
            ("reader", _documented_policy()),
            ("no_types", _allow("ec2:DescribeInstances")),
            ("types_only", _allow("ec2:DescribeInstanceTypes")),
        ]
        for user, policy in users:
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="ec2-read", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        request = urllib.request.Request(
            f"{server.url}/moto-api/reset-auth",
            data=b"0",
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).read()  # from here on, keys and policies are checked
        yield server, keys, cluster
    finally:
        server.stop()


def test_credentials_refused_or_denied_are_named(
    iam_server: tuple[MotoServer, dict[str, tuple[str, str]], str],
) -> None:
    server, keys, cluster = iam_server

    def run(key: str, secret: str) -> subprocess.CompletedProcess[str]:
        env = _env(server.url, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
        return _hostfile("--tag", f"Cluster={cluster}", env=env)

    reader = run(*keys["reader"])
    assert reader.returncode == 0, reader.stderr  # the documented policy is enough
    assert reader.stdout.splitlines()[1].endswith(" slots=1")

    line = _one_error(run(keys["reader"][0], SECRET_KEY), "refused the credentials (AuthFailure)")
    assert keys["reader"][1] not in line
    _one_error(run("AKIANOSUCHKEY0000000", SECRET_KEY), "refused the credentials", "AWS_SECRET_ACCESS_KEY")
    _one_error(run(*keys["types_only"]), "denied ec2:DescribeInstances (", "allow ec2:DescribeInstances and")
    _one_error(
        run(*keys["no_types"]), "denied ec2:DescribeInstanceTypes (", "allow ec2:DescribeInstances and"
    )
