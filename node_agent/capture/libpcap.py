"""A thin ctypes binding to the system libpcap: the packet hot path stays in C.

`pcap_dispatch` is handed libpcap's own `pcap_dump` as its callback, so packets go from the
TPACKET_V3 ring to the file without a Python frame per packet, and ctypes releases the GIL
for the whole call. See docs/decisions.md for why this and not a PyPI binding.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

PCAP_ERRBUF_SIZE = 256
PCAP_ERROR_BREAK = -2
DLT_EN10MB = 1
# libpcap's own ceiling for a snapshot length (MAXIMUM_SNAPLEN in pcap-int.h).
MAX_SNAPLEN = 262144
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF


class PcapError(Exception):
    """libpcap refused an operation; the message is libpcap's own text."""


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class _PcapStat(ctypes.Structure):
    _fields_ = [("ps_recv", ctypes.c_uint), ("ps_drop", ctypes.c_uint), ("ps_ifdrop", ctypes.c_uint)]


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class PktHdr(ctypes.Structure):
    """struct pcap_pkthdr: in the file each record header is 16 bytes plus caplen."""

    _fields_ = [("ts", _Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
    lib = ctypes.CDLL(name, use_errno=True)
    P, I, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    sigs = {
        "pcap_create": (P, [S, S]),
        "pcap_open_dead": (P, [I, I]),
        "pcap_open_offline": (P, [S, S]),
        "pcap_set_snaplen": (I, [P, I]),
        "pcap_set_promisc": (I, [P, I]),
        "pcap_set_timeout": (I, [P, I]),
        "pcap_set_buffer_size": (I, [P, I]),
        "pcap_activate": (I, [P]),
        "pcap_geterr": (S, [P]),
        "pcap_statustostr": (S, [I]),
        "pcap_compile": (I, [P, ctypes.POINTER(_BpfProgram), S, I, ctypes.c_uint32]),
        "pcap_setfilter": (I, [P, ctypes.POINTER(_BpfProgram)]),
        "pcap_freecode": (None, [ctypes.POINTER(_BpfProgram)]),
        "pcap_offline_filter": (I, [ctypes.POINTER(_BpfProgram), ctypes.POINTER(PktHdr), P]),
        "pcap_dump_open": (P, [P, S]),
        "pcap_dump_flush": (I, [P]),
        "pcap_dump_close": (None, [P]),
        "pcap_dump_ftell64": (ctypes.c_int64, [P]),
        "pcap_dump": (None, [P, ctypes.POINTER(PktHdr), P]),
        "pcap_dispatch": (I, [P, I, P, P]),
        "pcap_next_ex": (I, [P, ctypes.POINTER(ctypes.POINTER(PktHdr)), ctypes.POINTER(P)]),
        "pcap_setnonblock": (I, [P, I, S]),
        "pcap_breakloop": (None, [P]),
        "pcap_stats": (I, [P, ctypes.POINTER(_PcapStat)]),
        "pcap_datalink": (I, [P]),
        "pcap_close": (None, [P]),
        "pcap_lib_version": (S, []),
    }
    for fn, (restype, argtypes) in sigs.items():
        f = getattr(lib, fn)
        f.restype, f.argtypes = restype, argtypes
    return lib


_lib = _load()
# The C function pcap_dump, passed to pcap_dispatch as the per-packet callback.
_PCAP_DUMP = ctypes.cast(_lib.pcap_dump, ctypes.c_void_p)


def _compile(p: int, prog: _BpfProgram, expression: str) -> None:
    """Compiles with the optimizer; an expression it proves matches nothing (say, a filter for
    an address the instance does not have) is still a valid capture of nothing, so that one
    is compiled unoptimized instead of failing."""
    if _lib.pcap_compile(p, ctypes.byref(prog), expression.encode(), 1, PCAP_NETMASK_UNKNOWN) == 0:
        return
    message = _lib.pcap_geterr(p).decode()
    if "rejects all packets" in message and \
            _lib.pcap_compile(p, ctypes.byref(prog), expression.encode(), 0, PCAP_NETMASK_UNKNOWN) == 0:
        return
    raise PcapError(message)


def lib_version() -> str:
    return _lib.pcap_lib_version().decode()


class CompiledFilter:
    """A BPF program compiled by libpcap for a link type, usable offline (tests, checks)."""

    def __init__(self, expression: str, *, linktype: int = DLT_EN10MB, snaplen: int = MAX_SNAPLEN):
        self._dead = _lib.pcap_open_dead(linktype, snaplen)
        if not self._dead:
            raise PcapError("pcap_open_dead failed")
        self._prog = _BpfProgram()
        try:
            _compile(self._dead, self._prog, expression)
        except PcapError:
            _lib.pcap_close(self._dead)
            raise

    def matches(self, frame: bytes) -> bool:
        hdr = PktHdr(caplen=len(frame), len=len(frame))
        buf = ctypes.create_string_buffer(frame, len(frame))
        return _lib.pcap_offline_filter(ctypes.byref(self._prog), ctypes.byref(hdr), ctypes.cast(buf, ctypes.c_void_p)) != 0

    def close(self) -> None:
        if self._dead:
            _lib.pcap_freecode(ctypes.byref(self._prog))
            _lib.pcap_close(self._dead)
            self._dead = None

    def __enter__(self) -> "CompiledFilter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_filter(expression: str) -> None:
    """Raises PcapError with libpcap's message if the expression does not compile."""
    CompiledFilter(expression).close()


class LiveHandle:
    """One activated capture handle on one interface, writing one pcap file.

    Every method but `breakloop` must be called from one thread (the capture thread):
    libpcap handles are not thread-safe, and pcap_stats on Linux reads and resets
    kernel counters.
    """

    def __init__(self, interface: str, *, snaplen: int, buffer_size: int, timeout_ms: int = 100):
        err = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        self._p = _lib.pcap_create(interface.encode(), err)
        if not self._p:
            raise PcapError(err.value.decode())
        self._dumper: int | None = None
        self._lock = threading.Lock()  # guards _p against close() racing breakloop()
        _lib.pcap_set_snaplen(self._p, snaplen)
        _lib.pcap_set_promisc(self._p, 0)
        _lib.pcap_set_timeout(self._p, timeout_ms)
        _lib.pcap_set_buffer_size(self._p, buffer_size)
        rc = _lib.pcap_activate(self._p)
        if rc < 0:
            msg = _lib.pcap_geterr(self._p).decode() or _lib.pcap_statustostr(rc).decode()
            self.close()
            raise PcapError(f"{interface}: {msg}")

    def set_filter(self, expression: str) -> None:
        prog = _BpfProgram()
        _compile(self._p, prog, expression)
        try:
            if _lib.pcap_setfilter(self._p, ctypes.byref(prog)):
                raise PcapError(_lib.pcap_geterr(self._p).decode())
        finally:
            _lib.pcap_freecode(ctypes.byref(prog))

    def open_dump(self, path: str) -> None:
        self._dumper = _lib.pcap_dump_open(self._p, path.encode())
        if not self._dumper:
            raise PcapError(_lib.pcap_geterr(self._p).decode())

    def close_dump(self) -> None:
        """Flushes and closes the current file; open_dump starts the next one."""
        if self._dumper:
            _lib.pcap_dump_close(self._dumper)
            self._dumper = None

    def file_position(self) -> int:
        """Bytes written to the file so far, buffered ones included (exact, at record bounds)."""
        return _lib.pcap_dump_ftell64(self._dumper)

    def flush(self) -> None:
        _lib.pcap_dump_flush(self._dumper)

    def dispatch_to_file(self, max_packets: int) -> int:
        """Writes up to max_packets (-1 = one ring block) in C; returns the count, or -2
        after breakloop. Blocks while the ring is empty until breakloop."""
        rc = _lib.pcap_dispatch(self._p, max_packets, _PCAP_DUMP, self._dumper)
        if rc == -1:
            raise PcapError(_lib.pcap_geterr(self._p).decode())
        return rc

    def next_packet(self) -> tuple[int, ctypes._Pointer | None, int | None]:
        """One packet: (1, hdr, data) | (0, None, None) when none is ready (nonblocking) |
        (-2, None, None) after breakloop."""
        hdr = ctypes.POINTER(PktHdr)()
        data = ctypes.c_void_p()
        rc = _lib.pcap_next_ex(self._p, ctypes.byref(hdr), ctypes.byref(data))
        if rc == -1:
            raise PcapError(_lib.pcap_geterr(self._p).decode())
        if rc != 1:
            return rc, None, None
        return 1, hdr, data.value

    def dump_one(self, hdr: ctypes._Pointer, data: int) -> None:
        _lib.pcap_dump(self._dumper, hdr, data)

    def set_nonblocking(self) -> None:
        err = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        if _lib.pcap_setnonblock(self._p, 1, err) < 0:
            raise PcapError(err.value.decode())

    def breakloop(self) -> None:
        """Safe from any thread: wakes a dispatch blocked on an idle ring (libpcap >= 1.10)."""
        with self._lock:
            if self._p:
                _lib.pcap_breakloop(self._p)

    def stats(self) -> tuple[int, int, int]:
        """(received, kernel drops, interface drops), cumulative."""
        s = _PcapStat()
        if _lib.pcap_stats(self._p, ctypes.byref(s)) < 0:
            return 0, 0, 0
        return s.ps_recv, s.ps_drop, s.ps_ifdrop

    def close(self) -> None:
        if self._dumper:
            _lib.pcap_dump_close(self._dumper)
            self._dumper = None
        with self._lock:
            if self._p:
                _lib.pcap_close(self._p)
                self._p = None
