"""One capture on one interface into one file, with exact limits.

The byte limit is exact without a Python frame per packet: while the space left holds
`n` records of the largest possible size (16-byte header + snaplen), pcap_dispatch writes up
to `n` packets in C. Only in the last stretch, where the next record might not fit, packets
are taken one at a time and the one that would cross the limit ends the capture unwritten.
The time limit and stop requests use pcap_breakloop from another thread, which wakes an idle
ring (the TPACKET_V3 read timeout never fires on an idle interface; docs/decisions.md).
On a stop, packets already in the ring that arrived before the stop are still written.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
import threading
import time
from typing import Callable

from node_agent.capture import reasons
from node_agent.capture.libpcap import MAX_SNAPLEN, LiveHandle, PcapError

log = logging.getLogger(__name__)

PCAP_FILE_HEADER = 24
PCAP_RECORD_HEADER = 16
# libpcap's read timeout: how long a partly filled ring block waits before it is handed over.
READ_TIMEOUT_MS = 100
FLUSH_INTERVAL_S = 0.2
# The smallest record payload: an Ethernet header.
MIN_FRAME = 14


@dataclasses.dataclass(frozen=True)
class CaptureSpec:
    """What to capture and where; all limits already validated by the coordinator."""

    name: str
    capture_id: str
    interface: str
    path: str                # absolute path of the pcap file on this machine
    expression: str          # libpcap filter expression
    snaplen: int = 0         # bytes per packet; 0 = whole packet
    total_bytes: int = 0     # max file size, headers included; 0 = none
    time_limit_s: float = 0  # 0 = none
    buffer_size: int = 32 << 20  # kernel ring size in bytes


@dataclasses.dataclass
class Counters:
    status: str = reasons.NOT_STARTED
    stop_reason: str = ""
    errors: list[str] = dataclasses.field(default_factory=list)
    error_message: str = ""
    start_time: str = ""
    stop_time: str = ""
    packets: int = 0
    bytes: int = 0
    kernel_drops: int = 0
    interface_drops: int = 0
    sha256: str = ""


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class CaptureSession:
    """Runs one capture in its own thread. `on_change` is called (from that thread) on every
    status change; poll `counters` for progress."""

    def __init__(self, spec: CaptureSpec, on_change: Callable[["CaptureSession"], None] = lambda s: None):
        self.spec = spec
        self.counters = Counters()
        self._on_change = on_change
        self._handle: LiveHandle | None = None
        self._stop_reason = ""
        self._stop_wall = 0.0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"capture-{spec.name}", daemon=True)
        self._timer: threading.Timer | None = None
        self.done = threading.Event()

    @property
    def snaplen(self) -> int:
        return min(self.spec.snaplen or MAX_SNAPLEN, MAX_SNAPLEN)

    def start(self) -> None:
        self._thread.start()

    def stop(self, reason: str) -> None:
        """Ends the capture with `reason` unless it already ends for another one."""
        with self._lock:
            if self._stop_reason:
                return
            self._stop_reason = reason
            self._stop_wall = time.time()
            handle = self._handle
        if handle:
            handle.breakloop()

    def join(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    # -- the capture thread -------------------------------------------------------------

    def _run(self) -> None:
        c = self.counters
        try:
            self._open()
        except (PcapError, OSError) as e:
            kind = reasons.E_LOCAL_FILE_FAILED if isinstance(e, OSError) else reasons.E_CAPTURE_FAILED
            self._finish_error(kind, str(e))
            return
        c.status, c.start_time = reasons.RUNNING, utc_now()
        if self.spec.time_limit_s:
            self._timer = threading.Timer(self.spec.time_limit_s, self.stop, args=(reasons.TIME_EXCEEDED,))
            self._timer.daemon = True
            self._timer.start()
        self._on_change(self)
        try:
            self._loop()
            self._drain()
            self._close(final=True)
        except (PcapError, OSError) as e:
            log.exception("capture %s failed", self.spec.name)
            self._close(final=False)
            self._finish_error(reasons.E_CAPTURE_FAILED, str(e))
            return
        c.status, c.stop_reason, c.stop_time = reasons.STOPPED, self._stop_reason, utc_now()
        log.info("capture %s stopped: %s, %d packets, %d bytes", self.spec.name, c.stop_reason, c.packets, c.bytes)
        self.done.set()
        self._on_change(self)

    def _open(self) -> None:
        spec = self.spec
        parent = os.path.dirname(spec.path)
        os.makedirs(parent, exist_ok=True)
        if os.path.exists(spec.path):
            raise FileExistsError(f"{spec.path} already exists; fleetcap never overwrites a capture file")
        handle = LiveHandle(spec.interface, snaplen=self.snaplen, buffer_size=spec.buffer_size, timeout_ms=READ_TIMEOUT_MS)
        try:
            handle.set_filter(spec.expression)
            handle.open_dump(spec.path)
        except Exception:
            handle.close()
            raise
        with self._lock:
            self._handle = handle
            if self._stop_reason:  # a stop raced the open
                handle.breakloop()
        self.counters.bytes = handle.file_position()

    def _room(self) -> int:
        return self.spec.total_bytes - self.counters.bytes if self.spec.total_bytes else -1

    def _loop(self) -> None:
        handle, c = self._handle, self.counters
        assert handle is not None
        max_record = PCAP_RECORD_HEADER + self.snaplen
        last_flush = time.monotonic()
        while not self._stop_reason:
            room = self._room()
            if 0 <= room < PCAP_RECORD_HEADER + MIN_FRAME:
                self.stop(reasons.TOTAL_BYTES_EXCEEDED)  # not even the smallest frame fits
                break
            if room == -1:
                n = handle.dispatch_to_file(-1)
            elif room >= max_record:
                n = handle.dispatch_to_file(room // max_record)
            else:
                n = self._write_one_if_it_fits(room, cutoff=None)
            if n > 0:
                c.packets += n
                c.bytes = handle.file_position()
            if self._stop_reason:
                break
            now = time.monotonic()
            if now - last_flush >= FLUSH_INTERVAL_S:
                handle.flush()
                _, c.kernel_drops, c.interface_drops = handle.stats()
                last_flush = now

    def _write_one_if_it_fits(self, room: int, cutoff: float | None) -> int:
        """Takes one packet; writes it if it fits in `room` and arrived by `cutoff`.
        Returns 1 if written, 0 if none was ready, -2 after breakloop. A packet that does not
        fit ends the capture with TotalBytesExceeded."""
        handle = self._handle
        rc, hdr, data = handle.next_packet()
        if rc != 1:
            return rc
        h = hdr.contents
        if cutoff is not None and h.ts.tv_sec + h.ts.tv_usec / 1e6 > cutoff:
            return 0
        if PCAP_RECORD_HEADER + h.caplen > room:
            self.stop(reasons.TOTAL_BYTES_EXCEEDED)
            return 0
        handle.dump_one(hdr, data)
        return 1

    def _drain(self) -> None:
        """After a stop, writes what the ring still holds from before the stop."""
        if self._stop_reason == reasons.TOTAL_BYTES_EXCEEDED:
            return
        handle, c = self._handle, self.counters
        handle.set_nonblocking()
        # A partly filled block is handed over only after the read timeout.
        time.sleep(READ_TIMEOUT_MS / 1000 * 1.5)
        room = self._room()
        breaks = 0
        while True:
            n = self._write_one_if_it_fits(room if room != -1 else 1 << 62, cutoff=self._stop_wall)
            if n == -2 and breaks < 2:  # the pending breakloop is reported once
                breaks += 1
                continue
            if n != 1:
                break
            c.packets += 1
            c.bytes = handle.file_position()
            room = self._room()

    def _close(self, *, final: bool) -> None:
        if self._timer:
            self._timer.cancel()
        handle, c = self._handle, self.counters
        if handle is None:
            return
        if final:
            handle.flush()
            c.bytes = handle.file_position()
            _, c.kernel_drops, c.interface_drops = handle.stats()
        with self._lock:
            self._handle = None
        handle.close()
        if final:
            c.sha256 = file_sha256(self.spec.path)

    def _finish_error(self, kind: str, message: str) -> None:
        c = self.counters
        c.status, c.stop_reason, c.stop_time = reasons.ERROR, reasons.CAPTURE_FAILED, utc_now()
        c.errors, c.error_message = [kind], message
        log.error("capture %s failed: %s", self.spec.name, message)
        self.done.set()
        self._on_change(self)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
