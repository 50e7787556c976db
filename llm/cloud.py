"""A DeepSpeed hostfile from running EC2 instances:
`python -m llm.cloud hostfile --tag Cluster=mine > hostfile`.

Lists the RUNNING instances that carry every `--tag KEY=VALUE` given, and prints one `ADDRESS slots=N`
line each: the instance's private IPv4 address, and N = its type's GPU count (from EC2's
DescribeInstanceTypes) or `--slots N`. Lines are sorted by launch time, then instance id, so the same
instances always give the same file; the first line is the node that runs rank 0 (the launcher's
master). A `#` line on top names the filter and the count; stderr lists which instance each line is.

AWS access goes through boto3's standard chain (environment, `--profile` / AWS_PROFILE, instance role);
the region is --region, else AWS_REGION, AWS_DEFAULT_REGION or the profile's. LLM_EC2_ENDPOINT_URL
(else AWS_ENDPOINT_URL) points it at another endpoint. It needs ec2:DescribeInstances and
ec2:DescribeInstanceTypes. Exit 0 on success, 2 with one `error:` line a person can act on.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llm.errors import UsageError, exit_on_usage_error

# the codes EC2 (and moto) answer when it cannot tell who is asking
_REFUSED_CREDENTIALS = frozenset(
    {"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
     "ExpiredToken", "RequestExpired", "InvalidToken"}
)  # fmt: skip
_DENIED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})


@dataclass(frozen=True)
class Instance:
    instance_id: str
    instance_type: str
    address: str | None  # private IPv4
    launch_time: datetime


def parse_tags(texts: list[str]) -> dict[str, str]:
    """`KEY=VALUE` each (the value may hold '=' or be empty); every key once."""
    tags: dict[str, str] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--tag {text!r} is not KEY=VALUE; give e.g. --tag Cluster=mine")
        if key in tags:
            raise UsageError(f"--tag {key} is given twice; give each tag key once (all must match)")
        tags[key] = value
    return tags


class Ec2:
    """The two read-only calls this needs, with every boto3 failure turned into one UsageError."""

    def __init__(self, *, region: str | None, profile: str | None) -> None:
        import boto3
        from botocore.config import Config

        try:
            session = boto3.session.Session(profile_name=profile, region_name=region)
        except Exception as err:  # ProfileNotFound and friends
            named = f"--profile {profile}" if profile else f"AWS_PROFILE={os.environ.get('AWS_PROFILE', '')}"
            raise UsageError(f"{named}: {err}; give a profile in ~/.aws/config") from None
        self.region = session.region_name
        if not self.region:
            raise UsageError(
                "no AWS region; pass --region (e.g. us-east-1), set AWS_REGION, or give the profile one"
            )
        self.known_regions = {
            r for p in session.get_available_partitions() for r in session.get_available_regions("ec2", p)
        }
        endpoint = os.environ.get("LLM_EC2_ENDPOINT_URL") or None  # else botocore reads AWS_ENDPOINT_URL
        config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10, read_timeout=30)
        try:
            self.client = session.client("ec2", endpoint_url=endpoint, config=config)
        except Exception as err:  # InvalidRegionError: a name botocore cannot even build a URL from
            raise UsageError(f"region {self.region!r}: {err}; pass --region like us-east-1") from None
        self.endpoint = self.client.meta.endpoint_url

    @contextmanager
    def _explained(self, action: str) -> Iterator[None]:
        from botocore import exceptions as bx

        where = f"EC2 at {self.endpoint} (region {self.region})"
        try:
            yield
        except bx.NoCredentialsError:
            raise UsageError(
                f"cannot call ec2:{action}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE / --profile, or run where an instance role "
                "provides them"
            ) from None
        except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError) as err:
            hint = (
                f"{self.region!r} is not an EC2 region this botocore knows; check --region (e.g. us-east-1)"
                if self.region not in self.known_regions
                else "check the network, --region and LLM_EC2_ENDPOINT_URL / AWS_ENDPOINT_URL"
            )
            raise UsageError(f"cannot reach {where} ({type(err).__name__}); {hint}") from None
        except bx.ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in _REFUSED_CREDENTIALS:
                raise UsageError(
                    f"{where} refused the credentials ({code}); check AWS_ACCESS_KEY_ID / "
                    f"AWS_SECRET_ACCESS_KEY or the profile, and that {self.region} is enabled for the account"
                ) from None
            if code in _DENIED:
                raise UsageError(
                    f"{where} denied ec2:{action} ({code}); allow ec2:DescribeInstances and "
                    "ec2:DescribeInstanceTypes to this identity (see docs/multinode.md)"
                ) from None
            raise UsageError(f"ec2:{action} failed at {where}: {str(err).splitlines()[0][:300]}") from None
        except bx.BotoCoreError as err:
            raise UsageError(f"ec2:{action} failed at {where}: {err}") from None

    def running_instances(self, tags: dict[str, str]) -> list[Instance]:
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
        filters.append({"Name": "instance-state-name", "Values": ["running"]})
        found: list[Instance] = []
        with self._explained("DescribeInstances"):
            for page in self.client.get_paginator("describe_instances").paginate(Filters=filters):
                for reservation in page.get("Reservations", []):
                    for raw in reservation.get("Instances", []):
                        found.append(_instance(raw))
        return found

    def gpu_counts(self, instance_types: set[str]) -> dict[str, int]:
        """GPUs per type (GpuInfo.Gpus[].Count summed); 0 for a type without GpuInfo or unknown to EC2."""
        counts = dict.fromkeys(instance_types, 0)
        names = sorted(instance_types)
        paginator = self.client.get_paginator("describe_instance_types")
        with self._explained("DescribeInstanceTypes"):
            for start in range(0, len(names), 100):  # the API takes at most 100 names a call
                for page in paginator.paginate(InstanceTypes=names[start : start + 100]):
                    for info in page.get("InstanceTypes", []):
                        gpus = info.get("GpuInfo", {}).get("Gpus", [])
                        counts[info["InstanceType"]] = sum(int(g.get("Count", 0)) for g in gpus)
        return counts


def _instance(raw: dict[str, Any]) -> Instance:
    return Instance(
        instance_id=raw["InstanceId"],
        instance_type=raw["InstanceType"],
        address=raw.get("PrivateIpAddress") or None,
        launch_time=raw["LaunchTime"],
    )


def hostfile_hosts(
    instances: list[Instance], gpus: dict[str, int], *, slots: int | None
) -> list[tuple[Instance, int]]:
    """Each addressed instance with its slots, rank 0's first; instances without an address are left
    out with a notice on stderr."""
    hosts: list[tuple[Instance, int]] = []
    no_gpus: dict[str, list[str]] = {}
    for instance in sorted(instances, key=lambda i: (i.launch_time, i.instance_id)):
        if instance.address is None:
            print(
                f"notice: {instance.instance_id} ({instance.instance_type}) has no private IPv4 address; "
                "left out",
                file=sys.stderr,
            )
            continue
        count = slots or gpus.get(instance.instance_type, 0)
        if count < 1:
            no_gpus.setdefault(instance.instance_type, []).append(instance.instance_id)
        hosts.append((instance, count))
    if no_gpus:
        named = "; ".join(f"{kind} (instances {', '.join(ids)})" for kind, ids in no_gpus.items())
        raise UsageError(
            f"EC2 reports no GPUs for {named}; pass --slots N for the ranks each node runs, "
            "or tag only GPU instances"
        )
    return hosts


def hostfile(args: argparse.Namespace) -> str:
    tags = parse_tags(args.tag)
    ec2 = Ec2(region=args.region or os.environ.get("AWS_REGION") or None, profile=args.profile)
    instances = ec2.running_instances(tags)
    wanted = " ".join(f"{k}={v}" for k, v in tags.items())
    if not instances:
        raise UsageError(
            f"no running EC2 instances tagged {wanted} in {ec2.region}; check the tags (all must match), "
            "--region, and that the instances are running"
        )
    gpus = {} if args.slots else ec2.gpu_counts({i.instance_type for i in instances})
    hosts = hostfile_hosts(instances, gpus, slots=args.slots)
    if not hosts:
        raise UsageError(f"none of the {len(instances)} instances tagged {wanted} has a private IPv4 address")
    for instance, count in hosts:
        print(
            f"{instance.address} slots={count}: {instance.instance_id} ({instance.instance_type})",
            file=sys.stderr,
        )
    lines = [f"# llm.cloud hostfile: {len(hosts)} running EC2 instances tagged {wanted} in {ec2.region}"]
    lines += [f"{instance.address} slots={count}" for instance, count in hosts]
    return "\n".join(lines) + "\n"


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llm.cloud", description="Cloud helpers for multi-node runs."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub = commands.add_parser(
        "hostfile",
        help="print a DeepSpeed hostfile of the running EC2 instances with the given tags",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument(
        "--tag", action="append", required=True, metavar="KEY=VALUE",
        help="an instance tag to match; repeat it: an instance must carry all of them",
    )  # fmt: skip
    sub.add_argument(
        "--region", help="the instances' region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's)"
    )
    sub.add_argument(
        "--profile", help="a profile in ~/.aws/config (default: AWS_PROFILE, else the standard chain)"
    )
    sub.add_argument(
        "--slots", type=_positive, metavar="N",
        help="ranks per node for every instance (default: the instance type's GPU count)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    text = exit_on_usage_error(lambda: hostfile(args))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
