"""Merges instances' pcap files into one time-ordered pcapng, one interface per instance.

Wireshark shows each packet's interface (frame.interface_name), so a scale set's capture reads
as one trace with the instance on every line. Classic pcap in, pcapng (SHB, one IDB per source
with if_name and if_description, EPBs, then one ISB per source with what it received and
dropped) out; timestamps stay in microseconds.
"""

from __future__ import annotations

import dataclasses
import heapq
import struct
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import BinaryIO

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D


@dataclasses.dataclass(frozen=True)
class InterfaceStats:
    """What one instance saw and lost, for its Interface Statistics Block (Wireshark's capture
    file properties show it per interface)."""

    received: int  # isb_filteraccept: packets the filter accepted (pcap_stats ps_recv)
    delivered: int  # isb_usrdeliv: packets written to the instance's file
    os_drops: int  # isb_osdrop: dropped by the kernel (ps_drop)
    if_drops: int  # isb_ifdrop: dropped by the interface (ps_ifdrop)
    start_us: int  # isb_starttime: the capture's start on that instance, µs since the epoch
    end_us: int  # isb_endtime: its stop (or when the merge ran, if it still runs)


@dataclasses.dataclass(frozen=True)
class ClockCorrection:
    """An instance's clock offset to the coordinator's: added to each of its packet times, so
    that packets crossing instances come out in causal order; recorded in its interface's
    comment."""

    offset_us: int
    uncertainty_us: int

    def comment(self) -> str:
        return (
            f"fleetcap: timestamps corrected by {self.offset_us:+d} us, this instance's clock offset to the "
            f"coordinator's (uncertainty +/- {self.uncertainty_us} us)"
        )


def _idb(linktype: int, snaplen: int, name: str, description: str, clock: ClockCorrection | None) -> bytes:
    opts = _option(2, name.encode()) + _option(3, description.encode())
    if clock is not None:
        opts += _option(1, clock.comment().encode())
    return _block(0x00000001, struct.pack("<HHI", linktype, 0, snaplen) + opts + _option(0, b""))


@dataclasses.dataclass(frozen=True)
class Source:
    name: str  # interface name in the output, e.g. "web_3"
    description: str  # e.g. the instance's ARM id
    paths: Sequence[str]  # its pcap files, in order (a ring's files)
    stats: InterfaceStats | None = None
    clock: ClockCorrection | None = None


def _records(path: str, index: int, shift_us: int = 0) -> Iterator[tuple[int, int, int, bytes]]:
    """(timestamp in µs, moved by shift_us; source index, original length, data) for each record."""
    with open(path, "rb") as f:
        header = f.read(24)
        if len(header) < 24:
            return
        magic = struct.unpack("<I", header[:4])[0]
        endian = "<" if magic in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC) else ">"
        nsec = struct.unpack(endian + "I", header[:4])[0] == PCAP_MAGIC_NSEC
        while len(rec := f.read(16)) == 16:
            sec, frac, caplen, origlen = struct.unpack(endian + "IIII", rec)
            data = f.read(caplen)
            if len(data) < caplen:
                return  # a file cut mid-record (still being written): stop at the last whole one
            yield sec * 1_000_000 + (frac // 1000 if nsec else frac) + shift_us, index, origlen, data


def _linktype(path: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        header = f.read(24)
    endian = "<" if struct.unpack("<I", header[:4])[0] in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC) else ">"
    snaplen, linktype = struct.unpack(endian + "II", header[16:24])
    return linktype, snaplen


def _option(code: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def _block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def _isb(index: int, st: InterfaceStats) -> bytes:
    """An Interface Statistics Block (pcapng §4.6): timestamp = the end, then the options."""

    def ts(us: int) -> bytes:
        return struct.pack("<II", us >> 32, us & 0xFFFFFFFF)

    opts = (
        _option(2, ts(st.start_us))
        + _option(3, ts(st.end_us))
        + _option(5, struct.pack("<Q", st.if_drops))
        + _option(6, struct.pack("<Q", st.received))
        + _option(7, struct.pack("<Q", st.os_drops))
        + _option(8, struct.pack("<Q", st.delivered))
        + _option(0, b"")
    )
    return _block(0x00000005, struct.pack("<I", index) + ts(st.end_us) + opts)


def statistics(stats: Sequence[InterfaceStats | None]) -> bytes:
    """The ISBs of every interface that has statistics, written after the packets."""
    return b"".join(_isb(i, st) for i, st in enumerate(stats) if st is not None)


def merge(sources: Sequence[Source], out: BinaryIO) -> int:
    """Writes the merged pcapng; returns the number of packets written."""
    out.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
    streams = []
    for i, src in enumerate(sources):
        existing = list(src.paths)
        linktype, snaplen = _linktype(existing[0]) if existing else (1, 262144)
        out.write(_idb(linktype, snaplen, src.name, src.description, src.clock))
        streams.append(_chain(existing, i, src.clock.offset_us if src.clock else 0))
    count = 0
    for ts, index, origlen, data in heapq.merge(*streams, key=lambda r: (r[0], r[1])):
        pad = (-len(data)) % 4
        body = struct.pack("<IIIII", index, ts >> 32, ts & 0xFFFFFFFF, len(data), origlen) + data + b"\0" * pad
        out.write(_block(0x00000006, body))
        count += 1
    out.write(statistics([src.stats for src in sources]))
    return count


def _chain(paths: Sequence[str], index: int, shift_us: int) -> Iterator[tuple[int, int, int, bytes]]:
    for p in paths:
        yield from _records(p, index, shift_us)


# -- streaming: the same merge over byte streams, in bounded memory ---------------------------------

FLUSH_BYTES = 256 << 10


@dataclasses.dataclass(frozen=True)
class StreamSource:
    """An instance whose pcap files arrive as byte streams (the gateway's /merged): each entry
    of `files` opens one file's stream when the merge reaches it."""

    name: str
    description: str
    files: Sequence[Callable[[], AsyncIterator[bytes]]]
    stats: InterfaceStats | None = None
    clock: ClockCorrection | None = None


class _StreamRecords:
    """The records of a chain of pcap files read from async byte streams; holds at most one
    chunk and one record."""

    def __init__(self, files: Sequence[Callable[[], AsyncIterator[bytes]]], index: int, shift_us: int = 0):
        self._files = list(files)
        self._index = index
        self._shift_us = shift_us
        self._buf = bytearray()
        self._pos = 0
        self._chunks: AsyncIterator[bytes] | None = None
        self._endian = "<"
        self._nsec = False
        self.linktype, self.snaplen = 1, 262144

    async def _fill(self, n: int) -> bool:
        """At least n unread bytes of the current file in the buffer; False at its end."""
        while len(self._buf) - self._pos < n:
            if self._chunks is None:
                return False
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                return False
            if self._pos > (1 << 20):
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += chunk
        return True

    async def _open_next(self) -> bool:
        """Moves to the next file with a valid header; False when there is none."""
        while self._files:
            self._chunks = self._files.pop(0)().__aiter__()
            self._buf, self._pos = bytearray(), 0
            if not await self._fill(24):
                continue
            magic = struct.unpack_from("<I", self._buf, self._pos)[0]
            self._endian = "<" if magic in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC) else ">"
            self._nsec = struct.unpack_from(self._endian + "I", self._buf, self._pos)[0] == PCAP_MAGIC_NSEC
            self.snaplen, self.linktype = struct.unpack_from(self._endian + "II", self._buf, self._pos + 16)
            self._pos += 24
            return True
        self._chunks = None
        return False

    async def start(self) -> None:
        await self._open_next()

    async def next(self) -> tuple[int, int, int, bytes] | None:
        while self._chunks is not None:
            if await self._fill(16):
                sec, frac, caplen, origlen = struct.unpack_from(self._endian + "IIII", self._buf, self._pos)
                if await self._fill(16 + caplen):
                    start = self._pos + 16
                    data = bytes(self._buf[start : start + caplen])
                    self._pos = start + caplen
                    ts = sec * 1_000_000 + (frac // 1000 if self._nsec else frac) + self._shift_us
                    return ts, self._index, origlen, data
            await self._open_next()  # a file ended (or was cut mid-record): the next one
        return None


async def merge_stream(sources: Sequence[StreamSource]) -> AsyncIterator[bytes]:
    """Yields the merged pcapng of `sources` as it is produced: the section and interface
    headers as soon as every source's first file has begun, then the packets in time order.
    Memory is one chunk and one record per source, plus up to FLUSH_BYTES of output."""
    readers = [_StreamRecords(src.files, i, src.clock.offset_us if src.clock else 0) for i, src in enumerate(sources)]
    for r in readers:
        await r.start()
    head = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for src, r in zip(sources, readers):
        head.append(_idb(r.linktype, r.snaplen, src.name, src.description, src.clock))
    yield b"".join(head)
    heap: list[tuple[int, int, int, bytes]] = []
    for r in readers:
        rec = await r.next()
        if rec is not None:
            heap.append(rec)
    heapq.heapify(heap)
    out: list[bytes] = []
    size = 0
    while heap:
        ts, index, origlen, data = heap[0]
        pad = (-len(data)) % 4
        block = _block(0x00000006, struct.pack("<IIIII", index, ts >> 32, ts & 0xFFFFFFFF, len(data), origlen) + data + b"\0" * pad)
        out.append(block)
        size += len(block)
        nxt = await readers[index].next()
        if nxt is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, nxt)
        if size >= FLUSH_BYTES:
            yield b"".join(out)
            out, size = [], 0
    out.append(statistics([src.stats for src in sources]))
    yield b"".join(out)
