"""A running capture's bytes are stored, acknowledged and readable while it runs, even when
packets trickle in (a datagram every 300 ms: never a quiet second, never a full fsync batch)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from fleetcap.clients import sdk
from fleetcap.v1 import captures_pb2 as pb
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def test_trickle_is_stored_while_running(coordinator):
    stop = threading.Event()

    def trickle() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                s.sendto(b"t" * 60, ("127.0.0.1", 9997))
                time.sleep(0.3)

    sender = threading.Thread(target=trickle)
    with sdk.Client(coordinator) as c:
        c.create(
            name="live-1",
            target="vm1",
            resource_group="rg1",
            storage_account="local",
            file_path="/var/captures/live-1.cap",
            time_limit_in_seconds=12,
            filters=[{"protocol": "UDP", "localPort": "9997"}],
        )
        sender.start()
        try:

            def stored_while_running() -> pb.InstanceStatus | None:
                inst = c.get_status(name="live-1").instances[0]
                return inst if inst.packet_capture_status == "Running" and inst.files and inst.files[0].uploaded_bytes > 24 else None

            seen = wait_for(
                stored_while_running, what="bytes past the pcap header stored while the capture runs", timeout_s=8, interval_s=0.2
            )
            # What is acknowledged is readable now, byte for byte the start of the instance's file.
            stored = b"".join(c.read_file(name="live-1", instance_id=seen.instance_id))
            assert len(stored) >= seen.files[0].uploaded_bytes
            assert stored[:4] == b"\xd4\xc3\xb2\xa1"  # pcap, microseconds, little-endian
            assert c.get_status(name="live-1").packet_capture_status == "Running"
        finally:
            stop.set()
            sender.join()
        c.stop(name="live-1")
        final = c.wait(name="live-1", timeout_s=30)
    f = final.instances[0].files[0]
    assert (final.stop_reason, f.upload_complete, f.stored_sha256) == ("StoppedByUser", True, f.sha256)
