"""Receiving one capture file from an agent, as plain domain code (no gRPC).

The upload is written to the capture's sink strictly in order and acknowledged only once
durable. It checks who may upload what, names the stored object, applies the flush and
acknowledgement policy, and trims a continuous capture's ring in storage. Failures are
domain errors (errors.py), mapped to status codes by the servicer's one table.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib
from collections.abc import AsyncIterator, Mapping

import google_crc32c

from fleetcap.coordinator.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    StorageFailed,
    Superseded,
)
from fleetcap.coordinator.fetch import fetch_object
from fleetcap.coordinator.fleet.agents import check_caller, check_identity
from fleetcap.coordinator.fleet.wire import ChunkRequest, ChunkView
from fleetcap.coordinator.metrics import CoordinatorMetrics
from fleetcap.coordinator.state import keys
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.storage.local_sink import LocalSink
from fleetcap.coordinator.storage.sink import IntegrityError, ObjectWriter, OffsetMismatch, Sink, SinkError
from fleetcap.coordinator.usecases.common import object_name, session_id
from fleetcap.core import limits
from fleetcap.core.auth import Principal
from fleetcap.core.libpcap import MAX_SNAPLEN
from fleetcap.core.naming import ring_file_path
from fleetcap.core.vocabulary import LOCAL_ACCOUNT
from fleetcap.v1 import fleet_pb2, state_pb2

log = logging.getLogger(__name__)

# An upload flushes to its sink when no chunk came for this long, and at the latest when
# received bytes have waited this long: acknowledged data is durable within ~2 s.
FLUSH_IDLE_S = 1.0
MAX_UNFLUSHED_S = 2.0
# Requests read ahead of the sink: bounded, so a slow sink slows the agent (gRPC flow control).
READ_AHEAD = 4
FETCH_ID = re.compile(r"[0-9a-f]{32}")
FETCH_CHECK_S = 2.0  # how often a fetch's upload checks that its download still runs
_END = object()


async def _pump(requests: AsyncIterator[fleet_pb2.UploadRequest | ChunkRequest], queue: asyncio.Queue[object]) -> None:
    """Moves a request stream into a bounded queue; ends with _END, also when the agent went
    away mid-stream (nothing is acknowledged then, and it resumes from the durable offset)."""
    try:
        async for r in requests:
            await queue.put(r)
    except Exception as e:  # the stream broke: the peer is gone
        log.info("upload stream ended early: %s", e)
    await queue.put(_END)


def _write_checked(writer: ObjectWriter, offset: int, data: bytes | memoryview, chunk: ChunkView | fleet_pb2.UploadChunk) -> bool:
    """Checks a chunk's CRC-32C (or, from an older agent, its zlib CRC-32) and writes it, off
    the event loop. False, with nothing written, on a mismatch."""
    if chunk.HasField("crc32c"):
        # google-crc32c takes bytes only: the copy (30 ms a GiB) and the hardware CRC (80 ms)
        # cost a third of zlib's CRC-32 (380 ms) on the view.
        if google_crc32c.value(bytes(data)) != chunk.crc32c:
            return False
    elif zlib.crc32(data) != chunk.crc32:
        return False
    writer.write(offset, data)
    return True


def _trim_ring(record: state_pb2.CaptureRecord, op: fleet_pb2.UploadOpen, sink: Sink) -> None:
    """Continuous capture keeps the newest fileCount files in storage too."""
    p = record.resource.properties
    if not p.HasField("continuous_capture"):
        return
    index = int(op.file_path[-len("00000.cap") : -len(".cap")])
    old = index - p.capture_settings.file_count
    if old >= 0:
        sink.delete(object_name(record, op.identity, ring_file_path(record.local_path, old, True)))


# A pcap record's header (timestamp, captured and original lengths: 16 bytes) before its data.
PCAP_RECORD_HEADER = 16


def max_file_bytes(record: state_pb2.CaptureRecord) -> int:
    """The most one file of this capture may hold: its limit (a ring file's size; a flight
    recorder's ring plus what follows the trigger; else the session's bytes), plus the one record
    that may cross it. 0 = no limit (a capture without one)."""
    p = record.resource.properties
    if p.HasField("continuous_capture"):
        limit = p.capture_settings.file_size_in_bytes
    else:
        limit = p.total_bytes_per_session + (p.standby_bytes if p.standby_in_seconds else 0)
    return limit + PCAP_RECORD_HEADER + (p.bytes_to_capture_per_packet or MAX_SNAPLEN) if limit else 0


def _within(cap: int, end: int, what: str) -> None:
    if cap and end > cap:
        raise InvalidArgument(
            "upload",
            f"{what} {end} bytes: past this capture's limit for one file ({cap} bytes, one record over the limit included); not stored",
        )


class Uploads:
    """The upload streams of this replica: the newest per stored object wins, an older one for
    the same object stops (Superseded)."""

    def __init__(self, store: Store, sinks: Mapping[str, Sink], metrics: CoordinatorMetrics):
        self.store = store
        self.sinks = sinks
        local = sinks.get(LOCAL_ACCOUNT)
        # Files sent for a download land in the local account's fetch area (fetch.py).
        self.fetch_sink = local if isinstance(local, LocalSink) else None
        self.metrics = metrics
        self._newest: dict[str, object] = {}

    async def _resolve(self, op: fleet_pb2.UploadOpen, principal: Principal | None) -> tuple[state_pb2.CaptureRecord, str, Sink, str]:
        """(capture record, account, sink, object name) for an upload, or a domain error. Only
        the agent of an instance the capture was dispatched to may upload its files."""
        check_identity(op.identity)
        check_caller(principal, op.identity)
        record = await self.store.get_capture(op.capture_name) if limits.CAPTURE_NAME_RE.match(op.capture_name) else None
        if record is None or op.capture_id != session_id(record):
            raise NotFound(f"packet capture '{op.capture_name}' not found")
        if keys.instance_key(op.identity) not in record.instance_keys:
            raise PermissionDenied("this capture does not target that instance")
        if op.fetch_id:
            return record, LOCAL_ACCOUNT, *await self._resolve_fetch(op)
        account = record.resource.properties.storage_location.storage_id
        if not account:
            raise FailedPrecondition("this capture has no storage account")
        return record, account, self.sinks[account], object_name(record, op.identity, op.file_path)

    async def _resolve_fetch(self, op: fleet_pb2.UploadOpen) -> tuple[Sink, str]:
        """A file sent for a download (fetch.py): accepted only while the download's fetch record
        exists, and only for the very file and instance it names."""
        fetch = await self.store.fetches.get(op.fetch_id) if FETCH_ID.fullmatch(op.fetch_id) else None
        if fetch is None:
            raise NotFound(f"fetch '{op.fetch_id[:40]}' not found (its download has ended)")
        if (fetch.instance_key, fetch.capture_name, fetch.capture_id, fetch.file_path) != (
            keys.instance_key(op.identity),
            op.capture_name,
            op.capture_id,
            op.file_path,
        ):
            raise PermissionDenied("the fetch names another file, capture or instance")
        if self.fetch_sink is None:
            raise FailedPrecondition("this coordinator has no local storage to fetch files through")
        return self.fetch_sink, fetch_object(op.fetch_id)

    async def receive(
        self,
        first: fleet_pb2.UploadRequest | ChunkRequest,
        requests: AsyncIterator[fleet_pb2.UploadRequest | ChunkRequest],
        principal: Principal | None,
    ) -> AsyncIterator[fleet_pb2.UploadResponse]:
        """Receives one file for `principal`: `first` must open it; yields every acknowledgement."""
        if not isinstance(first, fleet_pb2.UploadRequest) or not first.HasField("open"):
            raise InvalidArgument("open", "the first message must be an UploadOpen")
        op = first.open
        record, account, sink, object_name = await self._resolve(op, principal)
        writer = sink.open(object_name)
        token = object()
        self._newest[object_name] = token
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=READ_AHEAD)
        pump = asyncio.ensure_future(_pump(requests, queue))
        try:
            async for response in self._receive(op, record, account, sink, writer, object_name, token, queue):
                yield response
        except OffsetMismatch as e:
            raise FailedPrecondition(str(e)) from None
        except IntegrityError as e:
            raise DataLoss(f"storage: {e}") from None
        except SinkError as e:
            log.warning("upload to %s: %s", object_name, e)
            self.metrics.storage_failures.labels(account).inc()
            raise StorageFailed(f"storage: {e}") from None
        finally:
            pump.cancel()
            await asyncio.to_thread(writer.close)
            if self._newest.get(object_name) is token:
                del self._newest[object_name]

    async def _receive(
        self,
        op: fleet_pb2.UploadOpen,
        record: state_pb2.CaptureRecord,
        account: str,
        sink: Sink,
        writer: ObjectWriter,
        object_name: str,
        token: object,
        queue: asyncio.Queue[object],
    ) -> AsyncIterator[fleet_pb2.UploadResponse]:
        done = await asyncio.to_thread(writer.committed)
        if done:
            yield fleet_pb2.UploadResponse(acked_offset=done.size, committed=True, storage_path=done.uri, stored_sha256=done.sha256)
            return
        cap = max_file_bytes(record)
        opened = fetch_checked = time.monotonic()
        durable = await asyncio.to_thread(writer.open, op.restart)
        received, unflushed_since = durable, None
        yield fleet_pb2.UploadResponse(acked_offset=durable, storage_path=writer.uri)
        # Acknowledgements follow durability, not chunk arrivals: the sink reports each
        # completed fsync or staged block, so a full agent window never waits for a timeout.
        durable_changed = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(durable_changed.set)

        writer.on_durable = wake
        next_request: asyncio.Future[object] | None = None
        try:
            while True:
                if next_request is None:
                    next_request = asyncio.ensure_future(queue.get())
                woken: asyncio.Future[object] = asyncio.ensure_future(durable_changed.wait())
                try:
                    ready, _ = await asyncio.wait({next_request, woken}, timeout=FLUSH_IDLE_S, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                durable_changed.clear()
                req: object = None
                if next_request in ready:
                    req, next_request = next_request.result(), None
                if req is _END:
                    return
                if self._newest.get(object_name) is not token:
                    raise Superseded("a newer upload stream took over this file")
                if isinstance(req, fleet_pb2.UploadRequest) and req.HasField("finish"):
                    if op.fetch_id and await self.store.fetches.get(op.fetch_id) is None:
                        raise NotFound(f"fetch '{op.fetch_id}' not found (its download has ended)")
                    _within(cap, req.finish.size_bytes, "a file of")
                    committing = time.monotonic()
                    done = await asyncio.to_thread(writer.commit, req.finish.size_bytes, req.finish.sha256)
                    self.metrics.commit_duration.labels(account).observe(time.monotonic() - committing)
                    self.metrics.upload_duration.labels(account).observe(time.monotonic() - opened)
                    if done.size > durable:
                        self.metrics.storage_written.labels(account).inc(done.size - durable)
                    log.info("stored %s (%d bytes) for capture %s", done.uri, done.size, op.capture_name)
                    if not op.fetch_id:
                        await asyncio.to_thread(_trim_ring, record, op, sink)
                    yield fleet_pb2.UploadResponse(acked_offset=done.size, committed=True, storage_path=done.uri, stored_sha256=done.sha256)
                    return
                if isinstance(req, (fleet_pb2.UploadRequest, ChunkRequest)) and req.HasField("chunk"):
                    if op.fetch_id and time.monotonic() - fetch_checked > FETCH_CHECK_S:
                        # A download that ended (its reader went away) stops its fetch here.
                        if await self.store.fetches.get(op.fetch_id) is None:
                            raise NotFound(f"fetch '{op.fetch_id}' not found (its download has ended)")
                        fetch_checked = time.monotonic()
                    c = req.chunk
                    data = c.data  # a memoryview (wire.py), or protobuf's copy: taken once
                    _within(cap, c.offset + len(data), "a chunk ending at")
                    if not await asyncio.to_thread(_write_checked, writer, c.offset, data, c):
                        raise DataLoss(f"chunk at offset {c.offset}: CRC mismatch")
                    new = writer.durable_size()
                    received = c.offset + len(data)
                    unflushed_since = unflushed_since or time.monotonic()
                else:
                    new = writer.durable_size()
                    if received > new and not ready:  # a quiet stream: make what came durable
                        new = await asyncio.to_thread(writer.flush)
                # A trickle (a chunk every few hundred ms, never a quiet second, never a full
                # batch) must not keep bytes waiting either: flush once durability has not
                # advanced for MAX_UNFLUSHED_S. A busy stream's batches advance it long before.
                if received > new and unflushed_since and time.monotonic() - unflushed_since > MAX_UNFLUSHED_S:
                    new = await asyncio.to_thread(writer.flush)
                if new != durable or new == received:
                    unflushed_since = None if new == received else time.monotonic()
                if new != durable:
                    if new > durable:
                        self.metrics.storage_written.labels(account).inc(new - durable)
                    durable = new
                    yield fleet_pb2.UploadResponse(acked_offset=durable, storage_path=writer.uri)
        finally:
            if next_request is not None:
                next_request.cancel()
