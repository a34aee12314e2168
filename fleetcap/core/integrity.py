"""Checksums of capture files: the SHA-256 that agent, coordinator and client compare."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

# Large reads keep hashing near memory speed (hashlib releases the GIL per call).
READ_BYTES = 1 << 20


def sha256_stream(f: BinaryIO) -> str:
    """The hex SHA-256 of what is left to read in `f`."""
    h = hashlib.sha256()
    while chunk := f.read(READ_BYTES):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str) -> str:
    """The hex SHA-256 of a whole file."""
    with open(path, "rb") as f:
        return sha256_stream(f)
