"""Writing a pcap file with libpcap's own dumper: what every capture source shares.

A source opens dumps on one of its pcap handles (a live handle, or a dead one for a replay);
records go through `pcap_dump`, so the file is libpcap's format to the byte whatever the source.
"""

from __future__ import annotations

import ctypes
import os

from fleetcap.core import libpcap
from fleetcap.core.libpcap import PcapError, PktHdr

_IOFBF = 0  # <stdio.h>
STREAM_BUFFER = 1 << 20
"""The dump stream's buffer. stdio's own is one page: after a flush leaves the file offset
mid-page, every later page-sized write then starts a new page part-way, and the kernel zeroes
the rest of it first (ext4's block_write_begin), a twentieth of the capture's CPU under a flood.
With a buffer this size there is one such page per megabyte (docs/benchmarks.md)."""


class PcapWriter:
    """One pcap file at a time, opened on the pcap handle `_dump_handle()` returns."""

    _dumper: int | None = None
    _buffer: ctypes.Array[ctypes.c_char] | None = None  # the stream's; lives until the stream is closed
    _lib: ctypes.CDLL  # the subclass sets it to libpcap.lib() when it opens its handle

    def _dump_handle(self) -> int:
        raise NotImplementedError

    def open_dump(self, fd: int) -> None:
        """Starts a pcap file on `fd`, a new file the caller opened (capture_root.py); the
        dumper owns it from here and closes it in close_dump."""
        lib, handle = self._lib, self._dump_handle()
        stream = libpcap.libc().fdopen(fd, b"wb")
        if not stream:
            os.close(fd)
            raise OSError(ctypes.get_errno(), "fdopen failed")
        buffer = ctypes.create_string_buffer(STREAM_BUFFER)
        if libpcap.libc().setvbuf(stream, buffer, _IOFBF, STREAM_BUFFER) != 0:
            libpcap.libc().fclose(stream)
            raise OSError(ctypes.get_errno(), "setvbuf failed")
        self._buffer = buffer
        self._dumper = lib.pcap_dump_fopen(handle, stream)
        if not self._dumper:
            libpcap.libc().fclose(stream)
            raise PcapError(lib.pcap_geterr(handle).decode())

    def close_dump(self) -> None:
        """Flushes and closes the current file; open_dump starts the next one."""
        if self._dumper:
            self._lib.pcap_dump_close(self._dumper)
            self._dumper = None
        self._buffer = None  # only now: the stream wrote from it until pcap_dump_close

    def file_position(self) -> int:
        """Bytes written to the file so far, buffered ones included (exact, at record bounds)."""
        return int(self._lib.pcap_dump_ftell64(self._dumper))

    def flush(self) -> None:
        self._lib.pcap_dump_flush(self._dumper)

    def dump_one(self, hdr: ctypes._Pointer[PktHdr], data: int) -> None:
        self._lib.pcap_dump(self._dumper, hdr, data)
