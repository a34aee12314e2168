"""Prometheus /metrics on the coordinator and on the agent, after a capture whose packets are
known exactly: the figures must match what the capture did."""
from __future__ import annotations

import re
import socket
import time
import urllib.request

import pytest

from fleetcap.clients import sdk

pytestmark = pytest.mark.integration


def scrape(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) fleetcap_[a-z_]+ ", line), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def send_udp(port: int, count: int, size: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            s.sendto(bytes([i % 256]) * size, ("127.0.0.1", port))


def test_metrics_follow_a_capture(coordinator):
    # One capture of exactly 5 datagrams of 100 bytes to port 9999 (each also seen leaving on lo: the
    # filter is on the local port, and lo shows every datagram once).
    with sdk.Client(coordinator) as c:
        c.create(name="m-1", target="vm1", resource_group="rg1", storage_account="local",
                 file_path="/var/captures/m-1.cap", time_limit_in_seconds=3,
                 filters=[{"protocol": "UDP", "localPort": "9999"}])
        deadline = time.monotonic() + 10
        while c.get_status(name="m-1").packet_capture_status != "Running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        while (agent_running := scrape(coordinator.agent_metrics))["fleetcap_agent_active_captures"] != 1:
            assert time.monotonic() < deadline, agent_running
            time.sleep(0.1)
        send_udp(9999, 5, 100)
        final = c.wait(name="m-1", timeout_s=30)
        with pytest.raises(sdk.CaptureNotFound):
            c.get(name="m-missing")
    [inst] = final.instances
    assert inst.packets_captured == 5 and inst.bytes_captured == 24 + 5 * (16 + 28 + 14 + 100)

    agent = scrape(coordinator.agent_metrics)
    assert agent['fleetcap_agent_packets_captured_total{capture="m-1"}'] == 5
    assert agent['fleetcap_agent_captured_bytes_total{capture="m-1"}'] == inst.bytes_captured
    assert agent['fleetcap_agent_kernel_drops_total{capture="m-1"}'] == 0
    assert agent['fleetcap_agent_upload_pending_bytes{capture="m-1"}'] == 0
    assert agent["fleetcap_agent_active_captures"] == 0

    time.sleep(5.1)  # the coordinator's deployment gauges refresh at most every 5 s
    coord = scrape(coordinator.coordinator_metrics)
    # This module has its own coordinator: every figure is exact.
    assert coord['fleetcap_captures{status="Stopped"}'] == 1
    assert coord['fleetcap_capture_instances{status="Stopped"}'] == 1
    assert coord['fleetcap_captures{status="Running"}'] == 0
    assert coord["fleetcap_agents_connected"] == 1
    assert coord["fleetcap_upload_lag_bytes"] == 0
    assert coord['fleetcap_storage_written_bytes_total{account="local"}'] == inst.bytes_captured
    assert coord["fleetcap_stored_bytes"] == inst.bytes_captured
    assert coord['fleetcap_api_requests_total{method="Create",code="OK"}'] == 1
    assert coord['fleetcap_api_errors_total{method="Get",code="NOT_FOUND"}'] == 1
    assert coord['fleetcap_api_requests_total{method="Get",code="NOT_FOUND"}'] == 1
    assert 'fleetcap_api_errors_total{method="Create",code="OK"}' not in coord
