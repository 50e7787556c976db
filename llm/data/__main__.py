"""Versioned datasets in S3: `python -m llm.data push|pull|versions ...`.

    push DATA_DIR s3://BUCKET/datasets/NAME             upload a folder as a new version
    pull s3://BUCKET/datasets/NAME[@VERSION] DIR        download the newest (or that) version, verified
    versions s3://BUCKET/datasets/NAME                  list the versions, oldest first

DATA_DIR is a prepared dataset (data/cache/<fingerprint>, as training writes it) or any folder of
text files; a raw text version is prepared on pull (--data-cache, --vocab-size, --val-fraction).
The server and credentials come from boto3's chain and LLM_S3_* (see docs/aws.md); exit code 2 and
one line on any problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from llm.config import DataConfig
from llm.errors import UsageError, exit_on_usage_error

DATA_FIELDS = DataConfig.model_fields


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llm.data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Progress goes to stderr; --no-progress turns it off.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    push = commands.add_parser(
        "push",
        help="upload a prepared dataset or a folder of text as a new version",
        description="Upload DATA_DIR as a new version of the dataset at URI. A prepared folder "
        "(meta.json, tokenizer.json, train.bin, val.bin) is pushed as 'prepared' with its token counts "
        "and tokenizer hash; any other folder's text files (hidden and binary files skipped) as 'raw'. "
        "The version's manifest is written last: until then no one sees the version.",
    )
    push.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="a prepared dataset or a text folder")
    push.add_argument("uri", metavar="URI", help="s3://BUCKET/datasets/NAME")

    pull = commands.add_parser(
        "pull",
        help="download a version, verify every sha256, prepare it if it is raw text",
        description="Download URI's @VERSION (default: the newest) into DIR, checking every file's "
        "sha256. DIR appears only once complete; a DIR that already holds a verified copy of the "
        "version is left as it is. A raw text version is then prepared into --data-cache, and the "
        "prepared folder is printed.",
    )
    pull.add_argument("uri", metavar="URI", help="s3://BUCKET/datasets/NAME[@VERSION]")
    pull.add_argument("dest", type=Path, metavar="DIR", help="folder to download into (new, empty or a pull)")
    for flag, name, metavar in (("--data-cache", "data_cache", "PATH"), ("--vocab-size", "vocab_size", "N")):
        field = DATA_FIELDS[name]
        pull.add_argument(
            flag, type=type(field.default), default=field.default, metavar=metavar,
            help=f"raw versions: {field.description} (default: {field.default})",
        )  # fmt: skip
    field = DATA_FIELDS["val_fraction"]
    pull.add_argument(
        "--val-fraction", type=float, default=field.default, metavar="F",
        help=f"raw versions: {field.description} (default: {field.default})",
    )  # fmt: skip

    listing = commands.add_parser(
        "versions",
        help="list the versions: date, size, tokens, tokenizer hash, kind, parent",
        description="List the complete versions of the dataset at URI, oldest first.",
    )
    listing.add_argument("uri", metavar="URI", help="s3://BUCKET/datasets/NAME")
    for sub in (push, pull):
        sub.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _tokens(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n:,}"


def cmd_push(args: argparse.Namespace) -> None:
    from llm.data import remote

    version = remote.push(args.data_dir, args.uri, progress=args.progress)
    m = next(v for v in remote.versions(args.uri) if v.version == version)
    tokens = f", {_tokens(m.total_tokens)} tokens" if m.tokens else ""
    print(
        f"pushed {args.data_dir} as {args.uri.rstrip('/')}@{version} ({m.kind}, {len(m.files)} files, "
        f"{_mb(m.total_bytes)}{tokens}, parent {m.parent or 'none'})"
    )


def cmd_pull(args: argparse.Namespace) -> None:
    from llm.data import remote

    try:
        data = DataConfig(
            data=None, data_cache=args.data_cache, vocab_size=args.vocab_size, val_fraction=args.val_fraction
        )
    except ValidationError as err:
        first = err.errors()[0]
        raise UsageError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    pulled = remote.pull(args.uri, args.dest, data=data, progress=args.progress)
    m = pulled.manifest
    what = f"{len(m.files)} files, {_mb(m.total_bytes)}, every sha256 verified"
    if pulled.downloaded:
        print(f"pulled {pulled.uri} into {pulled.folder} ({what})")
    else:
        print(f"{pulled.folder} already holds {pulled.uri} (verified when pulled): nothing downloaded")
    if m.kind == "raw":
        print(f"prepared the text into {pulled.path}")
    print(pulled.path)


def cmd_versions(args: argparse.Namespace) -> None:
    from llm.data import remote

    found = remote.versions(args.uri)
    if not found:
        print(f"{args.uri}: no versions yet", file=sys.stderr)
        return
    header = ("VERSION", "DATE (UTC)", "SIZE", "TOKENS", "TOKENIZER", "KIND", "PARENT")
    rows = [header] + [
        (
            m.version,
            m.created.replace("T", " ").removesuffix("+00:00"),
            _mb(m.total_bytes),
            _tokens(m.total_tokens),
            (m.tokenizer_sha256 or "-")[:12],
            m.kind,
            m.parent or "-",
        )
        for m in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"push": cmd_push, "pull": cmd_pull, "versions": cmd_versions}[args.command]
    try:
        exit_on_usage_error(lambda: command(args))
    except KeyboardInterrupt:
        print("interrupted; nothing half-done was kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
