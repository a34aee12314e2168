"""Azure Blob Storage sink: each file is a block blob built from staged blocks. Object names
start with their container ("network-watcher-logs/subscriptions/...").

Chunks from the agent are gathered into blocks of BLOCK_BYTES and staged as soon as a block
fills (or the stream goes quiet, on flush), a few at a time in parallel; a staged block is
durable in Azure, so the capture's data is safe while it still runs. The block id encodes the
block's byte offset, so after any restart the uncommitted block list tells exactly how much is
stored. On commit the block list is committed in offset order and the result verified by SHA-256.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient, ExponentialRetry

from fleetcap.coordinator.storage.sink import Committed, IntegrityError, ObjectWriter, OffsetMismatch, Sink, SinkError
from fleetcap.core.vocabulary import StorageKind

log = logging.getLogger(__name__)
# The Azure SDK logs every request and its headers at INFO: noise on a busy coordinator, and
# URLs with (redacted) query strings. Its warnings and errors still come through.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
T = TypeVar("T")

# 4 MiB blocks staged 3 at a time: 1 MiB blocks reached a third of upload_blob's rate in the
# lab (deps-lab §5), 4 MiB about two thirds; parallel staging closes the rest.
BLOCK_BYTES = 4 << 20
PARALLEL_STAGES = 3
# Requests to an unreachable account fail after this; the agent then retries the stream.
REQUEST_TIMEOUT_S = 20


def block_id(offset: int) -> str:
    return base64.b64encode(f"{offset:020d}".encode()).decode()


def block_offset(bid: str) -> int:
    return int(base64.b64decode(bid).decode())


def public_url(url: str) -> str:
    """A blob or account URL without its query: a SAS token (sig=...) is a credential, and a URL
    shown in an API response, a log line or a metric must never carry one."""
    return url.split("?", 1)[0]


class BlobSink(Sink):
    kind = StorageKind.AZURE_BLOB

    def __init__(self, connection_string: str, *, api_version: str | None = None):
        kwargs: dict[str, Any] = {"api_version": api_version} if api_version else {}
        # The SDK's default retry waits 15 s, then 18 s...: a dead account would hold an upload
        # stream for most of a minute. Retry briefly here; the agent's resumable stream retries
        # the rest, with its own budget (docs/decisions.md).
        # The SDK types the backoff and jitter as int; it takes fractions of seconds.
        retry = ExponentialRetry(
            initial_backoff=0.2,  # type: ignore[arg-type]
            increment_base=2,
            retry_total=2,
            random_jitter_range=0.2,  # type: ignore[arg-type]
        )
        self.service = BlobServiceClient.from_connection_string(
            connection_string, connection_timeout=REQUEST_TIMEOUT_S, read_timeout=REQUEST_TIMEOUT_S, retry_policy=retry, **kwargs
        )
        self._containers_ready: set[str] = set()
        self._lock = threading.Lock()

    def _blob(self, object_name: str) -> BlobClient:
        container, _, name = object_name.partition("/")
        with self._lock:
            if container not in self._containers_ready:
                try:
                    self.service.create_container(container)
                except ResourceExistsError:
                    pass
                except AzureError as e:
                    raise SinkError(f"container '{container}': {type(e).__name__}: {str(e).splitlines()[0]}") from None
                self._containers_ready.add(container)
        return self.service.get_blob_client(container, name)

    def endpoint(self) -> str:
        return public_url(self.service.url)

    def uri(self, object_name: str) -> str:
        container, _, name = object_name.partition("/")
        return public_url(self.service.get_blob_client(container, name).url)

    def open(self, object_name: str) -> BlobWriter:
        container = object_name.partition("/")[0]
        return BlobWriter(self._blob(object_name), on_container_missing=lambda: self._forget(container))

    def _forget(self, container: str) -> None:
        """The container vanished (an emulator restarted without its state, or someone deleted
        it): create it again on next use. Staged blocks went with it; the writer's next open
        sees that and the agent resends from the durable offset it then gets."""
        with self._lock:
            self._containers_ready.discard(container)

    def delete(self, object_name: str) -> None:
        try:
            self._blob(object_name).delete_blob()
        except ResourceNotFoundError:
            pass
        except AzureError as e:
            raise SinkError(str(e)) from None

    def read(self, object_name: str, offset: int, length: int) -> bytes:
        blob = self._blob(object_name)
        try:
            return bytes(blob.download_blob(offset=offset, length=length).readall())
        except ResourceNotFoundError:
            pass
        except AzureError as e:
            if getattr(e, "status_code", None) != 416:  # past the end
                raise SinkError(str(e)) from None
            return b""
        # Not committed yet: read the durable prefix is not possible for uncommitted blocks.
        return b""


class BlobWriter(ObjectWriter):
    def __init__(self, blob: BlobClient, *, on_container_missing: Callable[[], None] = lambda: None):
        self.blob = blob
        self._on_container_missing = on_container_missing
        self.uri = public_url(blob.url)
        self._pool = concurrent.futures.ThreadPoolExecutor(PARALLEL_STAGES, thread_name_prefix="stage")
        self._staged: dict[int, int] = {}  # offset -> length, blocks durably staged
        self._pending: dict[int, concurrent.futures.Future[int]] = {}
        self._buffer = bytearray()
        self._buffer_offset = 0
        self._hash: hashlib._Hash | None = hashlib.sha256()  # valid only for a stream started at 0

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except AzureError as e:
            if getattr(e, "error_code", None) == "ContainerNotFound" or "container does not exist" in str(e):
                self._on_container_missing()
            raise SinkError(f"{what}: {type(e).__name__}: {str(e).splitlines()[0]}") from None

    def open(self, restart: bool = False) -> int:
        if restart:
            return 0  # blocks are restaged under the same offset ids; only the new list is committed
        try:
            _, uncommitted = self._call("get block list", self.blob.get_block_list, "uncommitted")
        except SinkError:
            if self._exists():
                raise
            uncommitted = []  # a new blob: nothing staged yet
        end = 0
        for b in sorted(uncommitted, key=lambda b: block_offset(b.id)):
            off = block_offset(b.id)
            if off != end:
                break  # a gap: only the contiguous prefix counts
            self._staged[off] = b.size
            end = off + b.size
        self._buffer_offset = end
        if end:
            self._hash = None  # bytes before `end` were not seen by this writer
        return end

    def _exists(self) -> bool:
        try:
            return bool(self.blob.exists())
        except AzureError as e:
            raise SinkError(f"exists: {type(e).__name__}: {str(e).splitlines()[0]}") from None

    def committed(self) -> Committed | None:
        try:
            props = self.blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as e:
            raise SinkError(str(e)) from None
        _, uncommitted = self._call("get block list", self.blob.get_block_list, "all")
        if uncommitted:
            return None  # a newer upload of this object is under way
        return Committed(self.uri, props.size, props.metadata.get("sha256", ""))

    def _durable(self) -> int:
        end = 0
        for off in sorted(self._staged):
            if off != end:
                break
            end += self._staged[off]
        return end

    def _reap(self, wait: bool) -> None:
        for off, fut in list(self._pending.items()):
            if wait or fut.done():
                length = fut.result()  # raises SinkError from the stage
                self._staged[off] = length
                del self._pending[off]

    def _stage(self, offset: int, data: bytes) -> int:
        self._call("stage block", self.blob.stage_block, block_id(offset), data, length=len(data))
        self.on_durable()
        return len(data)

    def durable_size(self) -> int:
        try:
            self._reap(wait=False)
        except SinkError:
            pass  # reported by the next write or flush
        return self._durable()

    def _submit(self) -> None:
        data = bytes(self._buffer)
        self._pending[self._buffer_offset] = self._pool.submit(self._stage, self._buffer_offset, data)
        self._buffer_offset += len(data)
        self._buffer.clear()
        while len(self._pending) > PARALLEL_STAGES:  # bound memory: at most this many blocks in flight
            next(iter(self._pending.values())).result()
            self._reap(wait=False)

    def write(self, offset: int, data: bytes | memoryview) -> int:
        expected = self._buffer_offset + len(self._buffer)
        if offset != expected:
            raise OffsetMismatch(expected, offset)
        if self._hash is not None:
            self._hash.update(data)
        self._buffer += data
        if len(self._buffer) >= BLOCK_BYTES:
            self._submit()
        self._reap(wait=False)
        return self._durable()

    def flush(self) -> int:
        if self._buffer:
            self._submit()
        self._reap(wait=True)
        return self._durable()

    def commit(self, size: int, sha256: str) -> Committed:
        durable = self.flush()
        if durable != size:
            raise IntegrityError(f"{durable} bytes stored, the agent's file has {size}")
        # Resumed after a restart (no running hash): what is staged is hashed by reading it back once committed.
        digest = self._hash.hexdigest() if self._hash is not None else ""
        blocks = [BlobBlock(block_id(off)) for off in sorted(self._staged)]
        if digest and digest != sha256:
            raise IntegrityError(f"stored bytes hash to {digest}, the agent's file to {sha256}")
        self._call("commit block list", self.blob.commit_block_list, blocks, metadata={"sha256": sha256})
        if not digest:
            h = hashlib.sha256()
            for chunk in self._call("download", self.blob.download_blob).chunks():
                h.update(chunk)
            digest = h.hexdigest()
            if digest != sha256:
                self._call("delete", self.blob.delete_blob)
                raise IntegrityError(f"stored blob hashes to {digest}, the agent's file to {sha256}")
        return Committed(self.uri, size, digest)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
