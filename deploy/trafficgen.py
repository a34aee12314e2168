"""Sends a known, bounded set of UDP datagrams; used by the demo and the end-to-end tests.

Each payload starts with b"FCAP", a tag byte and a 4-byte sequence number, so a test can
tell exactly which datagrams a pcap holds. It refuses any destination outside loopback and
the private test ranges the local fleet uses (deploy/localfleet.py), and it never sends more
than --count datagrams.

    python -m deploy.trafficgen --dst 10.77.0.11 --dport 5001 --sport 40001 --count 20 --size 300 --tag 1
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import sys
import time

# Only the local fleet's own addresses (inside namespaces it created) and loopback.
ALLOWED = [
    ipaddress.ip_network("10.77.0.0/16"),
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
    ipaddress.ip_network("fd77::/16"),
]
MAX_COUNT = 1_000_000


def payload(tag: int, seq: int, size: int) -> bytes:
    head = b"FCAP" + struct.pack("!BI", tag, seq)
    return head + bytes((seq + i) & 0xFF for i in range(max(0, size - len(head))))


def parse_payload(data: bytes) -> tuple[int, int] | None:
    if len(data) < 9 or data[:4] != b"FCAP":
        return None
    return struct.unpack("!BI", data[4:9])


def send(dst: str, dport: int, *, sport: int = 0, count: int, size: int, tag: int, interval_s: float = 0.0) -> int:
    address = ipaddress.ip_address(dst)
    if not any(address in n for n in ALLOWED if n.version == address.version):
        raise SystemExit(f"refusing to send to {dst}: only the local test fleet and loopback are allowed")
    if not 0 < count <= MAX_COUNT:
        raise SystemExit(f"--count must be 1..{MAX_COUNT}")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        if sport:
            s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
        for seq in range(count):
            s.sendto(payload(tag, seq, size), (dst, dport))
            if interval_s:
                time.sleep(interval_s)
    return count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dst", required=True)
    p.add_argument("--dport", type=int, required=True)
    p.add_argument("--sport", type=int, default=0)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--size", type=int, default=100, help="UDP payload bytes")
    p.add_argument("--tag", type=int, default=0)
    p.add_argument("--interval", type=float, default=0.0, help="seconds between datagrams")
    a = p.parse_args(argv)
    n = send(a.dst, a.dport, sport=a.sport, count=a.count, size=a.size, tag=a.tag, interval_s=a.interval)
    print(f"sent {n} datagrams to {a.dst}:{a.dport}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
