"""Reads pcaps independently of the code that wrote them: the classic pcap record layout is
parsed here with struct, and the frames are decoded by dpkt."""
from __future__ import annotations

import collections
import dataclasses
import socket
import struct

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
        _s, _us, caplen, wirelen = struct.unpack("<IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + caplen]
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
    return Record(caplen, wirelen, socket.inet_ntop(fam, ip.src), socket.inet_ntop(fam, ip.dst),
                  getattr(l4, "sport", 0), getattr(l4, "dport", 0),
                  tagseq[0] if tagseq else -1, tagseq[1] if tagseq else -1)


def flows(records: list[Record]) -> collections.Counter:
    """The multiset of (src, sport, dst, dport, tag, seq): which datagrams a pcap holds."""
    return collections.Counter((r.src, r.sport, r.dst, r.dport, r.tag, r.seq) for r in records)
