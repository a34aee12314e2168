"""The capture-source interface: what a CaptureSession needs from a packet source.

Two implementations: `live_source.LiveHandle` (libpcap on an interface, the production one)
and `replay_source.ReplayHandle` (a pcap file played back at its recorded pace). With the
replay, the agent's logic (limits, ring files, stop reasons, journal, uploads) runs in unit
tests without root or network namespaces.

Every method but `breakloop` is called from the session's capture thread.
"""

from __future__ import annotations

import ctypes
from typing import Protocol

from fleetcap.core.libpcap import PktHdr


class CaptureSource(Protocol):
    filter_attached_at: float
    """Wall-clock time the filter took effect; packets stamped before it were not filtered and
    are discarded (0: the source filters everything itself)."""

    def set_filter(self, expression: str) -> None:
        """Installs a libpcap filter expression; raises PcapError."""

    def open_dump(self, fd: int) -> None:
        """Starts writing a pcap file on `fd`, a new file (capture_root.py); raises PcapError."""

    def close_dump(self) -> None:
        """Flushes and closes the current file."""

    def file_position(self) -> int:
        """Bytes written to the current file, buffered ones included."""

    def flush(self) -> None: ...

    def dispatch_to_file(self, max_packets: int) -> int:
        """Writes up to max_packets (-1: what is ready) to the file; returns the count, or -2
        after breakloop. Blocks while nothing is ready, until breakloop."""

    def next_packet(self) -> tuple[int, ctypes._Pointer[PktHdr] | None, int | None]:
        """(1, header, data) | (0, None, None): none ready | (-2, None, None): after breakloop."""

    def dump_one(self, hdr: ctypes._Pointer[PktHdr], data: int) -> None:
        """Writes one packet taken with next_packet."""

    def set_nonblocking(self, nonblocking: bool = True) -> None: ...

    def breakloop(self) -> None:
        """Wakes a blocked dispatch; safe from any thread."""

    def stats(self) -> tuple[int, int, int]:
        """(received, kernel drops, interface drops), cumulative."""

    def close(self) -> None: ...


class SourceFactory(Protocol):
    def __call__(self, interface: str, *, snaplen: int, buffer_size: int, timeout_ms: int) -> CaptureSource:
        """Opens a source on an interface; raises PcapError."""
