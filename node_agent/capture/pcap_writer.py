"""Writing a pcap file with libpcap's own dumper: what every capture source shares.

A source opens dumps on one of its pcap handles (a live handle, or a dead one for a replay);
records go through `pcap_dump`, so the file is libpcap's format to the byte whatever the source.
"""
from __future__ import annotations

import ctypes

from fleetcap.core.libpcap import PcapError, PktHdr


class PcapWriter:
    """One pcap file at a time, opened on the pcap handle `_dump_handle()` returns."""

    _dumper: int | None = None
    _lib: ctypes.CDLL  # the subclass sets it to libpcap.lib() when it opens its handle

    def _dump_handle(self) -> int:
        raise NotImplementedError

    def open_dump(self, path: str) -> None:
        lib, handle = self._lib, self._dump_handle()
        self._dumper = lib.pcap_dump_open(handle, path.encode())
        if not self._dumper:
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
