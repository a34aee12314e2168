"""One capture on this agent: its StartCapture, its session, one uploader per file, and the
progress it reports."""

from __future__ import annotations

import asyncio
import time

from fleetcap.core.metrics import version
from fleetcap.core.naming import rfc3339_us, ring_file_path
from fleetcap.core.vocabulary import CaptureError, Status, StopReason
from fleetcap.node_agent.capture.files import CaptureFile
from fleetcap.node_agent.capture.session import CaptureSession
from fleetcap.node_agent.clock import Clock
from fleetcap.node_agent.upload.uploader import Uploader
from fleetcap.v1 import captures_pb2, fleet_pb2


class ActiveCapture:
    """One capture on this agent: its session, and one uploader per file."""

    def __init__(self, start: fleet_pb2.StartCapture, path: str):
        self.start = start
        self.path = path
        self.session: CaptureSession | None = None
        self.uploaders: dict[int, Uploader] = {}
        self.upload_tasks: dict[int, asyncio.Future[object]] = {}
        self.failure: tuple[str, str] | None = None  # (error kind, message) before a session ran
        self.file_problems: list[str] = []  # files on the instance that are not the agent's any more
        self.removed: set[int] = set()  # files removed after a verified upload (storage only)
        self.hashing: set[int] = set()
        self.fetches: dict[str, asyncio.Future[object]] = {}  # fetch id -> its upload, for downloads
        self.clock: Clock | None = None  # the agent's offset to the coordinator, reported with every status
        self.clock_at_end: tuple[int, int] | None = None

    def api_path(self, index: int) -> str:
        return ring_file_path(self.start.file_path, index, self.start.continuous)

    def file_final(self, index: int) -> tuple[int, str] | None:
        """(size, sha256) once file `index` is closed and hashed."""
        f = self._file(index)
        return (f.size, f.sha256) if f and f.closed and f.sha256 else None

    def _file(self, index: int) -> CaptureFile | None:
        if self.session is None:
            return None
        return next((f for f in self.session.files if f.index == index), None)

    def clock_offset(self) -> tuple[int, int] | None:
        """(offset, uncertainty) in µs: the agent's latest measurement while the capture runs,
        then the one it had when the capture ended, kept (a merge of its files is the same
        tomorrow); None before any measurement."""
        if self.clock_at_end is not None:
            return self.clock_at_end
        if self.clock is None or not self.clock.uncertainty_us:
            return None
        now = (self.clock.offset_us, self.clock.uncertainty_us)
        if self.session is not None and self.session.done.is_set():
            self.clock_at_end = now
        return now

    def progress(self) -> fleet_pb2.CaptureProgress:
        status = captures_pb2.InstanceStatus()
        clock = self.clock_offset()
        if clock is not None:
            status.clock_offset_us, status.clock_uncertainty_us = clock
        if self.failure:
            status.packet_capture_status, status.stop_reason = Status.ERROR, StopReason.CAPTURE_FAILED
            status.packet_capture_error.append(self.failure[0])
            status.error_message = self.failure[1]
        elif self.session:
            c = self.session.counters
            status.packet_capture_status = c.status
            status.stop_reason = c.stop_reason
            status.packet_capture_error.extend(c.errors)
            status.error_message = c.error_message
            status.capture_start_time, status.capture_stop_time = c.start_time, c.stop_time
            status.packets_captured, status.bytes_captured = c.packets, c.bytes
            status.counters_time = rfc3339_us(time.time_ns() // 1000)  # rates divide by this, not by arrival
            status.kernel_drops, status.interface_drops = c.kernel_drops, c.interface_drops
            status.packets_received = c.received
            status.agent_version = version()
            status.trigger_time, status.trigger_source = c.trigger_time, c.trigger_source
            failed, replaced = [], list(self.file_problems)
            for f in list(self.session.files):
                out = status.files.add(file_path=self.api_path(f.index), size_bytes=f.size, sha256=f.sha256)
                if f.sha256:
                    out.packets = f.packets
                    out.first_packet_time, out.last_packet_time = rfc3339_us(f.first_us), rfc3339_us(f.last_us)
                u = self.uploaders.get(f.index)
                if u:
                    out.uploaded_bytes, out.upload_complete = u.state.acked, u.state.committed
                    out.stored_sha256 = u.state.stored_sha256
                    if u.state.local_file_failed:
                        replaced.append(u.state.failed)
                    elif u.state.failed:
                        failed.append(f"{out.file_path}: {u.state.failed}")
            if replaced:
                status.packet_capture_status = Status.ERROR
                status.packet_capture_error.append(CaptureError.LOCAL_FILE_FAILED)
                status.error_message = "; ".join(dict.fromkeys(replaced))
            elif failed:
                status.packet_capture_status = Status.ERROR
                status.packet_capture_error.append(CaptureError.STORAGE_FAILED)
                status.error_message = "upload failed, the instance keeps the file: " + "; ".join(failed)
        return fleet_pb2.CaptureProgress(capture_name=self.start.capture_name, capture_id=self.start.capture_id, status=status)
