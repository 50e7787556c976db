"""Where checkpoints (and, next, datasets) are kept: one interface over local folders and S3.

`Storage` (base.py) is the protocol; `LocalStorage` (local.py) implements it over a folder. An S3
backend implements the same protocol, so the checkpoint catalogue and the training loop do not change.
"""

from llm.storage.base import Storage
from llm.storage.local import LocalStorage, sha256_file, write_atomic

__all__ = ["LocalStorage", "Storage", "sha256_file", "write_atomic"]
