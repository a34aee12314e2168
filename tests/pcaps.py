"""Reads pcaps independently of the code that wrote them: the classic pcap record layout is
parsed here with struct, and the frames are decoded by dpkt."""

from __future__ import annotations

import collections
import dataclasses
import re
import socket
import struct
import subprocess

import dpkt

from deploy.trafficgen import parse_payload

MAGIC_USEC = 0xA1B2C3D4


@dataclasses.dataclass(frozen=True)
class Record:
    caplen: int
    wirelen: int
    src: str
    dst: str
    sport: int
    dport: int
    tag: int
    seq: int


@dataclasses.dataclass(frozen=True)
class Pcap:
    snaplen: int
    linktype: int
    records: list[Record]
    size: int


def read(path: str) -> Pcap:
    with open(path, "rb") as f:
        data = f.read()
    magic, _vmaj, _vmin, _zone, _sig, snaplen, linktype = struct.unpack("<IHHiIII", data[:24])
    assert magic == MAGIC_USEC, f"{path}: not a little-endian microsecond pcap (magic {magic:#x})"
    off, records = 24, []
    while off < len(data):
        assert off + 16 <= len(data), f"{path}: truncated record header at {off}"
        _s, _us, caplen, wirelen = struct.unpack("<IIII", data[off : off + 16])
        frame = data[off + 16 : off + 16 + caplen]
        assert len(frame) == caplen, f"{path}: truncated record at {off}"
        off += 16 + caplen
        records.append(_decode(frame, caplen, wirelen))
    return Pcap(snaplen, linktype, records, len(data))


def _decode(frame: bytes, caplen: int, wirelen: int) -> Record:
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
        return Record(caplen, wirelen, "", "", 0, 0, -1, -1)
    fam = socket.AF_INET6 if isinstance(ip, dpkt.ip6.IP6) else socket.AF_INET
    l4 = ip.data
    tagseq = parse_payload(bytes(l4.data)) if isinstance(l4, (dpkt.udp.UDP, dpkt.tcp.TCP)) else None
    return Record(
        caplen,
        wirelen,
        socket.inet_ntop(fam, ip.src),
        socket.inet_ntop(fam, ip.dst),
        getattr(l4, "sport", 0),
        getattr(l4, "dport", 0),
        tagseq[0] if tagseq else -1,
        tagseq[1] if tagseq else -1,
    )


def flows(records: list[Record]) -> collections.Counter:
    """The multiset of (src, sport, dst, dport, tag, seq): which datagrams a pcap holds."""
    return collections.Counter((r.src, r.sport, r.dst, r.dport, r.tag, r.seq) for r in records)


@dataclasses.dataclass(frozen=True)
class InterfaceStatistics:
    interface: int
    end: str  # tshark's rendering of the block's timestamp (the capture's end), UTC
    accepted: int  # isb_filteraccept
    delivered: int  # isb_usrdeliv
    os_drops: int  # isb_osdrop
    if_drops: int  # isb_ifdrop
    start_us: int  # isb_starttime, read from the block's bytes (tshark prints no value for it)
    end_us: int  # isb_endtime, likewise


def interface_statistics(path: str) -> list[InterfaceStatistics]:
    """The Interface Statistics Blocks of a pcapng file, as tshark's pcapng file dissector reads
    them (`-X read_format:"MIME Files Format"`), with the start and end options from the bytes."""
    t = subprocess.run(["tshark", "-X", "read_format:MIME Files Format", "-r", path, "-V"], capture_output=True, text=True, timeout=60)
    assert t.returncode == 0, t.stderr
    blocks = t.stdout.split("Block: ")[1:]
    out = []
    times = iter(_isb_times(path))
    for b in blocks:
        if not b.startswith("Interface Statistics Block"):
            continue

        def value(label: str, text: str = b) -> str:
            m = re.search(rf"^\s*{re.escape(label)}: (.+)$", text, re.M)
            assert m, f"{label} not in an ISB of {path}"
            return m.group(1).strip()

        start_us, end_us = next(times)
        out.append(
            InterfaceStatistics(
                int(value("Interface")),
                value("[Timestamp").rstrip("]"),
                int(value("Number of Accepted by Filter Packets")),
                int(value("Number of Delivered to the User Packets")),
                int(value("Number of Dropped Packets by OS")),
                int(value("Number of Dropped Packets")),
                start_us,
                end_us,
            )
        )
    return out


def _isb_times(path: str) -> list[tuple[int, int]]:
    """(isb_starttime, isb_endtime) in µs of each ISB, from the block's options."""
    with open(path, "rb") as f:
        data = f.read()
    off, found = 0, []
    while off + 12 <= len(data):
        kind, length = struct.unpack_from("<II", data, off)
        if kind == 5:
            opts, end = off + 8 + 12, off + length - 4
            values = {}
            while opts + 4 <= end:
                code, size = struct.unpack_from("<HH", data, opts)
                if code == 0:
                    break
                values[code] = data[opts + 4 : opts + 4 + size]
                opts += 4 + size + (-size % 4)
            hi_lo = {c: struct.unpack("<II", values[c]) for c in (2, 3)}
            found.append(tuple((hi_lo[c][0] << 32) | hi_lo[c][1] for c in (2, 3)))
        off += length
    return found  # type: ignore[return-value]
