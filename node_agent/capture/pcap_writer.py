"""Writing a pcap file with libpcap's own dumper: what every capture source shares.

A source opens dumps on one of its pcap handles (a live handle, or a dead one for a replay);
records go through `pcap_dump`, so the file is libpcap's format to the byte whatever the source.
"""
from __future__ import annotations

import ctypes
import os

from fleetcap.core import libpcap
from fleetcap.core.libpcap import PcapError, PktHdr


class PcapWriter:
    """One pcap file at a time, opened on the pcap handle `_dump_handle()` returns."""

    _dumper: int | None = None
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
        self._dumper = lib.pcap_dump_fopen(handle, stream)
        if not self._dumper:
            libpcap.libc().fclose(stream)
            raise PcapError(lib.pcap_geterr(handle).decode())

    def close_dump(self) -> None:
        """Flushes and closes the current file; open_dump starts the next one."""
        if self._dumper:
            self._lib.pcap_dump_close(self._dumper)
            self._dumper = None

    def file_position(self) -> int:
        """Bytes written to the file so far, buffered ones included (exact, at record bounds)."""
        return int(self._lib.pcap_dump_ftell64(self._dumper))

    def flush(self) -> None:
        self._lib.pcap_dump_flush(self._dumper)

    def dump_one(self, hdr: ctypes._Pointer[PktHdr], data: int) -> None:
        self._lib.pcap_dump(self._dumper, hdr, data)
