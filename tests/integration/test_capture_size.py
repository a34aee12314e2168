"""The capture size never decides which packets are captured: the filter sees the whole
packet, and each record holds exactly the first N bytes of it. On lo, with the real capture
engine; the reference is the frames tcpdump records whole at the same time (read with dpkt).

lo is shared with every other test running at the same time, so each case matches only its own
traffic: a port no one else uses, or an ICMP echo id of its own."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time

import dpkt
import pytest

from fleetcap.core.transport import free_port
from fleetcap.core.vocabulary import StopReason
from fleetcap.node_agent.capture.session import CaptureSession, CaptureSpec
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("lo-capture")]


COUNT = 5


def traffic(kind: str) -> tuple[str, int, int]:
    """The filter that matches only this case's traffic, the port or echo id it uses, and how
    many frames tcpdump must see (an echo is answered, a SYN is answered by a SYN-ACK)."""
    if kind == "icmp":
        echo_id = random.randrange(1024, 65535)
        return f"icmp and icmp[4:2] == {echo_id}", echo_id, 2 * COUNT
    port = free_port()
    if kind == "udp":
        return f"udp port {port}", port, COUNT
    return f"tcp port {port} and tcp[tcpflags] & tcp-syn != 0", port, 2 * COUNT


def send(kind: str, port_or_id: int) -> None:
    if kind == "tcp":
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port_or_id))
            server.listen()
            for _ in range(COUNT):
                with socket.create_connection(("127.0.0.1", port_or_id)):
                    server.accept()[0].close()
        return
    for i in range(COUNT):
        if kind == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(bytes([i]) * 80, ("127.0.0.1", port_or_id))
        else:  # icmp: an echo request to lo (the kernel answers it)
            echo = dpkt.icmp.ICMP(type=dpkt.icmp.ICMP_ECHO, data=dpkt.icmp.ICMP.Echo(id=port_or_id, seq=i, data=b"p" * 56))
            with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
                s.sendto(bytes(echo), ("127.0.0.1", 0))


def frames(path: str) -> list[tuple[bytes, int]]:
    with open(path, "rb") as f:
        return [(bytes(buf), len(buf)) for _, buf in dpkt.pcap.Reader(f)]


@pytest.mark.parametrize("snaplen", [14, 34, 42, 54, 60])
@pytest.mark.parametrize("kind", ["udp", "icmp", "tcp"])
def test_every_matching_packet_is_kept_cut_to_the_capture_size(tmp_path, requires_root, snaplen, kind):
    expression, port_or_id, expected = traffic(kind)
    reference = tmp_path / "reference.pcap"
    # --immediate-mode: without it tcpdump holds packets until its buffer times out, and may
    # exit before writing the last ones
    tcpdump = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-s", "0", "-U", "--immediate-mode", "-w", str(reference), expression],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    session = CaptureSession(
        CaptureSpec(
            name="size",
            capture_id="size@1",
            interface="lo",
            root=str(tmp_path),
            path=str(tmp_path / "out.cap"),
            expression=expression,
            snaplen=snaplen,
        )
    )
    session.start()
    try:
        wait_for(
            lambda: session.counters.status == "Running" and reference.exists() and os.path.getsize(reference) >= 24,
            what="both captures to start",
            timeout_s=10,
            interval_s=0.05,
        )
        assert session.counters.status == "Running", session.counters
        time.sleep(0.5)  # tcpdump's own start: it prints nothing when it is listening
        send(kind, port_or_id)
        wait_for(
            lambda: len(frames(str(reference))) >= expected, what=f"tcpdump to record {expected} frames", timeout_s=10, interval_s=0.05
        )
        wait_for(
            lambda: session.counters.packets >= expected, what=f"the session to count {expected} packets", timeout_s=10, interval_s=0.05
        )
    finally:
        session.stop(StopReason.STOPPED_BY_USER)
        session.join(10)
        tcpdump.terminate()
        tcpdump.wait(10)
    whole = frames(str(reference))
    got = frames(str(tmp_path / "out.cap"))
    assert len(whole) == expected
    assert [data for data, _ in got] == [data[:snaplen] for data, _ in whole]
    with open(tmp_path / "out.cap", "rb") as f:
        assert dpkt.pcap.Reader(f).snaplen == snaplen
