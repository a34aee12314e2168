"""The Fleet gRPC service: agents' control streams and their file uploads.

Control: the first message is an AgentHello. The agent is registered under an etcd lease
that each heartbeat refreshes; the coordinator then sends Start/Stop commands down the same
stream. Data: one Upload stream per file, on its own channel, written to the sink strictly
in order and acknowledged only once durable.
"""
from __future__ import annotations

import asyncio
import logging
import time
import zlib
from typing import AsyncIterator

import grpc

from coordinator.fleet import wire
from coordinator.metrics import CoordinatorMetrics
from coordinator import service as svc
from coordinator.errors import FleetcapError
from coordinator.state import keys
from coordinator.storage.sink import IntegrityError, OffsetMismatch, SinkError
from fleetcap.v1 import fleet_pb2, fleet_pb2_grpc, state_pb2
from node_agent.capture.session import ring_file_path

log = logging.getLogger(__name__)


# An upload stream flushes to its sink when no chunk came for this long, and at the latest
# when received bytes have waited this long: acknowledged data is durable within ~2 s.
FLUSH_IDLE_S = 1.0
MAX_UNFLUSHED_S = 2.0
_END = object()


async def _pump(requests: AsyncIterator, queue: asyncio.Queue) -> None:
    """Moves a request stream into a bounded queue; ends with _END or the stream's error."""
    try:
        async for r in requests:
            await queue.put(r)
        await queue.put(_END)
    except (grpc.aio.AioRpcError, Exception) as e:  # the agent went away mid-stream
        await queue.put(e)


def _write_checked(writer, offset: int, data: bytes, crc32: int) -> bool:
    """Checks a chunk's CRC-32 and writes it, off the event loop (both release the GIL).
    False, with nothing written, on a mismatch."""
    if zlib.crc32(data) != crc32:
        return False
    writer.write(offset, data)
    return True


class AgentSession:
    """The coordinator's end of one agent's control stream."""

    def __init__(self, instance_key: str):
        self.instance_key = instance_key
        self.queue: asyncio.Queue[fleet_pb2.CoordinatorMessage | None] = asyncio.Queue()

    def close(self) -> None:
        self.queue.put_nowait(None)


class AgentSessions:
    """Agents connected to this replica; the Dispatcher the capture service sends through."""

    def __init__(self) -> None:
        self._by_key: dict[str, AgentSession] = {}

    def attach(self, session: AgentSession) -> None:
        old = self._by_key.get(session.instance_key)
        if old is not None:
            log.warning("agent %s connected again; closing its previous stream", session.instance_key)
            old.close()
        self._by_key[session.instance_key] = session

    def detach(self, session: AgentSession) -> None:
        if self._by_key.get(session.instance_key) is session:
            del self._by_key[session.instance_key]

    def connected(self, instance_key: str) -> bool:
        return instance_key in self._by_key

    def close(self, instance_key: str) -> None:
        session = self._by_key.pop(instance_key, None)
        if session is not None:
            session.close()

    def send(self, instance_key: str, message: fleet_pb2.CoordinatorMessage) -> bool:
        session = self._by_key.get(instance_key)
        if session is None:
            return False
        session.queue.put_nowait(message)
        return True


def identity_error(ident: fleet_pb2.AgentIdentity) -> str:
    if bool(ident.vm_name) == bool(ident.vmss_name):
        return "identity needs exactly one of vm_name or vmss_name"
    if ident.vmss_name and not ident.instance_id.isdigit():
        return f"instance_id '{ident.instance_id}' must be a non-negative integer"
    for value in (ident.vm_name, ident.vmss_name, ident.resource_group, ident.subscription):
        if "/" in value:
            return f"'{value}' must not contain '/'"
    return ""


class FleetServicer(fleet_pb2_grpc.FleetServicer):
    def __init__(self, service: svc.CaptureService, sessions: AgentSessions, *, agent_ttl_s: int, replica: str,
                 metrics: CoordinatorMetrics | None = None):
        self.service = service
        self.metrics = metrics or CoordinatorMetrics()
        self.store = service.store
        self.sessions = sessions
        self.agent_ttl_s = agent_ttl_s
        self.replica = replica
        # The newest upload stream per stored object; an older one for the same object stops.
        self._uploads: dict[str, object] = {}

    async def Connect(self, request_iterator: AsyncIterator[fleet_pb2.AgentMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[fleet_pb2.CoordinatorMessage]:
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        if not first.HasField("hello"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be an AgentHello")
        hello = first.hello
        problem = identity_error(hello.identity)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        key = keys.instance_key(hello.identity)
        record = state_pb2.AgentRecord(identity=hello.identity, hostname=hello.hostname, interface=hello.interface,
                                       addresses=hello.addresses, connected_time=svc.rfc3339(svc.dt.datetime.now(svc.dt.timezone.utc)),
                                       coordinator=self.replica)
        session = AgentSession(key)
        try:
            lease = await self.store.register_agent(key, record, self.agent_ttl_s)
        except FleetcapError as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        self.sessions.attach(session)
        log.info("agent %s connected (%s, %s)", key, hello.hostname, ", ".join(hello.addresses))
        reader: asyncio.Future | None = None
        try:
            # The hello's reports are older than anything the stream brings after it, so they are
            # applied before the stream is read: applied concurrently, a hello written late could
            # overwrite a newer report (an upload that committed while the agent was connecting).
            # Messages this queues (starts, stops) go out after the welcome.
            await self.service.agent_connected(key, hello)
            reader = asyncio.ensure_future(self._read(request_iterator, session, record, lease))
            yield fleet_pb2.CoordinatorMessage(welcome=fleet_pb2.Welcome(
                instance_resource_id=keys.resource_id(hello.identity),
                heartbeat_interval_ms=max(200, self.agent_ttl_s * 1000 // 4)))
            while True:
                message = await session.queue.get()
                if message is None:
                    break
                yield message
        finally:
            if reader is not None:
                reader.cancel()
            self.sessions.detach(session)
            log.info("agent %s disconnected", key)

    async def _read(self, requests: AsyncIterator[fleet_pb2.AgentMessage], session: AgentSession,
                    record: state_pb2.AgentRecord, lease: int) -> None:
        key = session.instance_key
        try:
            async for msg in requests:
                try:
                    if msg.HasField("heartbeat"):
                        if not await self.store.refresh_agent(lease):
                            log.warning("agent %s: lease expired while connected; registering again", key)
                            lease = await self.store.register_agent(key, record, self.agent_ttl_s)
                    elif msg.HasField("progress"):
                        await self.service.apply_progress(key, msg.progress)
                except FleetcapError as e:
                    log.warning("agent %s: could not apply %s: %s", key, msg.WhichOneof("body"), e)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            session.close()

    @staticmethod
    def _trim_ring(record: state_pb2.CaptureRecord, op: fleet_pb2.UploadOpen, sink) -> None:
        """Continuous capture keeps the newest fileCount files in storage too."""
        p = record.resource.properties
        if not p.HasField("continuous_capture"):
            return
        index = int(op.file_path[-len("00000.cap"):-len(".cap")])
        old = index - p.capture_settings.file_count
        if old >= 0:
            sink.delete(svc.object_name(record, op.identity, ring_file_path(record.local_path, old, True)))

    # -- data path ---------------------------------------------------------------------------

    async def Upload(self, request_iterator: AsyncIterator[fleet_pb2.UploadRequest],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[fleet_pb2.UploadResponse]:
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        if not first.HasField("open"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be an UploadOpen")
        op = first.open
        problem = identity_error(op.identity)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        record = await self.store.get_capture(op.capture_name)
        if record is None or op.capture_id != svc.session_id(record):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"packet capture '{op.capture_name}' not found")
        account = record.resource.properties.storage_location.storage_id
        if not account:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this capture has no storage account")
        if keys.instance_key(op.identity) not in record.instance_keys:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "this capture does not target that instance")
        sink = self.service.sinks[account]
        try:
            object_name = svc.object_name(record, op.identity, op.file_path)
        except FleetcapError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        writer = sink.open(object_name)
        token = object()
        self._uploads[object_name] = token
        requests: asyncio.Queue = asyncio.Queue(maxsize=4)  # bounded: a slow sink slows the agent
        pump = asyncio.ensure_future(_pump(request_iterator, requests))
        next_request: asyncio.Future | None = None
        try:
            done = await asyncio.to_thread(writer.committed)
            if done:
                yield fleet_pb2.UploadResponse(acked_offset=done.size, committed=True, storage_path=done.uri,
                                               stored_sha256=done.sha256)
                return
            durable = await asyncio.to_thread(writer.open, op.restart)
            received, unflushed_since = durable, None
            yield fleet_pb2.UploadResponse(acked_offset=durable, storage_path=writer.uri)
            # Acknowledgements follow durability, not chunk arrivals: the sink reports each
            # completed fsync or staged block, so a full agent window never waits for a timeout.
            durable_changed = asyncio.Event()
            loop = asyncio.get_running_loop()
            writer.on_durable = lambda: loop.call_soon_threadsafe(durable_changed.set)
            while True:
                if next_request is None:
                    next_request = asyncio.ensure_future(requests.get())
                woken = asyncio.ensure_future(durable_changed.wait())
                try:
                    ready, _ = await asyncio.wait({next_request, woken}, timeout=FLUSH_IDLE_S,
                                                  return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                durable_changed.clear()
                req = None
                if next_request in ready:
                    req, next_request = next_request.result(), None
                if req is _END:
                    return
                if isinstance(req, BaseException):
                    raise req
                if self._uploads.get(object_name) is not token:
                    await context.abort(grpc.StatusCode.ABORTED, "a newer upload stream took over this file")
                if req is not None and req.HasField("finish"):
                    done = await asyncio.to_thread(writer.commit, req.finish.size_bytes, req.finish.sha256)
                    if done.size > durable:
                        self.metrics.storage_written.inc(account, amount=done.size - durable)
                    log.info("stored %s (%d bytes) for capture %s", done.uri, done.size, op.capture_name)
                    await asyncio.to_thread(self._trim_ring, record, op, sink)
                    yield fleet_pb2.UploadResponse(acked_offset=done.size, committed=True, storage_path=done.uri,
                                                   stored_sha256=done.sha256)
                    return
                if req is not None and req.HasField("chunk"):
                    c = req.chunk
                    data = c.data  # a memoryview (wire.py), or protobuf's copy: taken once
                    if not await asyncio.to_thread(_write_checked, writer, c.offset, data, c.crc32):
                        await context.abort(grpc.StatusCode.DATA_LOSS, f"chunk at offset {c.offset}: CRC-32 mismatch")
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
                        self.metrics.storage_written.inc(account, amount=new - durable)
                    durable = new
                    yield fleet_pb2.UploadResponse(acked_offset=durable, storage_path=writer.uri)
        except OffsetMismatch as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except IntegrityError as e:
            await context.abort(grpc.StatusCode.DATA_LOSS, f"storage: {e}")
        except SinkError as e:
            log.warning("upload to %s: %s", object_name, e)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"storage: {e}")
        finally:
            pump.cancel()
            if next_request is not None:
                next_request.cancel()
            await asyncio.to_thread(writer.close)
            if self._uploads.get(object_name) is token:
                del self._uploads[object_name]


def add_fleet_servicer(servicer: FleetServicer, server: grpc.aio.Server) -> None:
    """fleet_pb2_grpc.add_FleetServicer_to_server, with chunks decoded without a copy (wire.py)."""
    handlers = {
        "Connect": grpc.stream_stream_rpc_method_handler(
            servicer.Connect, request_deserializer=fleet_pb2.AgentMessage.FromString,
            response_serializer=fleet_pb2.CoordinatorMessage.SerializeToString),
        "Upload": grpc.stream_stream_rpc_method_handler(
            servicer.Upload, request_deserializer=wire.decode_upload_request,
            response_serializer=fleet_pb2.UploadResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("fleetcap.v1.Fleet", handlers),))
    server.add_registered_method_handlers("fleetcap.v1.Fleet", handlers)
