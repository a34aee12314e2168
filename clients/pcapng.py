"""Merges instances' pcap files into one time-ordered pcapng, one interface per instance.

Wireshark shows each packet's interface (frame.interface_name), so a scale set's capture reads
as one trace with the instance on every line. Classic pcap in, pcapng (SHB, one IDB per source
with if_name and if_description, EPBs) out; timestamps stay in microseconds.
"""
from __future__ import annotations

import dataclasses
import heapq
import struct
from collections.abc import Iterator, Sequence
from typing import BinaryIO

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D


@dataclasses.dataclass(frozen=True)
class Source:
    name: str          # interface name in the output, e.g. "web_3"
    description: str   # e.g. the instance's ARM id
    paths: Sequence[str]  # its pcap files, in order (a ring's files)


def _records(path: str, index: int) -> Iterator[tuple[int, int, int, bytes]]:
    """(timestamp in µs, source index, original length, data) for each record."""
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
            yield sec * 1_000_000 + (frac // 1000 if nsec else frac), index, origlen, data


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


def merge(sources: Sequence[Source], out: BinaryIO) -> int:
    """Writes the merged pcapng; returns the number of packets written."""
    out.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
    streams = []
    for i, src in enumerate(sources):
        existing = [p for p in src.paths]
        linktype, snaplen = _linktype(existing[0]) if existing else (1, 262144)
        opts = _option(2, src.name.encode()) + _option(3, src.description.encode()) + _option(0, b"")
        out.write(_block(0x00000001, struct.pack("<HHI", linktype, 0, snaplen) + opts))
        streams.append(_chain(existing, i))
    count = 0
    for ts, index, origlen, data in heapq.merge(*streams, key=lambda r: (r[0], r[1])):
        pad = (-len(data)) % 4
        body = struct.pack("<IIIII", index, ts >> 32, ts & 0xFFFFFFFF, len(data), origlen) + data + b"\0" * pad
        out.write(_block(0x00000006, body))
        count += 1
    return count


def _chain(paths: Sequence[str], index: int) -> Iterator[tuple[int, int, int, bytes]]:
    for p in paths:
        yield from _records(p, index)
