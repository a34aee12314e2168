"""`capture create --dry-run`: every check a create makes, and the instances it would touch with
an estimate of what each would write, from its agent's interface counters; nothing is created.
A real coordinator (embedded etcd) and agent vm1 capturing on lo (heartbeats every 1.25 s)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from fleetcap.clients import sdk
from fleetcap.v1 import captures_pb2 as pb
from tests.integration.conftest import ROOT
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

VM1 = "/subscriptions/local/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"
RATE, SIZE = 2000, 1000  # datagrams per second, payload bytes


def flood(stop: threading.Event) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        start, sent = time.monotonic(), 0
        while not stop.is_set():
            s.sendto(b"d" * SIZE, ("127.0.0.1", 9))
            sent += 1
            ahead = sent / RATE - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)


def test_a_dry_run_estimates_from_the_interface_and_creates_nothing(coordinator):
    stop = threading.Event()
    sender = threading.Thread(target=flood, args=(stop,))
    sender.start()
    try:
        with sdk.Client(coordinator) as c:

            def measured_the_flood() -> tuple[pb.PacketCaptureResult, pb.DryRunResult] | None:
                # The agent measures its interface between heartbeats: a rate from before the
                # flood began is not yet the flood's.
                capture, result = c.dry_run(
                    name="dry-1",
                    target="vm1",
                    resource_group="rg1",
                    storage_account="local",
                    bytes_to_capture_per_packet=100,
                    filters=[{"protocol": "UDP"}],
                )
                row = result.instances[0]
                return (capture, result) if row.measured and row.interface_packets_per_second >= 0.5 * 2 * RATE else None

            capture, result = wait_for(measured_the_flood, what="a rate measured during the flood", timeout_s=20, interval_s=0.5)
            whole, result_whole = c.dry_run(name="dry-1", target="vm1", resource_group="rg1", storage_account="local")
    finally:
        stop.set()
        sender.join()
    assert (capture.name, capture.properties.target, capture.properties.bytes_to_capture_per_packet) == ("dry-1", VM1, 100)
    [row] = result.instances
    assert (row.id, row.instance_id, row.connected, row.measured) == (VM1, "vm1", True, True)
    # lo counts each datagram as sent and as received: our own 2 x 2,000/s (other tests may add to
    # it); half of that at least, for a sender thread slowed by a loaded machine.
    assert row.interface_packets_per_second >= 0.5 * 2 * RATE, row
    assert row.interface_bytes_per_second >= 0.5 * 2 * RATE * SIZE, row
    assert (
        row.estimated_bytes_per_second
        == min(row.interface_bytes_per_second, 100 * row.interface_packets_per_second) + 16 * row.interface_packets_per_second
    )
    assert result.estimated_bytes_per_second == row.estimated_bytes_per_second
    [w] = result_whole.instances
    assert w.estimated_bytes_per_second == w.interface_bytes_per_second + 16 * w.interface_packets_per_second
    with sdk.Client(coordinator) as c:
        assert "dry-1" not in [x.name for x in c.list()]
        with pytest.raises(sdk.CaptureNotFound):
            c.get(name="dry-1")


def test_a_dry_run_fails_as_the_create_would(coordinator):
    with sdk.Client(coordinator) as c:
        with pytest.raises(sdk.CaptureNotFound):
            c.dry_run(name="dry-2", target="vm9", resource_group="rg1", file_path="/var/captures/d.cap")
        with pytest.raises(sdk.InvalidCapture) as e:
            c.dry_run(name="dry-2", target="vm1", resource_group="rg1", file_path="/var/captures/d.cap", time_limit_in_seconds=18001)
        assert e.value.message == "timeLimitInSeconds: 18001 is out of range 0..18000"
        c.create(
            name="dry-3",
            target="vm1",
            resource_group="rg1",
            file_path="/var/captures/dry-3.cap",
            time_limit_in_seconds=1,
            filters=[{"protocol": "UDP", "localPort": "9"}],
        )
        with pytest.raises(sdk.CaptureAlreadyExists):
            c.dry_run(name="dry-3", target="vm1", resource_group="rg1", file_path="/var/captures/d.cap")
        c.wait(name="dry-3", timeout_s=30)
        c.delete(name="dry-3")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetcap",
            "--coordinator",
            coordinator,
            "capture",
            "create",
            "-n",
            "dry-4",
            "-g",
            "rg1",
            "--vm",
            "vm1",
            "--file-path",
            "/var/captures/d.cap",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [(i["instanceId"], i["connected"]) for i in out["instances"]] == [("vm1", True)]
    with sdk.Client(coordinator) as c, pytest.raises(sdk.CaptureNotFound):
        c.get(name="dry-4")
