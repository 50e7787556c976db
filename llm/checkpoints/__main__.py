"""`python -m llm.checkpoints list|pull|push|prune|share`: a run's checkpoints at a checkpoint URI.

list  s3://bucket/runs/RUN                      committed checkpoints, LATEST marked
pull  s3://bucket/runs/RUN[@STEP] RUN_DIR       one checkpoint (LATEST by default) and the run's files,
                                                verified, into RUN_DIR (generate, export, --resume)
push  RUN_DIR[/checkpoints/step_N] s3://...     upload a local checkpoint with the commit protocol
prune s3://bucket/runs/RUN --keep-last N        delete all but the newest N (LATEST always kept)
share s3://bucket/runs/RUN[@STEP] [--expires S] export the weights (llm.export's files) beside the
                                                checkpoint and print presigned URLs valid S seconds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from llm.checkpoints.remote import (
    Committed,
    RemoteCheckpoints,
    attempt_prefix,
    describe_committed,
    new_attempt_id,
)
from llm.errors import UsageError, exit_on_usage_error
from llm.storage.s3 import S3Storage
from llm.storage.uri import S3Uri, parse_s3_uri

MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4's limit for a presigned URL


def _remote(text: str, *, allow_step: bool = False) -> tuple[RemoteCheckpoints, int | None]:
    uri = parse_s3_uri(text, what="checkpoint URI", allow_version=allow_step)
    step = None
    if uri.version is not None:
        if not uri.version.isdigit():
            raise UsageError(f"{text}: after '@' give a step number (see `python -m llm.checkpoints list`)")
        step = int(uri.version)
    storage = S3Storage(S3Uri(uri.bucket, uri.prefix))
    storage.check_bucket()
    return RemoteCheckpoints(storage), step


def cmd_list(args: argparse.Namespace) -> int:
    remote, _ = _remote(args.uri)
    rows = describe_committed(remote)
    if not rows:
        print(f"{remote.describe()}: no committed checkpoint")
        return 0
    print(f"{'':2}{'step':>8}  {'created (UTC)':19}  {'size':>10}  {'files':>5}  {'ranks':>5}  prefix")
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(row["created"])))  # type: ignore[arg-type]
        mb = f"{int(row['bytes']) / 1e6:.1f} MB"  # type: ignore[call-overload]
        mark = "* " if row["latest"] else "  "
        sizes = f"{mb:>10}  {row['files']:>5}  {row['world_size']:>5}"
        print(f"{mark}{row['step']:>8}  {created}  {sizes}  {row['prefix']}")
    unfinished = len(remote.attempts()) - len(rows)
    if unfinished:
        print(f"({unfinished} unfinished save attempt(s) not listed: never loaded, removed by prune)")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    remote, step = _remote(args.uri, allow_step=True)
    found = remote.resolve(step)
    run_dir: Path = args.run_dir
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    folder = remote.pull(found, run_dir / "checkpoints")
    names = remote.pull_run_files(run_dir)
    print(f"pulled step {found.step} into {folder} (verified); run files: {', '.join(names) or 'none'}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from llm.checkpoints.catalogue import CheckpointCatalogue, resolve_checkpoint
    from llm.train.uploader import CheckpointUploader, UploadJob

    folder = resolve_checkpoint(args.checkpoint)
    remote, _ = _remote(args.uri)
    manifest = CheckpointCatalogue.local(folder.parent).manifest(folder.name)
    uploader = CheckpointUploader(remote, keep_last=args.keep_last, tries=args.tries)
    uploader.submit(
        UploadJob(
            tag=folder.name,
            step=manifest.step,
            prefix=attempt_prefix(manifest.step, new_attempt_id()),
            node=0,
            nodes=1,
            names=sorted(manifest.files),
            folder=folder,
            commit=True,
        )
    )
    run_dir = folder.parent.parent
    outcome = uploader.drain()[-1]
    if outcome.ok:
        remote.push_run_files(run_dir, ["run.json", "tokenizer.json"])
    return 0 if outcome.ok else 1


def cmd_prune(args: argparse.Namespace) -> int:
    remote, _ = _remote(args.uri)
    removed = remote.prune(keep_last=args.keep_last)
    print(f"removed {len(removed)} checkpoint attempt(s) from {remote.describe()}")
    for prefix in removed:
        print(f"  {prefix}")
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    from llm.checkpoints.trained import load_trained
    from llm.export import CONFIG, TOKENIZER, WEIGHTS, export_trained

    if not 1 <= args.expires <= MAX_PRESIGN_S:
        raise UsageError(f"--expires {args.expires}: give 1 to {MAX_PRESIGN_S} seconds (7 days, S3's limit)")
    remote, step = _remote(args.uri, allow_step=True)
    found: Committed = remote.resolve(step)
    export = f"exports/{found.prefix.rsplit('/', 1)[1]}"
    names = (WEIGHTS, CONFIG, TOKENIZER)
    if not all(remote.storage.exists(f"{export}/{name}") for name in names):
        with tempfile.TemporaryDirectory(prefix="llm-share-") as tmp:
            run_dir = Path(tmp) / "run"
            (run_dir / "checkpoints").mkdir(parents=True)
            remote.pull(found, run_dir / "checkpoints")
            if "run.json" not in remote.pull_run_files(run_dir):
                raise UsageError(
                    f"{remote.describe()}: no run/run.json beside the checkpoints; cannot export"
                )
            out = Path(tmp) / "export"
            export_trained(load_trained(run_dir), out)
            for name in names:
                remote.storage.upload_file(f"{export}/{name}", out / name)
    hours = args.expires / 3600
    print(f"step {found.step}, exported to {remote.describe(export)}; links valid for {hours:g} h:")
    for name in names:
        print(f"  {name}: {remote.storage.presign_get(f'{export}/{name}', expires_s=args.expires)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llm.checkpoints",
        description="A run's checkpoints at a checkpoint URI (s3://bucket/runs/RUN). Credentials come from "
        "boto3's chain (AWS_* variables, a profile, an instance role); the endpoint from LLM_S3_ENDPOINT_URL "
        "or AWS_ENDPOINT_URL. See docs/aws.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="committed checkpoints, LATEST marked with *")
    p.add_argument("uri", help="s3://bucket/runs/RUN")
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("pull", help="download and verify one checkpoint and the run's files")
    p.add_argument("uri", help="s3://bucket/runs/RUN (LATEST) or s3://bucket/runs/RUN@STEP")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="where to put run.json and checkpoints/")
    p.set_defaults(fn=cmd_pull)
    p = sub.add_parser("push", help="upload a local checkpoint (a run's newest complete one by default)")
    p.add_argument("checkpoint", type=Path, metavar="RUN_DIR", help="a run directory or a checkpoint folder")
    p.add_argument("uri", help="s3://bucket/runs/RUN")
    p.add_argument("--keep-last", type=int, default=3, help="committed checkpoints kept there (default 3)")
    p.add_argument("--tries", type=int, default=None, help="upload attempts before giving up (default 3)")
    p.set_defaults(fn=cmd_push)
    p = sub.add_parser("prune", help="delete all but the newest N committed checkpoints and dead attempts")
    p.add_argument("uri", help="s3://bucket/runs/RUN")
    p.add_argument("--keep-last", type=int, required=True, help="committed checkpoints to keep (>= 1)")
    p.set_defaults(fn=cmd_prune)
    p = sub.add_parser("share", help="export the weights and print presigned URLs to download them")
    p.add_argument("uri", help="s3://bucket/runs/RUN (LATEST) or s3://bucket/runs/RUN@STEP")
    p.add_argument("--expires", type=int, default=3600, help="seconds the links stay valid (default 3600)")
    p.set_defaults(fn=cmd_share)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "keep_last", 1) < 1:
        print("error: --keep-last must be at least 1", file=sys.stderr)
        return 2
    return int(exit_on_usage_error(lambda: args.fn(args)))


if __name__ == "__main__":
    sys.exit(main())
