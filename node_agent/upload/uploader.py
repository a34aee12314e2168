"""Streams one capture file to the coordinator while it grows, resumably.

The local file is the buffer: the uploader reads it from the last offset the coordinator
acknowledged as durable, so a reconnect, a coordinator restart or a slow sink costs time,
never bytes, and never agent memory beyond the in-flight window. Once the capture has ended
and every byte is acknowledged, a finish message carries the size and SHA-256, which the
coordinator verifies before it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable
from typing import BinaryIO

import google_crc32c
import grpc
import grpc.aio

from fleetcap.core import transport
from fleetcap.core.vocabulary import CaptureError
from fleetcap.node_agent.capture.capture_root import FileReplaced
from fleetcap.v1 import fleet_pb2, fleet_pb2_grpc

log = logging.getLogger(__name__)

UploadCall = grpc.aio.StreamStreamCall[fleet_pb2.UploadRequest, fleet_pb2.UploadResponse]
StubProvider = Callable[[], fleet_pb2_grpc.FleetStub]


def _open_no_follow(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)


"""The stub of the coordinator replica the agent talks to now (it moves between replicas)."""

CHUNK_BYTES = 4 << 20
# Bytes sent but not yet acknowledged as durable; bounds what is in flight per upload. Larger
# than the blob sink's block (4 MiB) times its parallel stages, so staging can pipeline.
WINDOW_BYTES = 32 << 20
POLL_S = 0.1
RETRY_MIN_S, RETRY_MAX_S = 0.2, 5.0
# Codes after which retrying cannot help: the capture is gone or this file is not wanted.
FATAL = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT}


def _read_chunk(fd: int, length: int, offset: int) -> tuple[bytes, int]:
    """Reads a chunk and its CRC-32C (in hardware) off the event loop."""
    data = os.pread(fd, length, offset)
    return data, google_crc32c.value(data)


class StreamEnded(Exception):
    """The stream closed without an error status; retried like UNAVAILABLE."""


@dataclasses.dataclass
class UploadState:
    acked: int = 0
    committed: bool = False
    storage_path: str = ""
    stored_sha256: str = ""
    failed: str = ""
    local_file_failed: bool = False  # failed because the file on the instance is not the agent's


class Uploader:
    """`final()` returns (size, sha256) once the capture file is closed, else None."""

    def __init__(
        self,
        stub: fleet_pb2_grpc.FleetStub | StubProvider,
        open_msg: fleet_pb2.UploadOpen,
        local_path: str,
        final: Callable[[], tuple[int, str] | None],
        on_change: Callable[[], None],
        *,
        storage_retry_s: float = 300.0,
        metadata: tuple[tuple[str, str], ...] = (),
        open_read: Callable[[str], int] = _open_no_follow,
    ):
        self.storage_retry_s = storage_retry_s
        self.metadata = metadata  # the agent's bearer token, when it has no certificate
        self._open_read = open_read  # the capture root's: never through a symlink
        self.stub = stub
        self.open_msg = open_msg
        self.path = local_path
        self.final = final
        self.on_change = on_change
        self.state = UploadState()
        self._acked = asyncio.Event()  # set on every acknowledgement: wakes a sender waiting on the window

    async def run(self) -> UploadState:
        """Uploads until committed. Network and coordinator failures are retried for ever (the
        file waits on disk); storage failures reported by the coordinator only for
        storage_retry_s without progress, after which the upload is abandoned (StorageFailed)."""
        delay = RETRY_MIN_S
        storage_failing_since: float | None = None
        while not self.state.committed:
            acked_before = self.state.acked
            try:
                await self._attempt()
                delay = RETRY_MIN_S
                continue
            except grpc.aio.AioRpcError as e:
                if e.code() in FATAL:
                    return self._abandon(f"{e.code().name}: {e.details()}")
                now = asyncio.get_running_loop().time()
                if transport.error_reason(e) == CaptureError.STORAGE_FAILED:
                    if self.state.acked > acked_before or storage_failing_since is None:
                        storage_failing_since = now
                    elif now - storage_failing_since > self.storage_retry_s:
                        return self._abandon(f"{e.details()} (still failing after {self.storage_retry_s:.0f}s)")
                else:
                    storage_failing_since = None
                log.warning("upload of %s interrupted (%s: %s); resuming in %.1fs", self.path, e.code().name, e.details(), delay)
            except FileReplaced as e:  # never send what a local user put in the capture's place
                self.state.local_file_failed = True
                return self._abandon(str(e))
            except (StreamEnded, OSError) as e:
                log.warning("upload of %s interrupted (%s); resuming in %.1fs", self.path, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        return self.state

    def _abandon(self, why: str) -> UploadState:
        self.state.failed = why
        log.error("upload of %s abandoned: %s; the file stays on this instance", self.path, why)
        self.on_change()
        return self.state

    async def _attempt(self) -> None:
        stub = self.stub() if callable(self.stub) else self.stub  # the agent's current replica
        call = stub.Upload(metadata=self.metadata)
        try:
            await call.write(fleet_pb2.UploadRequest(open=self.open_msg))
            first = await call.read()
            if first is grpc.aio.EOF:
                raise StreamEnded("the coordinator closed the upload stream")
            self._ack(first)
            if self.state.committed:
                return
            with os.fdopen(self._open_read(self.path), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if self.state.acked > size:
                    # More is stored than the file now holds (a partial record was cut after a
                    # crash): the stored copy is discarded and the file sent again from the start.
                    log.warning("upload of %s: %d bytes stored but the file has %d; starting over", self.path, self.state.acked, size)
                    self.open_msg.restart = True
                    self.state.acked = 0
                    return
                self.open_msg.restart = False
                sent = self.state.acked
                reader = asyncio.ensure_future(self._read_acks(call))
                try:
                    await self._send(call, f, sent, reader)
                finally:
                    reader.cancel()
        finally:
            call.cancel()

    async def _send(self, call: UploadCall, f: BinaryIO, sent: int, reader: asyncio.Future[None]) -> None:
        finished = False
        while not self.state.committed:
            if reader.done():
                reader.result()  # re-raises the stream's error
                return
            size = os.fstat(f.fileno()).st_size
            if sent < size and sent - self.state.acked < WINDOW_BYTES:
                data, crc = await asyncio.to_thread(_read_chunk, f.fileno(), min(CHUNK_BYTES, size - sent), sent)
                await call.write(fleet_pb2.UploadRequest(chunk=fleet_pb2.UploadChunk(offset=sent, data=data, crc32c=crc)))
                sent += len(data)
                continue
            final = self.final()
            if final and not finished and sent == final[0] == size:
                await call.write(fleet_pb2.UploadRequest(finish=fleet_pb2.UploadFinish(size_bytes=final[0], sha256=final[1])))
                finished = True
            # Wait for an acknowledgement (window full, or the commit) or for the file to grow.
            self._acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), timeout=POLL_S)

    async def _read_acks(self, call: UploadCall) -> None:
        while True:
            resp = await call.read()
            if not isinstance(resp, fleet_pb2.UploadResponse):  # grpc.aio.EOF
                if not self.state.committed:
                    raise StreamEnded("the coordinator closed the upload stream before the commit")
                return
            self._ack(resp)

    def _ack(self, resp: fleet_pb2.UploadResponse) -> None:
        s = self.state
        s.acked = resp.acked_offset
        self._acked.set()
        s.storage_path = resp.storage_path or s.storage_path
        if resp.committed:
            s.committed, s.stored_sha256 = True, resp.stored_sha256
            log.info("upload of %s committed: %d bytes at %s", self.path, s.acked, s.storage_path)
            self.on_change()
