"""The capture size never decides which packets are captured: the filter sees the whole
packet, and each record holds exactly the first N bytes of it. On lo, with the real capture
engine; the reference is the frames tcpdump records whole at the same time (read with dpkt)."""
from __future__ import annotations

import os
import socket
import subprocess
import time

import dpkt
import pytest

from fleetcap.core.vocabulary import StopReason
from fleetcap.node_agent.capture.session import CaptureSession, CaptureSpec

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("lo-capture")]


def send(kind: str, port: int, count: int) -> None:
    for i in range(count):
        if kind == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(bytes([i]) * 80, ("127.0.0.1", port))
        elif kind == "tcp":
            with socket.socket() as server:
                server.bind(("127.0.0.1", 0))
                server.listen()
                with socket.create_connection(("127.0.0.1", server.getsockname()[1])):
                    pass
        else:  # icmp: an echo request to lo (the kernel answers it)
            echo = dpkt.icmp.ICMP(type=dpkt.icmp.ICMP_ECHO, data=dpkt.icmp.ICMP.Echo(id=7, seq=i, data=b"p" * 56))
            with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
                s.sendto(bytes(echo), ("127.0.0.1", 0))


def frames(path: str) -> list[tuple[bytes, int]]:
    with open(path, "rb") as f:
        return [(bytes(buf), len(buf)) for _, buf in dpkt.pcap.Reader(f)]


@pytest.mark.parametrize("snaplen", [14, 34, 42, 54, 60])
@pytest.mark.parametrize("kind,expression", [("udp", "udp port 47001"), ("icmp", "icmp"),
                                              ("tcp", "tcp and host 127.0.0.1 and tcp[tcpflags] & tcp-syn != 0")])
def test_every_matching_packet_is_kept_cut_to_the_capture_size(tmp_path, requires_root, snaplen, kind, expression):
    reference = tmp_path / "reference.pcap"
    tcpdump = subprocess.Popen(["tcpdump", "-i", "lo", "-s", "0", "-U", "-w", str(reference), expression],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    session = CaptureSession(CaptureSpec(name="size", capture_id="size@1", interface="lo", root=str(tmp_path),
                                         path=str(tmp_path / "out.cap"), expression=expression, snaplen=snaplen))
    session.start()
    try:
        deadline = time.monotonic() + 10
        while session.counters.status != "Running" or not reference.exists() or os.path.getsize(reference) < 24:
            assert time.monotonic() < deadline and session.counters.status != "Error", session.counters
            time.sleep(0.05)
        time.sleep(0.5)  # tcpdump's own start: it prints nothing when it is listening
        send(kind, 47001, 5)
        time.sleep(0.5)
    finally:
        session.stop(StopReason.STOPPED_BY_USER)
        session.join(10)
        tcpdump.terminate()
        tcpdump.wait(10)
    whole = frames(str(reference))
    got = frames(str(tmp_path / "out.cap"))
    assert len(whole) >= 5
    assert [data for data, _ in got] == [data[:snaplen] for data, _ in whole]
    with open(tmp_path / "out.cap", "rb") as f:
        assert dpkt.pcap.Reader(f).snaplen == snaplen
