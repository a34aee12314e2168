"""A capture source that plays a pcap file back at its recorded pace, as if its packets were
arriving on an interface now.

Each packet is delivered when its offset from the file's first packet has elapsed since the
source was opened, stamped with that wall-clock time, filtered on the whole packet by the
compiled filter and cut to the snapshot length, as libpcap does live. Once the file is played
out the source is an idle interface: dispatch blocks until breakloop. Stats count the
packets delivered; a replay drops nothing.
"""

from __future__ import annotations

import ctypes
import threading
import time

from fleetcap.core import libpcap
from fleetcap.core.libpcap import PCAP_ERRBUF_SIZE, BpfProgram, PcapError, PktHdr, compile_into
from fleetcap.node_agent.capture.pcap_writer import PcapWriter

# A blocking next_packet gives up after the read timeout, as libpcap does on a live handle.
_BREAK = -2


class ReplayHandle(PcapWriter):
    """A CaptureSource (source.py) reading `path`, a pcap or pcapng file."""

    def __init__(self, path: str, *, snaplen: int, timeout_ms: int = 100):
        self._lib = libpcap.lib()
        err = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        self._offline = self._lib.pcap_open_offline(path.encode(), err)
        if not self._offline:
            raise PcapError(err.value.decode())
        self._snaplen = snaplen
        self._timeout_s = timeout_ms / 1000
        self._dead = self._lib.pcap_open_dead(self._lib.pcap_datalink(self._offline), snaplen)
        self._prog: BpfProgram | None = None
        self._dumper: int | None = None
        self._broken = threading.Event()
        self._nonblocking = False
        self._start_wall = time.time()
        self._start_mono = time.monotonic()
        self._first_ts: float | None = None
        self._pending: tuple[float, bytes, int] | None = None  # (recorded time, bytes, wire length)
        self._hdr = PktHdr()
        self._buf = ctypes.create_string_buffer(1)
        self.delivered = 0
        self.filter_attached_at = 0.0  # the replay filters every packet itself: nothing to discard

    def _dump_handle(self) -> int:
        return int(self._dead or 0)

    def set_filter(self, expression: str) -> None:
        prog = BpfProgram()
        compile_into(self._dead, prog, expression)
        self._prog = prog

    def set_nonblocking(self, nonblocking: bool = True) -> None:
        self._nonblocking = nonblocking

    def breakloop(self) -> None:
        self._broken.set()

    def stats(self) -> tuple[int, int, int]:
        return self.delivered, 0, 0

    def close(self) -> None:
        self.close_dump()
        if self._prog is not None:
            self._lib.pcap_freecode(ctypes.byref(self._prog))
            self._prog = None
        for handle in ("_offline", "_dead"):
            if getattr(self, handle):
                self._lib.pcap_close(getattr(self, handle))
                setattr(self, handle, None)

    # -- delivery --------------------------------------------------------------------------

    def _next_matching(self) -> tuple[float, bytes, int] | None:
        """The next packet of the file that the filter accepts, or None at its end."""
        while self._pending is None:
            hdr = ctypes.POINTER(PktHdr)()
            data = ctypes.c_void_p()
            rc = self._lib.pcap_next_ex(self._offline, ctypes.byref(hdr), ctypes.byref(data))
            if rc == _BREAK:  # the end of the file
                return None
            if rc != 1:
                raise PcapError(self._lib.pcap_geterr(self._offline).decode())
            h = hdr.contents
            if self._prog is not None and not self._lib.pcap_offline_filter(ctypes.byref(self._prog), hdr, data):
                continue
            recorded = h.ts.tv_sec + h.ts.tv_usec / 1e6
            self._pending = (recorded, ctypes.string_at(data.value or 0, h.caplen), h.len)
        return self._pending

    def _due_in(self, recorded: float) -> float:
        if self._first_ts is None:
            self._first_ts = recorded
        return (recorded - self._first_ts) - (time.monotonic() - self._start_mono)

    def _take(self) -> tuple[ctypes._Pointer[PktHdr], int]:
        """Consumes the pending packet into the header and buffer that dump_one writes."""
        assert self._pending is not None
        assert self._first_ts is not None
        recorded, data, wire_len = self._pending
        self._pending = None
        when = self._start_wall + (recorded - self._first_ts)
        self._hdr.ts.tv_sec, self._hdr.ts.tv_usec = int(when), int(round(when % 1 * 1e6)) % 1_000_000
        self._hdr.caplen, self._hdr.len = min(len(data), self._snaplen), wire_len
        self._buf = ctypes.create_string_buffer(data, len(data))
        self.delivered += 1
        return ctypes.pointer(self._hdr), ctypes.addressof(self._buf)

    def _wait(self, seconds: float | None) -> bool:
        """Waits for breakloop up to `seconds` (None: for ever); True if it came (and clears it)."""
        if self._broken.wait(seconds):
            self._broken.clear()
            return True
        return False

    def next_packet(self) -> tuple[int, ctypes._Pointer[PktHdr] | None, int | None]:
        if self._broken.is_set():
            self._broken.clear()
            return _BREAK, None, None
        pending = self._next_matching()
        delay = self._timeout_s if pending is None else self._due_in(pending[0])
        if delay > 0:
            if self._nonblocking:
                return 0, None, None
            if self._wait(min(delay, self._timeout_s)):
                return _BREAK, None, None
            if pending is None or self._due_in(pending[0]) > 0:
                return 0, None, None
        hdr, data = self._take()
        return 1, hdr, data

    def dispatch_to_file(self, max_packets: int) -> int:
        written = 0
        while max_packets < 0 or written < max_packets:
            if self._broken.is_set():
                if written:
                    return written
                self._broken.clear()
                return _BREAK
            pending = self._next_matching()
            if pending is None:  # played out: an idle interface
                if written:
                    return written
                self._wait(None)
                return _BREAK
            delay = self._due_in(pending[0])
            if delay > 0:
                if written:
                    return written
                if self._wait(delay):
                    return _BREAK
                continue
            hdr, data = self._take()
            self.dump_one(hdr, data)
            written += 1
        return written


class ReplaySourceFactory:
    """A SourceFactory (source.py) that replays `path` whatever interface it is asked for."""

    def __init__(self, path: str):
        self.path = path
        self.opened: list[ReplayHandle] = []

    def __call__(self, interface: str, *, snaplen: int, buffer_size: int, timeout_ms: int) -> ReplayHandle:
        handle = ReplayHandle(self.path, snaplen=snaplen, timeout_ms=timeout_ms)
        self.opened.append(handle)
        return handle
