"""Storage over S3 or any S3-compatible server, through boto3.

Credentials come only from boto3's own chain (environment, shared profile, instance role); this module
never reads, prints or stores them. Every error a person can act on becomes one S3Error (a UsageError)
that names the endpoint, the bucket and the fix. Large files go through boto3's transfer manager
(multipart, parts in parallel); small records through single PUTs, which can be conditional
(`If-None-Match: *` to create only, `If-Match: <etag>` to compare-and-swap).
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llm.errors import UsageError
from llm.failpoints import armed, failpoint
from llm.storage.base import Storage
from llm.storage.uri import S3Uri

MiB = 1 << 20


class S3Settings(BaseSettings):
    """How to reach the server: LLM_S3_* variables (AWS_ENDPOINT_URL and AWS_PROFILE work too)."""

    model_config = SettingsConfigDict(env_prefix="LLM_S3_", frozen=True, extra="forbid")

    endpoint_url: str | None = Field(
        None, description="an S3-compatible endpoint (default: AWS_ENDPOINT_URL, else AWS's own)"
    )
    region: str | None = Field(
        None, description="the bucket's region (default: the profile's, else us-east-1)"
    )
    profile: str | None = Field(None, description="a profile in ~/.aws/config (default: AWS_PROFILE)")
    sse: Literal["auto", "aws:kms", "AES256", "none"] = Field(
        "auto",
        description="server-side encryption of what is written: auto (AES256 where the server has it), "
        "aws:kms (with kms_key_id), AES256, or none",
    )
    kms_key_id: str | None = Field(None, description="the KMS key for sse=aws:kms")
    retry_mode: Literal["standard", "adaptive"] = Field("standard", description="boto3's retry mode")
    max_attempts: int = Field(5, ge=1, description="attempts per request, the first included")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to open a connection")
    read_timeout: float = Field(60.0, gt=0, description="seconds to wait for a response")
    multipart_mb: int = Field(64, ge=5, description="files larger than this go up in parts of this size")
    concurrency: int = Field(8, ge=1, description="parts (and files) transferred at once")
    upload_tries: int = Field(
        3, ge=1, description="tries of a checkpoint's upload before it is reported failed"
    )
    upload_retry_wait: float = Field(
        5.0, ge=0, description="seconds before the n-th retry of an upload, times n"
    )


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    version_id: str | None  # set where the bucket has versioning enabled
    sse: str | None = None  # the encryption the server says it applied (HEAD)


class S3Error(UsageError):
    """A request the server refused or could not answer, said for people (exit 2 at the top level)."""

    def __init__(self, message: str, *, code: str = "", transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient  # the server could not be reached: worth trying again later


class PreconditionFailed(Exception):
    """412: If-None-Match found the object there, or If-Match found another version."""


class ConflictingWrite(Exception):
    """409: another conditional write to the same key was in progress; try again."""


_SSE_UNSUPPORTED = {"NotImplemented", "InvalidArgument", "InvalidRequest", "InvalidEncryptionAlgorithmError"}
_sse_notice_printed: set[str] = set()


def _error_code(err: BaseException) -> str:
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    found = re.search(r"An error occurred \((\w+)\)", str(err))  # boto3 wraps transfer errors in text
    return found.group(1) if found else ""


class S3Storage:
    """Keys are '/'-separated paths under `uri` (bucket and prefix); the Storage protocol and more."""

    def __init__(self, uri: S3Uri, settings: S3Settings | None = None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.uri = uri.unversioned()
        self.settings = settings or S3Settings()  # type: ignore[call-arg]  # every field has a default
        s = self.settings
        try:
            session = boto3.session.Session(profile_name=s.profile, region_name=s.region)
        except Exception as err:  # ProfileNotFound and friends
            raise S3Error(
                f"{uri}: {err}; set LLM_S3_PROFILE or AWS_PROFILE to a profile in ~/.aws/config"
            ) from None
        config = Config(
            region_name=session.region_name or "us-east-1",
            retries={"mode": s.retry_mode, "max_attempts": s.max_attempts},
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            max_pool_connections=max(10, 2 * s.concurrency),
            signature_version="s3v4",
            # path-style URLs for endpoints on an address (loopback, a private server): no bucket DNS
            s3={"addressing_style": "path"} if s.endpoint_url else {},
        )
        self.client = session.client("s3", endpoint_url=s.endpoint_url, config=config)
        self.endpoint = self.client.meta.endpoint_url
        self.transfer = TransferConfig(
            multipart_threshold=s.multipart_mb * MiB,
            multipart_chunksize=s.multipart_mb * MiB,
            max_concurrency=s.concurrency,
            use_threads=True,
        )
        self._sse_lock = threading.Lock()
        self._sse = self._configured_sse()
        if armed():  # the crash tests' "killed between the parts and the multipart completion"
            self.client.meta.events.register(
                "before-call.s3.CompleteMultipartUpload", lambda **_: failpoint("s3.complete_multipart")
            )

    # -- errors ------------------------------------------------------------------------------------
    def _configured_sse(self) -> dict[str, str]:
        s = self.settings
        if s.sse == "none":
            return {}
        if s.sse == "aws:kms":
            if not s.kms_key_id:
                raise S3Error("LLM_S3_SSE=aws:kms needs LLM_S3_KMS_KEY_ID (the key's id or ARN)")
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": s.kms_key_id}
        return {"ServerSideEncryption": "AES256"}

    def _sse_refused(self, err: BaseException) -> bool:
        """In sse=auto, a server without AES256 refuses the header: write without it."""
        if self.settings.sse != "auto" or not self._sse or _error_code(err) not in _SSE_UNSUPPORTED:
            return False
        self._drop_sse()
        return True

    def _check_sse_applied(self, answer: dict[str, Any], key: str) -> None:
        """Some servers accept the header and ignore it (radosgw pacific stores AES256 objects in the
        clear, answering without ServerSideEncryption): in sse=auto stop asking, else refuse."""
        if not self._sse or answer.get("ServerSideEncryption"):
            return
        if self.settings.sse == "auto":
            self._drop_sse()
            return
        raise S3Error(
            f"{self.describe(key)} at {self.endpoint}: the server accepted LLM_S3_SSE={self.settings.sse} "
            "but did not apply it (the object is stored unencrypted); use LLM_S3_SSE=aws:kms with "
            "LLM_S3_KMS_KEY_ID where the server has it, or LLM_S3_SSE=none",
            code="SSENotApplied",
        )

    def _drop_sse(self) -> None:
        with self._sse_lock:
            self._sse = {}
        if self.endpoint not in _sse_notice_printed:
            _sse_notice_printed.add(self.endpoint)
            print(
                f"notice: {self.endpoint} does not offer server-side encryption AES256; objects are "
                "written without it (set LLM_S3_SSE=aws:kms with LLM_S3_KMS_KEY_ID, or LLM_S3_SSE=none "
                "to silence this)",
                file=sys.stderr,
                flush=True,
            )

    def error(self, err: BaseException, *, action: str, key: str = "") -> S3Error:
        """One message a person can act on, for any boto3/botocore failure."""
        from botocore import exceptions as bx

        where = f"{self.describe(key)} at {self.endpoint}"
        code = _error_code(err)
        if code in {"404", "NotFound"} and action == "reach":
            code = "NoSuchBucket"  # HEAD has no body to name the error
        if isinstance(err, bx.NoCredentialsError):
            return S3Error(
                f"cannot {action} {where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an instance role provides them",
                code="NoCredentials",
            )
        unreachable = (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError)
        if isinstance(err, (*unreachable, bx.ConnectionError)):
            return S3Error(
                f"cannot {action} {where}: the server did not answer ({type(err).__name__}) after "
                f"{self.settings.max_attempts} attempts; check the endpoint (LLM_S3_ENDPOINT_URL) and "
                "the network",
                code="Unreachable",
                transient=True,
            )
        fixes = {
            "NoSuchBucket": f"the bucket {self.uri.bucket!r} does not exist; create it or fix the URI",
            "InvalidAccessKeyId": "the access key is not known to this server; check AWS_ACCESS_KEY_ID "
            "or the profile, and the endpoint",
            "SignatureDoesNotMatch": "the secret key does not match the access key (the request's signature "
            "was refused); check AWS_SECRET_ACCESS_KEY or the profile",
            "AccessDenied": "access denied: these credentials lack permission for this action on this "
            "prefix; see docs/aws.md for the policy the trainer needs",
            "InvalidToken": "the session token is invalid or expired; refresh the credentials",
            "ExpiredToken": "the session token has expired; refresh the credentials",
            "KMS.NotFoundException": "the KMS key was not found; check LLM_S3_KMS_KEY_ID",
        }
        message = str(getattr(err, "response", {}).get("Error", {}).get("Message") or "")
        if code == "InvalidAccessKeyId" and "kms" in message.lower():  # radosgw: an unknown KMS key
            code = "KMS.NotFoundException"
        if code in fixes:
            return S3Error(f"cannot {action} {where}: {fixes[code]}", code=code)
        status = getattr(err, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status == 403 or code == "403":
            return S3Error(f"cannot {action} {where}: {fixes['AccessDenied']}", code="AccessDenied")
        transient = status >= 500 or code in {
            "SlowDown",
            "ServiceUnavailable",
            "InternalError",
            "RequestTimeout",
        }
        detail = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        return S3Error(f"cannot {action} {where}: {detail}", code=code, transient=transient)

    def _call(self, action: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as err:
            raise self.error(err, action=action, key=key) from None

    # -- the Storage protocol ----------------------------------------------------------------------
    def describe(self, key: str = "") -> str:
        return f"s3://{self.uri.bucket}/{self.uri.join(key)}".rstrip("/")

    def check_bucket(self) -> None:
        """Fail early and clearly: the bucket must exist and these credentials must reach it."""
        try:
            self._call("reach", "", self.client.head_bucket, Bucket=self.uri.bucket)
        except S3Error as err:
            if err.code != "AccessDenied":
                raise
            # a HEAD's 403 has no body: a GET says whether the key, the signature or a policy refused
            # under the URI's prefix: a policy may allow listing only there
            prefix = f"{self.uri.prefix}/" if self.uri.prefix else ""
            self._call(
                "reach", "", self.client.list_objects_v2, Bucket=self.uri.bucket, Prefix=prefix, MaxKeys=1
            )

    def head(self, key: str, *, version_id: str | None = None) -> ObjectInfo | None:
        from botocore.exceptions import BotoCoreError, ClientError

        args: dict[str, Any] = {"Bucket": self.uri.bucket, "Key": self.uri.join(key)}
        if version_id:
            args["VersionId"] = version_id
        try:
            r = self.client.head_object(**args)
        except ClientError as err:
            if _error_code(err) in {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}:
                return None
            raise self.error(err, action="read", key=key) from None
        except BotoCoreError as err:
            raise self.error(err, action="read", key=key) from None
        return ObjectInfo(
            size=int(r["ContentLength"]),
            etag=r["ETag"],
            version_id=r.get("VersionId"),
            sse=r.get("ServerSideEncryption"),
        )

    def exists(self, key: str) -> bool:
        return self.head(key) is not None or next(self._list(key, recursive=False, limit=1), None) is not None

    def size(self, key: str) -> int | None:
        info = self.head(key)
        return None if info is None else info.size

    def read(self, key: str, *, version_id: str | None = None) -> tuple[bytes, str]:
        """The object's bytes and ETag; FileNotFoundError when there is none."""
        from botocore.exceptions import BotoCoreError, ClientError

        args: dict[str, Any] = {"Bucket": self.uri.bucket, "Key": self.uri.join(key)}
        if version_id:
            args["VersionId"] = version_id
        try:
            r = self.client.get_object(**args)
            return r["Body"].read(), r["ETag"]
        except ClientError as err:
            if _error_code(err) in {"404", "NoSuchKey", "NoSuchVersion"}:
                raise FileNotFoundError(self.describe(key)) from None
            raise self.error(err, action="read", key=key) from None
        except BotoCoreError as err:
            raise self.error(err, action="read", key=key) from None

    def read_bytes(self, key: str) -> bytes:
        return self.read(key)[0]

    def write_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        """One PUT (atomic on S3). `if_none_match`: create only; `if_match`: replace only that ETag."""
        from botocore.exceptions import BotoCoreError, ClientError

        while True:
            args: dict[str, Any] = {
                "Bucket": self.uri.bucket,
                "Key": self.uri.join(key),
                "Body": data,
                **self._sse,
            }
            if if_none_match:
                args["IfNoneMatch"] = "*"
            if if_match is not None:
                args["IfMatch"] = if_match
            try:
                r = self.client.put_object(**args)
            except ClientError as err:
                code = _error_code(err)
                if code in {"PreconditionFailed", "412"}:
                    current = self.head(key) if if_match and if_match.startswith('"') else None
                    if current is not None and current.etag == if_match:
                        # radosgw (pacific) compares the bare ETag and refuses a quoted one that matches:
                        # once more unquoted (AWS and moto take either form; this path needs a real 412)
                        if_match = if_match.strip('"')
                        continue
                    raise PreconditionFailed(self.describe(key)) from None
                if code in {"ConditionalRequestConflict", "409"}:
                    raise ConflictingWrite(self.describe(key)) from None
                if code in {"NoSuchKey", "404"} and if_match is not None:
                    raise PreconditionFailed(self.describe(key)) from None  # nothing there to match
                if self._sse_refused(err):
                    continue
                raise self.error(err, action="write", key=key) from None
            except BotoCoreError as err:
                raise self.error(err, action="write", key=key) from None
            self._check_sse_applied(r, key)
            return ObjectInfo(size=len(data), etag=r["ETag"], version_id=r.get("VersionId"))

    def sha256(self, key: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = hashlib.sha256()
        try:
            body = self.client.get_object(Bucket=self.uri.bucket, Key=self.uri.join(key))["Body"]
            for block in iter(lambda: body.read(MiB), b""):
                digest.update(block)
        except (ClientError, BotoCoreError) as err:
            raise self.error(err, action="read", key=key) from None
        return digest.hexdigest()

    def _list(self, prefix: str, *, recursive: bool, limit: int | None = None) -> Iterator[dict[str, Any]]:
        base = self.uri.join(prefix)
        args: dict[str, Any] = {"Bucket": self.uri.bucket, "Prefix": f"{base}/" if base else ""}
        if not recursive:
            args["Delimiter"] = "/"
        if limit:
            args["PaginationConfig"] = {"MaxItems": limit}
        pages = self.client.get_paginator("list_objects_v2").paginate(**args)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in pages:
                yield from ({"folder": p["Prefix"]} for p in page.get("CommonPrefixes", []))
                yield from page.get("Contents", [])
        except (ClientError, BotoCoreError) as err:
            raise self.error(err, action="list", key=prefix) from None

    def children(self, prefix: str = "") -> list[str]:
        names = []
        for entry in self._list(prefix, recursive=False):
            full = entry.get("folder") or entry["Key"]
            names.append(full.rstrip("/").rsplit("/", 1)[-1])
        return sorted(n for n in names if n)

    def files(self, prefix: str = "") -> dict[str, int]:
        base = self.uri.join(prefix)
        cut = len(base) + 1 if base else 0
        return {e["Key"][cut:]: int(e["Size"]) for e in self._list(prefix, recursive=True)}

    def delete(self, prefix: str) -> None:
        keys = [self.uri.join(f"{prefix}/{name}") for name in self.files(prefix)]
        if self.head(prefix) is not None:
            keys.append(self.uri.join(prefix))
        self.delete_keys(keys)

    def delete_keys(self, keys: list[str]) -> None:
        """Delete whole object keys (not relative to the prefix), 1,000 to a request."""
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
            r = self._call("delete", "", self.client.delete_objects, Bucket=self.uri.bucket, Delete=batch)
            if r.get("Errors"):
                first = r["Errors"][0]
                raise S3Error(
                    f"cannot delete s3://{self.uri.bucket}/{first['Key']} at {self.endpoint}: "
                    f"{first.get('Code')}: {first.get('Message')}",
                    code=str(first.get("Code")),
                )

    # -- files and trees ---------------------------------------------------------------------------
    def upload_file(self, key: str, path: Path) -> ObjectInfo:
        """Upload one file (multipart above `multipart_mb`, parts in parallel); its size, ETag, version."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        while True:
            try:
                self.client.upload_file(
                    str(path),
                    self.uri.bucket,
                    self.uri.join(key),
                    ExtraArgs=dict(self._sse),
                    Config=self.transfer,
                )
                break
            except (S3UploadFailedError, ClientError, BotoCoreError) as err:
                if self._sse_refused(err):
                    continue
                raise self.error(err, action="upload", key=key) from None
        info = self.head(key)
        if info is not None:
            self._check_sse_applied({"ServerSideEncryption": info.sse}, key)
        if info is None or info.size != path.stat().st_size:
            raise S3Error(f"upload of {path} to {self.describe(key)} at {self.endpoint} did not land whole")
        return info

    def download_file(self, key: str, path: Path, *, version_id: str | None = None) -> None:
        """Download one object (ranges in parallel) to `path`; the caller verifies it."""
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"VersionId": version_id} if version_id else None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(
                self.uri.bucket, self.uri.join(key), str(path), ExtraArgs=extra, Config=self.transfer
            )
        except (ClientError, BotoCoreError) as err:
            if _error_code(err) in {"404", "NoSuchKey", "NoSuchVersion"}:
                raise FileNotFoundError(self.describe(key)) from None
            raise self.error(err, action="download", key=key) from None

    def presign_get(self, key: str, *, expires_s: int) -> str:
        """A URL anyone can GET `key` with until it expires (signed with these credentials)."""
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.uri.bucket, "Key": self.uri.join(key)},
                ExpiresIn=expires_s,
            )
        )

    def bucket_versioning(self) -> bool:
        r = self._call("read versioning of", "", self.client.get_bucket_versioning, Bucket=self.uri.bucket)
        return r.get("Status") == "Enabled"


def as_storage(storage: S3Storage) -> Storage:
    """S3Storage is a Storage (mypy checks this function against the protocol)."""
    return storage
