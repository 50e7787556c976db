"""Where checkpoints (and, next, datasets) are kept: one interface over local folders and S3.

`Storage` (base.py) is the protocol; `LocalStorage` (local.py) implements it over a folder and
`S3Storage` (s3.py, boto3) over an `s3://bucket/prefix` (uri.py), with conditional writes and
multipart transfers on top; transfer.py moves sha256-checked sets of files between the two.
"""

from llm.storage.base import Storage
from llm.storage.local import HashingWriter, LocalStorage, sha256_file, write_atomic

__all__ = ["HashingWriter", "LocalStorage", "Storage", "sha256_file", "write_atomic"]
