"""The sink interface: where the coordinator stores the capture files agents stream to it.

A file is written strictly in order: `write` takes the offset it expects, so a duplicated or
reordered chunk is refused rather than stored. A writer may buffer; `write` and `flush`
return the *durable* size, the only offset ever acknowledged to an agent, and the one an
agent resumes from after any failure (`open` recomputes it from what the sink holds).
`commit` makes everything durable, verifies size and SHA-256, and makes the object final.
All methods block; the coordinator calls them in worker threads.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Callable
from typing import ClassVar

from fleetcap.core.vocabulary import StorageKind


@dataclasses.dataclass(frozen=True)
class ContainerRule:
    """Which container names a kind of store takes (the last segment of storagePath)."""

    pattern: re.Pattern[str]
    text: str  # the rule in words, for the error that refuses a name

    def allows(self, container: str) -> bool:
        return self.pattern.match(container) is not None


# Azure's rule, which the built-in local account follows too: a container is a directory there.
AZURE_CONTAINER = ContainerRule(re.compile(r"^(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*$"), "3-63 lowercase letters, digits and single hyphens")


class SinkError(Exception):
    """The sink refused or failed an operation; retryable unless a subclass says otherwise."""


class OffsetMismatch(SinkError):
    def __init__(self, expected: int, got: int):
        super().__init__(f"chunk at offset {got}, but the next byte to store is {expected}")
        self.expected = expected


class IntegrityError(SinkError):
    """The stored bytes differ from the agent's file; the stored copy was discarded."""


@dataclasses.dataclass(frozen=True)
class Committed:
    uri: str
    size: int
    sha256: str


class ObjectWriter(abc.ABC):
    uri: str
    # Called (from any thread) whenever background work made more bytes durable.
    on_durable: Callable[[], None] = staticmethod(lambda: None)

    @abc.abstractmethod
    def durable_size(self) -> int:
        """The durable size now, without waiting."""

    @abc.abstractmethod
    def open(self, restart: bool = False) -> int:
        """Prepares to append and returns the durable size already stored (0 for a new object);
        with restart, discards what is stored and returns 0."""

    @abc.abstractmethod
    def committed(self) -> Committed | None:
        """The committed object, if this file was already committed."""

    @abc.abstractmethod
    def write(self, offset: int, data: bytes | memoryview) -> int:
        """Stores data at offset (== everything received so far); returns the durable size."""

    @abc.abstractmethod
    def flush(self) -> int:
        """Makes every byte received durable; returns the durable size."""

    @abc.abstractmethod
    def commit(self, size: int, sha256: str) -> Committed: ...

    def close(self) -> None:
        return None


class Sink(abc.ABC):
    """A kind of store. A new kind is one module with a Sink and its ObjectWriter, one line in
    coordinator/storage/registry.py, and a run of tests/integration/test_storage_contract.py."""

    kind: ClassVar[StorageKind]
    container_rule: ClassVar[ContainerRule] = AZURE_CONTAINER
    resend_at_most: ClassVar[int] = 0
    """How far below the durable size a new writer may resume (bytes the agent sends again): 0
    where every durable byte can be appended to; S3's short last part cannot be."""

    @abc.abstractmethod
    def endpoint(self) -> str:
        """Where objects go, without any credential: a file:// directory or a blob service URL."""

    @abc.abstractmethod
    def open(self, object_name: str) -> ObjectWriter: ...

    @abc.abstractmethod
    def delete(self, object_name: str) -> None:
        """Removes the object (committed or partial) if it exists."""

    @abc.abstractmethod
    def uri(self, object_name: str) -> str:
        """Where the object is (or will be) stored, as clients see it."""

    @abc.abstractmethod
    def read(self, object_name: str, offset: int, length: int) -> bytes:
        """Up to `length` stored bytes from `offset` (committed, or durable so far); b"" past the end."""
