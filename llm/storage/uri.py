"""`s3://bucket/prefix[@version]`: what the flags and CLIs accept as a remote location."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llm.errors import UsageError

S3_SCHEME = "s3://"
# S3's rules for bucket names: 3-63 characters, lower case, digits, dots and hyphens
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_s3_uri(text: str | None) -> bool:
    return bool(text) and str(text).startswith(S3_SCHEME)


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    prefix: str  # no leading or trailing '/'; "" is the bucket's root
    version: str | None = None  # NAME@VERSION: a dataset or checkpoint version

    def __str__(self) -> str:
        base = f"{S3_SCHEME}{self.bucket}/{self.prefix}".rstrip("/")
        return f"{base}@{self.version}" if self.version else base

    def unversioned(self) -> S3Uri:
        return S3Uri(self.bucket, self.prefix)

    def join(self, key: str) -> str:
        """The object key of `key` under this prefix."""
        key = key.strip("/")
        return f"{self.prefix}/{key}" if self.prefix and key else self.prefix or key


def parse_s3_uri(text: str, *, what: str, allow_version: bool = False) -> S3Uri:
    """Parse `s3://bucket/prefix[@version]`, or one UsageError naming `what` and the expected form."""
    form = f"s3://BUCKET/PREFIX{'[@VERSION]' if allow_version else ''}"
    if not is_s3_uri(text):
        raise UsageError(f"{what} {text!r}: not an S3 URI; give {form}")
    rest = text[len(S3_SCHEME) :]
    version = None
    if "@" in rest:
        if not allow_version:
            raise UsageError(f"{what} {text!r}: '@' is not allowed here; give {form}")
        rest, version = rest.rsplit("@", 1)
        if not re.fullmatch(r"[A-Za-z0-9._-]+", version):
            raise UsageError(f"{what} {text!r}: the version after '@' is empty or malformed; give {form}")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise UsageError(
            f"{what} {text!r}: {bucket!r} is not a valid bucket name (3-63 lower-case letters, digits, "
            f"dots, hyphens); give {form}"
        )
    prefix = prefix.strip("/")
    if "//" in prefix:
        raise UsageError(f"{what} {text!r}: empty path segment ('//'); give {form}")
    return S3Uri(bucket=bucket, prefix=prefix, version=version)
