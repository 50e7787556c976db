"""Checkpoint-sized transfers to an S3 server: our storage code against `aws s3 cp` of the same file.

    .venv/bin/python benchmarks/storage.py [--size-mb 1024] [--rounds 3] [--endpoint URL [--bucket NAME]]
                                           [--also MBxN ...]

One file of `--size-mb` MiB of random bytes goes up to and comes back from an S3 server, in rounds that
interleave the tools so that a noisy machine slows both alike: ours then aws in the first round, aws
then ours in the second, and so on (A B, B A, A B), so that neither always follows the same leg:

- ours, upload: `S3Storage.upload_file` (boto3's transfer manager: parts of `multipart_mb` MiB,
  `concurrency` at once; then the HEAD that checks the object landed whole);
- aws, upload: `aws s3 cp FILE s3://...` (its own defaults: 8 MiB parts, 10 at once), given `--sse X`
  where the server reports our upload encrypted with X, so that both ask for the same;
- ours, download: `S3Storage.download_file`; aws, download: `aws s3 cp s3://... FILE`; both fetch the
  same object, uploaded once before the rounds;
- ours, download + verification: `llm.storage.transfer.download_files`, as the trainer pulls a dataset or
  a checkpoint (download, then size and sha256 checked against the manifest's record). `aws s3 cp`
  hashes nothing, so this is reported beside the plain download, not instead of it.

Every leg is wall clock from the start of the work to the file being whole, the client included: ours
builds its S3Storage (a boto3 client) inside the timed span, and `aws` starts a Python process (its bare
start-up plus one request, `aws s3 ls`, is timed once and reported). Rates are MB/s (10^6 bytes a
second); each figure is the median over rounds, and each ratio is ours ÷ aws of those medians
(goal: >= 1.0 for upload and for download). Downloads are written to local files and removed after
each leg; nothing is fsynced by either tool.

Server: `moto_server` started here on loopback (the tests' server), with throwaway credentials. With
`--endpoint URL` (radosgw, MinIO, AWS itself), credentials come from AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY in the environment; the run writes under a new prefix of `--bucket NAME` and
deletes its keys after, or creates a bucket of its own and deletes that too. Both tools read the same
environment; AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE point at /dev/null for both, so no ~/.aws
setting (aws-cli's own `s3` tuning included) tips the comparison. LLM_S3_* variables are ignored: ours
runs with S3Settings' defaults, and `--also 16x8` measures multipart_mb=16, concurrency=8 as well, in
the same rounds.

Without `aws` on PATH the aws-cli legs are skipped (said in the output) and there are no ratios.
Printed and written to OUT/storage.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llm.storage.s3 import MiB, S3Settings, S3Storage  # noqa: E402
from llm.storage.transfer import RemoteFile, download_files  # noqa: E402
from llm.storage.uri import S3Uri  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
MB = 1e6  # rates are in MB/s
GOAL = 1.0  # ours ÷ aws, upload and download
DIRECTIONS = ("upload", "download", "download_verified")
# moto accepts any credentials: these only exist for the server started here
LOCAL_KEY_ID, LOCAL_SECRET = "BENCHMARKLOCALKEY001", "benchmark-local-secret"


# --- the server and the environment both tools see


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """`moto_server` on loopback as a child process, as tests/s3_server.py starts it; its URL."""
    port = free_port()
    binary = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"moto_server exited with {proc.returncode} before it listened")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"moto_server did not listen on 127.0.0.1:{port} within 30 s") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def set_environment(*, local: bool) -> None:
    """This process's environment, which `aws` inherits: the same credentials and no config files."""
    for name in [k for k in os.environ if k.startswith("LLM_S3_")] + ["AWS_PROFILE", "AWS_ENDPOINT_URL"]:
        os.environ.pop(name, None)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if local:
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = LOCAL_KEY_ID, LOCAL_SECRET
        os.environ.pop("AWS_SESSION_TOKEN", None)
    elif not (os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY")):
        raise SystemExit(
            "--endpoint: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (both tools read them from the "
            "environment; profiles are not used, so that aws-cli's ~/.aws settings cannot differ from ours)"
        )


# --- the tools


@dataclass(frozen=True)
class Tool:
    """Ours (S3Storage) or `aws s3 cp`, with a part size and concurrency (None: aws-cli's own defaults)."""

    kind: str  # "ours" or "aws"
    multipart_mb: int | None = None
    concurrency: int | None = None

    @property
    def name(self) -> str:
        return self.kind + (f"_{self.multipart_mb}x{self.concurrency}" if self.multipart_mb else "")

    @property
    def label(self) -> str:
        if self.kind == "ours":
            return f"ours: S3Storage, {self.multipart_mb} MiB parts × {self.concurrency}"
        if self.multipart_mb is None:
            return "aws s3 cp, its defaults (8 MiB parts × 10)"
        return f"aws s3 cp, {self.multipart_mb} MiB parts × {self.concurrency}"

    @property
    def short(self) -> str:
        if self.multipart_mb is None:
            return f"{self.kind} (its defaults)"
        return f"{self.kind} {self.multipart_mb}×{self.concurrency}"

    def storage(self, endpoint: str, bucket: str) -> S3Storage:
        assert self.multipart_mb is not None and self.concurrency is not None
        settings = S3Settings(
            endpoint_url=endpoint, multipart_mb=self.multipart_mb, concurrency=self.concurrency
        )  # type: ignore[call-arg]  # the other fields keep their defaults
        return S3Storage(S3Uri(bucket, ""), settings)

    def aws_config(self, folder: Path) -> str:
        """AWS_CONFIG_FILE for this aws-cli: only its transfer settings (os.devnull: its defaults)."""
        if self.multipart_mb is None:
            return os.devnull
        path = folder / f"{self.name}.config"
        path.write_text(
            "[default]\ns3 =\n"  # aws-cli reads MB as MiB
            f"  multipart_threshold = {self.multipart_mb}MB\n  multipart_chunksize = {self.multipart_mb}MB\n"
            f"  max_concurrent_requests = {self.concurrency}\n"
        )
        return str(path)


def parse_settings(kind: str) -> Callable[[str], Tool]:
    def parse(text: str) -> Tool:
        found = re.fullmatch(r"(\d+)x(\d+)", text)
        if not found or int(found.group(1)) < 5 or int(found.group(2)) < 1:
            raise argparse.ArgumentTypeError(
                f"{text!r}: give PART_MIBxCONCURRENCY, e.g. 16x8 (parts >= 5 MiB)"
            )
        return Tool(kind, int(found.group(1)), int(found.group(2)))

    return parse


def timed(work: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    work(*args)
    return time.perf_counter() - start


def aws(*args: str, endpoint: str, config: str = os.devnull) -> None:
    quiet = ["--only-show-errors"] if args[0] == "cp" else []  # no progress bar to draw
    cmd = ["aws", "s3", *args, "--endpoint-url", endpoint, *quiet]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "AWS_CONFIG_FILE": config})
    if done.returncode != 0:
        raise SystemExit(f"aws s3 {args[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def aws_version() -> str | None:
    if shutil.which("aws") is None:
        return None
    done = subprocess.run(["aws", "--version"], capture_output=True, text=True)
    return (done.stdout or done.stderr).strip().split()[0] if done.returncode == 0 else None


def random_file(path: Path, size: int) -> str:
    """`size` random bytes at `path`, written 64 MiB at a time; their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        for start in range(0, size, 64 * MiB):
            block = os.urandom(min(64 * MiB, size - start))
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- the rounds


@dataclass
class Bench:
    """One run's fixed parts: where the server is, the file, and the object every download fetches."""

    endpoint: str
    bucket: str
    tmp: Path
    source: Path
    size: int
    prefix: str  # this run's keys, all deleted at the end
    fetched: RemoteFile  # f"{prefix}/download.bin"
    sse: str | None  # what our upload's object reports; aws is asked for the same

    @property
    def target(self) -> Path:
        return self.tmp / "down" / "download.bin"

    def clean(self, admin: S3Storage, key: str | None = None) -> None:
        shutil.rmtree(self.tmp / "down", ignore_errors=True)
        if key is not None:  # an uploaded copy goes at once: the server holds no more than two
            admin.delete_keys([key])

    def upload(self, tool: Tool, key: str) -> None:
        if tool.kind == "ours":
            tool.storage(self.endpoint, self.bucket).upload_file(key, self.source)
            return
        sse = ["--sse", self.sse] if self.sse else []
        url = f"s3://{self.bucket}/{key}"
        aws("cp", str(self.source), url, *sse, endpoint=self.endpoint, config=tool.aws_config(self.tmp))

    def download(self, tool: Tool) -> None:
        key = f"{self.prefix}/download.bin"
        if tool.kind == "ours":
            tool.storage(self.endpoint, self.bucket).download_file(key, self.target)
            return
        url = f"s3://{self.bucket}/{key}"
        aws("cp", url, str(self.target), endpoint=self.endpoint, config=tool.aws_config(self.tmp))
        if self.target.stat().st_size != self.size:
            raise SystemExit(f"aws s3 cp downloaded {self.target.stat().st_size} bytes, not {self.size}")

    def download_verified(self, tool: Tool) -> None:
        storage = tool.storage(self.endpoint, self.bucket)
        download_files(storage, self.prefix, {"download.bin": self.fetched}, self.target.parent)


def one_round(
    bench: Bench, admin: S3Storage, tools: list[Tool], seconds: dict[str, dict[str, list[float]]], round_: int
) -> None:
    """Uploads, downloads, then ours again with verification; ours first in even rounds, aws in odd ones."""
    order = tools if round_ % 2 == 0 else tools[::-1]  # A B, B A, A B: neither always goes first
    for tool in order:
        key = f"{bench.prefix}/{tool.name}-{round_}.bin"
        seconds[tool.name]["upload"].append(timed(bench.upload, tool, key))
        bench.clean(admin, key)
    for tool in order:
        seconds[tool.name]["download"].append(timed(bench.download, tool))
        bench.clean(admin)
    for tool in order:
        if tool.kind == "ours":
            seconds[tool.name]["download_verified"].append(timed(bench.download_verified, tool))
            bench.clean(admin)


def measure(args: argparse.Namespace, endpoint: str, bucket: str, tmp: Path) -> dict[str, Any]:
    defaults = S3Settings()  # type: ignore[call-arg]  # LLM_S3_* are gone from the environment by now
    tools = [Tool("ours", defaults.multipart_mb, defaults.concurrency), *args.also]
    if aws_version():
        tools += [Tool("aws"), *args.aws_also]
    size = args.size_mb * MiB
    source = tmp / "checkpoint.bin"
    digest = random_file(source, size)
    admin = tools[0].storage(endpoint, bucket)
    admin.check_bucket()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        uploaded = admin.upload_file(f"{prefix}/download.bin", source)
        head = admin.client.head_object(Bucket=bucket, Key=f"{prefix}/download.bin")
        bench = Bench(
            endpoint=endpoint, bucket=bucket, tmp=tmp, source=source, size=size, prefix=prefix,
            fetched=RemoteFile(sha256=digest, bytes=size, version_id=uploaded.version_id),
            sse=head.get("ServerSideEncryption"),
        )  # fmt: skip
        seconds: dict[str, dict[str, list[float]]] = {t.name: {d: [] for d in DIRECTIONS} for t in tools}
        aws_startup_s = None
        if "aws" in seconds:  # also its warm-up: its files are in the page cache before the first timed leg
            listing = functools.partial(aws, "ls", f"s3://{bucket}/{prefix}/", endpoint=endpoint)
            aws_startup_s = min(timed(listing) for _ in range(2))
        for round_ in range(args.rounds):
            one_round(bench, admin, tools, seconds, round_)
            done = ", ".join(
                f"{n} {size / MB / s['upload'][-1]:,.0f} up / {size / MB / s['download'][-1]:,.0f} down"
                for n, s in seconds.items()
            )
            print(f"round {round_ + 1}: {done} MB/s", flush=True)
    finally:
        admin.delete(prefix)
    return tabulate(tools, seconds, size=size, aws_startup_s=aws_startup_s, sse=bench.sse)


def tabulate(
    tools: list[Tool], seconds: dict[str, dict[str, list[float]]], *, size: int,
    aws_startup_s: float | None, sse: str | None,
) -> dict[str, Any]:  # fmt: skip
    results: dict[str, Any] = {}
    for tool in tools:
        rates = {
            d: [size / MB / s for s in seconds[tool.name][d]] for d in DIRECTIONS if seconds[tool.name][d]
        }
        results[tool.name] = {
            "label": tool.label,
            "short": tool.short,
            "kind": tool.kind,
            "settings": {"multipart_mb": tool.multipart_mb, "concurrency": tool.concurrency},
            "seconds": {d: seconds[tool.name][d] for d in rates},
            "rates_mb_s": rates,
            "median_mb_s": {d: statistics.median(r) for d, r in rates.items()},
        }

    def over(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
        # download + verification is set against aws's plain download: aws does not verify
        return {d: ours[d] / theirs["download" if d == "download_verified" else d] for d in DIRECTIONS}

    for tool in tools:
        if tool.kind == "ours" and "aws" in results:
            ours = results[tool.name]["median_mb_s"]
            results[tool.name]["over_aws"] = over(ours, results["aws"]["median_mb_s"])
            same = Tool("aws", tool.multipart_mb, tool.concurrency).name
            if same in results:
                results[tool.name]["over_aws_same_settings"] = over(ours, results[same]["median_mb_s"])
    return {"tools": results, "order": [t.name for t in tools], "aws_startup_s": aws_startup_s, "sse": sse}


# --- the report


def cells(values: dict[str, float], *, bold: bool, fmt: str) -> str:
    """One table row's cells, in DIRECTIONS order; bold marks the headline (not the verified column)."""
    out = []
    for d in DIRECTIONS:
        if d not in values:
            out.append("—")
            continue
        text = format(values[d], fmt)
        out.append(f"**{text}**" if bold and d != "download_verified" else text)
    return " | ".join(out)


def table(r: dict[str, Any]) -> list[str]:
    """Rates (median MB/s) of every tool, then ours ÷ aws; the default settings' row in bold."""
    tools, default = r["tools"], r["order"][0]
    lines = [
        "| median of rounds | upload | download | download + sha256 check |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in r["order"]:
        row = cells(tools[name]["median_mb_s"], bold=name == default, fmt=",.1f")
        lines.append(f"| {tools[name]['label']}, MB/s | {row} |")
    for name in r["order"]:
        for key, theirs in (("over_aws", "aws"), ("over_aws_same_settings", name.replace("ours", "aws"))):
            if key in tools[name]:
                row = cells(tools[name][key], bold=name == default and key == "over_aws", fmt=".3f")
                lines.append(f"| {tools[name]['short']} ÷ {tools[theirs]['short']} | {row} |")
    return lines


def markdown(r: dict[str, Any]) -> str:
    s, m, tools = r["settings"], r["machine"], r["tools"]
    default = tools[r["order"][0]]
    if "aws" in tools:
        ratio = default["over_aws"]
        met = ratio["upload"] >= GOAL and ratio["download"] >= GOAL
        verdict = (
            f"Goal, ours with S3Settings' defaults ÷ aws s3 cp with its own, >= {GOAL:.1f} for upload and "
            f"for download: **{'met' if met else 'not met'}** (upload {ratio['upload']:.3f}, download "
            f"{ratio['download']:.3f}). `aws`'s own start-up plus one request (`aws s3 ls`), inside each of "
            f"its legs: {r['aws_startup_s']:.2f} s."
        )
    else:
        verdict = "**aws-cli is not on PATH: its legs were skipped, so there are no ratios.**"
    server_note = ""
    if s["server"].startswith("moto_server"):
        server_note = (
            "\nOn moto, downloads reward large parts: moto reads the whole object for every ranged GET (in\n"
            "moto/s3/responses.py the range is cut from `key.value`), so a download costs about parts × the\n"
            "object's size on the server. The download rates (and ratios) here are therefore no guide to S3\n"
            "or radosgw, where a range costs only its own bytes; `--aws-also MBxN` measures aws-cli with\n"
            "our part size, and `--endpoint` another server.\n"
        )
    per_round = [
        f"| {tools[n]['label']} | "
        + " | ".join(
            " / ".join(f"{x:,.0f}" for x in tools[n]["rates_mb_s"].get(d, [])) or "—" for d in DIRECTIONS
        )
        + " |"
        for n in r["order"]
    ]
    aws_cli = m["aws_cli"] or "no aws-cli"
    return f"""# Checkpoint-sized transfers: our S3 code against `aws s3 cp`

Measured {r["date"]} by `{r["command"]}`.

- machine: {m["platform"]}, {m["cpus"]} CPUs, Python {m["python"]}, boto3 {m["boto3"]}, {aws_cli}
- server: {s["server"]}; server-side encryption of our upload as the server reports it (aws s3 cp is
  given the same): {r["sse"] or "none"}
- one file of {s["size_mb"]:,} MiB of random bytes, {s["rounds"]} interleaved round(s)
- load average (1 min): {r["load_before"][0]} before, {r["load_after"][0]} after

{chr(10).join(table(r))}

{verdict}
{server_note}
The download + sha256 column is `download_files` as the trainer pulls (download, then size and sha256
checked against the record); its ratio is set against aws's plain download, which checks nothing.
Each leg is wall clock from its start to the file being whole, the client included (ours builds its
boto3 client inside the span; `aws` starts a process). MB/s = 10^6 bytes a second.

Per round (MB/s, rounds in order; the tools went in the table's order in rounds 1, 3, ..., in reverse
in rounds 2, 4, ...):

| | upload | download | download + sha256 check |
| --- | ---: | ---: | ---: |
{chr(10).join(per_round)}
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="the file's size in MiB (2^20 bytes)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians")
    parser.add_argument(
        "--endpoint", help="an S3 server to use instead of a moto server started here (credentials: env)"
    )
    parser.add_argument(
        "--bucket", help="an existing bucket at --endpoint (default: a new llm-bench-* bucket, deleted after)"
    )
    parser.add_argument(
        "--also",
        type=parse_settings("ours"),
        nargs="*",
        default=[],
        metavar="MBxN",
        help="more S3Settings to measure in the same rounds: multipart_mb x concurrency, e.g. 16x8",
    )
    parser.add_argument(
        "--aws-also",
        type=parse_settings("aws"),
        nargs="*",
        default=[],
        metavar="MBxN",
        help="aws s3 cp with these part sizes (MiB) x concurrency too (an aws config file with only "
        "multipart_threshold, multipart_chunksize and max_concurrent_requests)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for storage.{json,md}")
    args = parser.parse_args(argv)
    if args.size_mb < 1 or args.rounds < 1:
        parser.error("--size-mb and --rounds must be at least 1")
    if args.bucket and not args.endpoint:
        parser.error("--bucket goes with --endpoint (the local server gets a new bucket)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = " ".join(
        [".venv/bin/python", "benchmarks/storage.py", *(sys.argv[1:] if argv is None else argv)]
    )
    set_environment(local=args.endpoint is None)
    load_before = load()
    if shutil.which("aws") is None:
        print("aws-cli not found on PATH: the aws s3 cp legs are skipped (no ratios)", flush=True)
    bucket = args.bucket or f"llm-bench-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint or stack.enter_context(moto_server())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llm-bench-storage-")))
        client = Tool("ours", 64, 1).storage(endpoint, bucket).client  # creates and deletes the bucket only
        if not args.bucket:
            client.create_bucket(Bucket=bucket)
        measured = measure(args, endpoint, bucket, tmp)  # deletes what it wrote, failed or not
        if not args.bucket:
            client.delete_bucket(Bucket=bucket)
    result: dict[str, Any] = {
        "what": "upload and download of one checkpoint-sized file: our S3Storage against aws s3 cp",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": command,
        "machine": {
            "platform": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "boto3": __import__("boto3").__version__,
            "aws_cli": aws_version(),
        },
        "settings": {
            "size_mb": args.size_mb,
            "bytes": args.size_mb * MiB,
            "rounds": args.rounds,
            "server": args.endpoint or f"moto_server {__import__('moto').__version__} on loopback",
        },
        "load_before": load_before,
        "load_after": load(),
        "goal": {"over_aws": GOAL},
        **measured,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "storage.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "storage.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
