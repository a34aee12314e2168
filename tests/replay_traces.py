"""Traces for the replayed capture source (node_agent/capture/replay_source.py): numbered UDP
datagrams, with a TCP segment after every third, at a given pace."""

from __future__ import annotations

import dpkt

from deploy.trafficgen import payload

HERE, THERE = "10.0.0.1", "10.0.0.2"  # the replayed packets' addresses


def frame(seq: int, *, udp: bool = True, size: int = 100) -> bytes:
    l4: dpkt.Packet
    if udp:
        l4 = dpkt.udp.UDP(sport=40000, dport=5001, data=payload(1, seq, size))
        proto = dpkt.ip.IP_PROTO_UDP
    else:
        l4 = dpkt.tcp.TCP(sport=40000, dport=443, data=payload(2, seq, size))
        proto = dpkt.ip.IP_PROTO_TCP
    ip = dpkt.ip.IP(src=bytes(map(int, HERE.split("."))), dst=bytes(map(int, THERE.split("."))), p=proto, data=l4)
    ip.len = len(bytes(ip))
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip))


def write_trace(path: str, count: int, *, interval_s: float = 0.002, every_third_tcp: bool = True) -> list[bytes]:
    """Writes `count` UDP datagrams (seq 0..count-1), with a TCP segment after every third when
    asked, `interval_s` apart; returns the UDP frames in order."""
    udp = []
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, snaplen=65535)
        t = 1_700_000_000.0
        for seq in range(count):
            data = frame(seq)
            udp.append(data)
            w.writepkt(data, ts=t)
            t += interval_s
            if every_third_tcp and seq % 3 == 2:
                w.writepkt(frame(seq, udp=False), ts=t)
                t += interval_s
    return udp
