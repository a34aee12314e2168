"""A thin ctypes binding to the system libpcap, and the filter compiler built on it.

The library is loaded on first use, not at import: the coordinator and the clients import
this module for `check_filter` and never load libpcap unless they compile a filter.
The agent's live capture handle (node_agent/capture/live_source.py) uses `lib()` and
`PCAP_DUMP` from here. See docs/decisions.md for why ctypes and not a PyPI binding.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

PCAP_ERRBUF_SIZE = 256
PCAP_ERROR_BREAK = -2
DLT_EN10MB = 1
# libpcap's own ceiling for a snapshot length (MAXIMUM_SNAPLEN in pcap-int.h).
MAX_SNAPLEN = 262144
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF


class PcapError(Exception):
    """libpcap refused an operation; the message is libpcap's own text."""


class BpfProgram(ctypes.Structure):
    """struct bpf_program."""

    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class PcapStat(ctypes.Structure):
    _fields_ = [("ps_recv", ctypes.c_uint), ("ps_drop", ctypes.c_uint), ("ps_ifdrop", ctypes.c_uint)]


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class PktHdr(ctypes.Structure):
    """struct pcap_pkthdr: in the file each record header is 16 bytes plus caplen."""

    _fields_ = [("ts", _Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
    lib = ctypes.CDLL(name, use_errno=True)
    P, I, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p  # noqa: E741 (C's void *, int, char *)
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
        "pcap_compile": (I, [P, ctypes.POINTER(BpfProgram), S, I, ctypes.c_uint32]),
        "pcap_setfilter": (I, [P, ctypes.POINTER(BpfProgram)]),
        "pcap_freecode": (None, [ctypes.POINTER(BpfProgram)]),
        "pcap_offline_filter": (I, [ctypes.POINTER(BpfProgram), ctypes.POINTER(PktHdr), P]),
        "pcap_dump_open": (P, [P, S]),
        "pcap_fileno": (I, [P]),
        "pcap_dump_fopen": (P, [P, P]),
        "pcap_dump_flush": (I, [P]),
        "pcap_dump_close": (None, [P]),
        "pcap_dump_ftell64": (ctypes.c_int64, [P]),
        "pcap_dump": (None, [P, ctypes.POINTER(PktHdr), P]),
        "pcap_dispatch": (I, [P, I, P, P]),
        "pcap_next_ex": (I, [P, ctypes.POINTER(ctypes.POINTER(PktHdr)), ctypes.POINTER(P)]),
        "pcap_setnonblock": (I, [P, I, S]),
        "pcap_breakloop": (None, [P]),
        "pcap_stats": (I, [P, ctypes.POINTER(PcapStat)]),
        "pcap_datalink": (I, [P]),
        "pcap_close": (None, [P]),
    }
    for fn, (restype, argtypes) in sigs.items():
        f = getattr(lib, fn)
        f.restype, f.argtypes = restype, argtypes
    return lib


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, for fdopen: libpcap writes to a FILE * the caller opened safely."""
    c = ctypes.CDLL(None, use_errno=True)
    c.fdopen.restype, c.fdopen.argtypes = ctypes.c_void_p, [ctypes.c_int, ctypes.c_char_p]
    c.fclose.restype, c.fclose.argtypes = ctypes.c_int, [ctypes.c_void_p]
    c.setvbuf.restype, c.setvbuf.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    c.setsockopt.restype = ctypes.c_int
    c.setsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]
    return c


@functools.cache
def lib() -> ctypes.CDLL:
    """The system libpcap, loaded once, with every function's signature declared."""
    return _load()


def pcap_dump_callback() -> ctypes.c_void_p:
    """The C function pcap_dump, passed to pcap_dispatch as the per-packet callback."""
    return ctypes.cast(lib().pcap_dump, ctypes.c_void_p)


def compile_into(p: int, prog: BpfProgram, expression: str) -> None:
    """Compiles with the optimizer; an expression it proves matches nothing (say, a filter for
    an address the instance does not have) is still a valid capture of nothing, so that one
    is compiled unoptimized instead of failing."""
    if lib().pcap_compile(p, ctypes.byref(prog), expression.encode(), 1, PCAP_NETMASK_UNKNOWN) == 0:
        return
    message = lib().pcap_geterr(p).decode()
    if "rejects all packets" in message and lib().pcap_compile(p, ctypes.byref(prog), expression.encode(), 0, PCAP_NETMASK_UNKNOWN) == 0:
        return
    raise PcapError(message)


class CompiledFilter:
    """A BPF program compiled by libpcap for a link type, usable offline (tests, checks)."""

    def __init__(self, expression: str, *, linktype: int = DLT_EN10MB, snaplen: int = MAX_SNAPLEN):
        self._dead = lib().pcap_open_dead(linktype, snaplen)
        if not self._dead:
            raise PcapError("pcap_open_dead failed")
        self._prog = BpfProgram()
        try:
            compile_into(self._dead, self._prog, expression)
        except PcapError:
            lib().pcap_close(self._dead)
            raise

    def matches(self, frame: bytes) -> bool:
        hdr = PktHdr(caplen=len(frame), len=len(frame))
        buf = ctypes.create_string_buffer(frame, len(frame))
        return bool(lib().pcap_offline_filter(ctypes.byref(self._prog), ctypes.byref(hdr), ctypes.cast(buf, ctypes.c_void_p)))

    def close(self) -> None:
        if self._dead:
            lib().pcap_freecode(ctypes.byref(self._prog))
            lib().pcap_close(self._dead)
            self._dead = None

    def __enter__(self) -> CompiledFilter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_filter(expression: str) -> None:
    """Raises PcapError with libpcap's message if the expression does not compile."""
    CompiledFilter(expression).close()
