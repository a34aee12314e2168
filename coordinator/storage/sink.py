"""The sink interface: where the coordinator stores the capture files agents stream to it.

A file is written strictly in order: `append` takes the offset it expects, so a duplicated
or reordered chunk is refused rather than stored. `stored_size` is what survives a restart;
an agent resumes there. `commit` verifies size and SHA-256 and makes the object final.
"""
from __future__ import annotations

import abc
import dataclasses


class SinkError(Exception):
    """The sink refused or failed an operation (retryable unless stated)."""


class OffsetMismatch(SinkError):
    def __init__(self, expected: int, got: int):
        super().__init__(f"chunk at offset {got}, but {expected} bytes are stored")
        self.expected = expected


@dataclasses.dataclass(frozen=True)
class Committed:
    uri: str
    size: int
    sha256: str


class ObjectWriter(abc.ABC):
    uri: str

    @abc.abstractmethod
    def stored_size(self) -> int: ...

    @abc.abstractmethod
    def committed(self) -> Committed | None:
        """The committed object, if this file was already committed."""

    @abc.abstractmethod
    def append(self, offset: int, data: bytes) -> int:
        """Durably stores data at offset (== stored_size) and returns the new stored size."""

    @abc.abstractmethod
    def commit(self, size: int, sha256: str) -> Committed: ...

    def close(self) -> None:
        return None


class Sink(abc.ABC):
    @abc.abstractmethod
    def open(self, object_name: str) -> ObjectWriter: ...

    @abc.abstractmethod
    def delete(self, object_name: str) -> None:
        """Removes the object (committed or partial) if it exists."""

    @abc.abstractmethod
    def uri(self, object_name: str) -> str:
        """Where the object is (or will be) stored, as clients see it."""
