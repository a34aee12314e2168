"""The live capture source: one libpcap handle on an interface, writing pcap files.

`pcap_dispatch` is handed libpcap's own `pcap_dump` as its callback, so packets go from the
TPACKET_V3 ring to the file without a Python frame per packet, and ctypes releases the GIL
for the whole call.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time

from fleetcap.core import libpcap
from fleetcap.core.libpcap import PCAP_ERRBUF_SIZE, BpfProgram, PcapError, PcapStat, PktHdr, compile_into
from fleetcap.node_agent.capture.pcap_writer import PcapWriter

_SOL_SOCKET, _SO_ATTACH_FILTER = 1, 26  # Linux <asm-generic/socket.h>


class _SockFprog(ctypes.Structure):
    """struct sock_fprog: a classic BPF program for SO_ATTACH_FILTER (the same layout as
    libpcap's struct bpf_program)."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class LiveHandle(PcapWriter):
    """One activated capture handle on one interface, writing one pcap file.

    Every method but `breakloop` must be called from one thread (the capture thread):
    libpcap handles are not thread-safe, and pcap_stats on Linux reads and resets
    kernel counters.
    """

    def __init__(self, interface: str, *, snaplen: int, buffer_size: int, timeout_ms: int = 100):
        self._lib = libpcap.lib()
        self._dump_callback = libpcap.pcap_dump_callback()
        err = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        self._p = self._lib.pcap_create(interface.encode(), err)
        if not self._p:
            raise PcapError(err.value.decode())
        self._dumper: int | None = None
        self.filter_attached_at = 0.0
        self._lock = threading.Lock()  # guards _p against close() racing breakloop()
        self._lib.pcap_set_snaplen(self._p, snaplen)
        self._lib.pcap_set_promisc(self._p, 0)
        self._lib.pcap_set_timeout(self._p, timeout_ms)
        self._lib.pcap_set_buffer_size(self._p, buffer_size)
        rc = self._lib.pcap_activate(self._p)
        if rc < 0:
            msg = self._lib.pcap_geterr(self._p).decode() or self._lib.pcap_statustostr(rc).decode()
            self.close()
            raise PcapError(f"{interface}: {msg}")

    def _dump_handle(self) -> int:
        return int(self._p or 0)

    def set_filter(self, expression: str) -> None:
        """Attaches the compiled filter to the socket itself, not through pcap_setfilter.

        pcap_setfilter (TPACKET_V3) re-runs the filter in user space on the ring block that was
        being filled when the filter was set, on records already cut to the snap length: a
        filter that reads past the capture size (a UDP port with a 34-byte capture size) then
        rejects every packet of that block, which on a quiet link is the whole start of the
        capture. In the kernel the filter reads the whole packet, and its return value cuts
        the record, as it should. What the ring took before the filter was attached is
        unfiltered: `filter_attached_at` lets the session discard it (session.py)."""
        prog = BpfProgram()
        compile_into(self._p, prog, expression)
        try:
            fprog = _SockFprog(prog.bf_len, prog.bf_insns)
            fd = self._lib.pcap_fileno(self._p)
            if libpcap.libc().setsockopt(fd, _SOL_SOCKET, _SO_ATTACH_FILTER, ctypes.byref(fprog), ctypes.sizeof(fprog)) != 0:
                err = ctypes.get_errno()
                raise PcapError(f"attaching the filter: {os.strerror(err)}")
            self.filter_attached_at = time.time()
        finally:
            self._lib.pcap_freecode(ctypes.byref(prog))

    def dispatch_to_file(self, max_packets: int) -> int:
        """Writes up to max_packets (-1 = one ring block) in C; returns the count, or -2
        after breakloop. Blocks while the ring is empty until breakloop."""
        rc = self._lib.pcap_dispatch(self._p, max_packets, self._dump_callback, self._dumper)
        if rc == -1:
            raise PcapError(self._lib.pcap_geterr(self._p).decode())
        return int(rc)

    def next_packet(self) -> tuple[int, ctypes._Pointer[PktHdr] | None, int | None]:
        """One packet: (1, hdr, data) | (0, None, None) when none is ready (nonblocking) |
        (-2, None, None) after breakloop."""
        hdr = ctypes.POINTER(PktHdr)()
        data = ctypes.c_void_p()
        rc = self._lib.pcap_next_ex(self._p, ctypes.byref(hdr), ctypes.byref(data))
        if rc == -1:
            raise PcapError(self._lib.pcap_geterr(self._p).decode())
        if rc != 1:
            return rc, None, None
        return 1, hdr, data.value

    def set_nonblocking(self, nonblocking: bool = True) -> None:
        err = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        if self._lib.pcap_setnonblock(self._p, int(nonblocking), err) < 0:
            raise PcapError(err.value.decode())

    def breakloop(self) -> None:
        """Safe from any thread: wakes a dispatch blocked on an idle ring (libpcap >= 1.10)."""
        with self._lock:
            if self._p:
                self._lib.pcap_breakloop(self._p)

    def stats(self) -> tuple[int, int, int]:
        """(received, kernel drops, interface drops), cumulative."""
        s = PcapStat()
        if self._lib.pcap_stats(self._p, ctypes.byref(s)) < 0:
            return 0, 0, 0
        return s.ps_recv, s.ps_drop, s.ps_ifdrop

    def close(self) -> None:
        self.close_dump()
        with self._lock:
            if self._p:
                self._lib.pcap_close(self._p)
                self._p = None
