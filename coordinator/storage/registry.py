"""Storage kinds → their backends: the one table a new kind of store is added to.

Each backend is a module with a `Sink` (coordinator/storage/sink.py) whose constructor takes the
account's secret (a connection string, say). Its module is imported only when an account of its
kind is configured, so its packages (an extra: `pip install 'fleetcap[azure]'`) are needed only
then. Adding a kind: its module, one `Backend` line below, its StorageKind
(fleetcap/core/vocabulary.py), its extra (pyproject.toml), its run of
tests/integration/test_storage_contract.py, and docs/storage.md.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable

from fleetcap.coordinator.settings import StorageAccount
from fleetcap.coordinator.storage.local_sink import LocalSink
from fleetcap.coordinator.storage.sink import Sink
from fleetcap.core import secrets
from fleetcap.core.vocabulary import LOCAL_ACCOUNT, StorageKind


@dataclasses.dataclass(frozen=True)
class Backend:
    kind: StorageKind
    flag: str
    """Its name in `--storage-account KIND:NAME=...`."""
    module: str
    factory: str
    """The Sink class in `module`; called with the account's secret."""
    extra: str
    packages: tuple[str, ...]
    """What the module imports beyond the coordinator's own packages (checked before starting)."""
    default_secret: str
    """The reference used when `--storage-account` names none."""
    secret: str
    """What the secret is, in words, for --help and errors."""
    recognized_by: str = ""
    """How its secret begins, so that an account named without a kind is known by its secret."""


BACKENDS: tuple[Backend, ...] = (
    Backend(
        StorageKind.AZURE_BLOB,
        "blob",
        "fleetcap.coordinator.storage.blob_sink",
        "BlobSink",
        "azure",
        ("azure.storage.blob",),
        "env:AZURE_STORAGE_CONNECTION_STRING",
        "an Azure Storage connection string (account key or SAS)",
    ),
    Backend(
        StorageKind.S3,
        "s3",
        "fleetcap.coordinator.storage.s3_sink",
        "S3Sink",
        "s3",
        ("boto3",),
        "env:FLEETCAP_S3_CONNECTION_STRING",
        "an S3 connection string (S3Endpoint=https://host:port;Bucket=B;Region=R;AccessKeyId=K;SecretAccessKey=S)",
        "S3Endpoint=",
    ),
)
DEFAULT = BACKENDS[0]
"""The kind of an account named without one (`--storage-account NAME`): Azure Blob, as before kinds."""


class UnknownKind(ValueError):
    pass


def backend(kind: StorageKind) -> Backend:
    for b in BACKENDS:
        if b.kind == kind:
            return b
    raise UnknownKind(f"no storage backend for kind {kind}")


def by_flag(flag: str) -> Backend:
    for b in BACKENDS:
        if b.flag == flag:
            return b
    raise UnknownKind(f"'{flag}' is not a storage kind; the kinds are {', '.join(b.flag for b in BACKENDS)}")


def by_secret(secret: str) -> Backend:
    """The kind whose secrets begin as this one does; Azure Blob for any other."""
    for b in BACKENDS:
        if b.recognized_by and secret.lstrip().startswith(b.recognized_by):
            return b
    return DEFAULT


def sink_for(account: StorageAccount) -> Sink:
    """The account's sink, its secret read now (SecretError if it cannot be)."""
    b = backend(account.kind)
    factory = getattr(importlib.import_module(b.module), b.factory)
    sink: Sink = factory(secrets.resolve(account.secret))
    return sink


def build_sinks(local_dir: str, accounts: Iterable[StorageAccount]) -> dict[str, Sink]:
    """Every account's sink by name: the built-in LOCAL_ACCOUNT first, then the configured ones."""
    sinks: dict[str, Sink] = {LOCAL_ACCOUNT: LocalSink(local_dir)}
    for account in accounts:
        sinks[account.name] = sink_for(account)
    return sinks
