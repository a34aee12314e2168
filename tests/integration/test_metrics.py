"""Prometheus /metrics on the coordinator and on the agent, after a capture whose packets are
known exactly: the figures must match what the capture did."""

from __future__ import annotations

import re
import socket
import urllib.request

import pytest

from fleetcap.clients import sdk
from tests.metrics_doc import documented, served
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def exposition(address: str, accept: str = "") -> tuple[str, str]:
    request = urllib.request.Request(f"http://{address}/metrics", headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.headers["Content-Type"], r.read().decode()


def scrape(address: str) -> dict[str, float]:
    content_type, text = exposition(address)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) (fleetcap|process|python)_[a-z_]+ ", line), line
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
        c.create(
            name="m-1",
            target="vm1",
            resource_group="rg1",
            storage_account="local",
            file_path="/var/captures/m-1.cap",
            time_limit_in_seconds=3,
            filters=[{"protocol": "UDP", "localPort": "9999"}],
        )
        wait_for(lambda: c.get_status(name="m-1").packet_capture_status == "Running", what="m-1 Running", timeout_s=10)
        wait_for(
            lambda: scrape(coordinator.agent_metrics)["fleetcap_agent_active_captures"] == 1,
            what="the agent's active_captures gauge at 1",
            timeout_s=10,
        )
        send_udp(9999, 5, 100)
        final = c.wait(name="m-1", timeout_s=30)
        with pytest.raises(sdk.CaptureNotFound):
            c.get(name="m-missing")
    [inst] = final.instances
    assert inst.packets_captured == 5
    assert inst.bytes_captured == 24 + 5 * (16 + 28 + 14 + 100)

    agent = scrape(coordinator.agent_metrics)
    assert agent['fleetcap_agent_packets_captured_total{capture="m-1"}'] == 5
    assert agent['fleetcap_agent_captured_bytes_total{capture="m-1"}'] == inst.bytes_captured
    assert agent['fleetcap_agent_kernel_drops_total{capture="m-1"}'] == 0
    assert agent['fleetcap_agent_upload_pending_bytes{capture="m-1"}'] == 0
    assert agent["fleetcap_agent_active_captures"] == 0

    # The coordinator's deployment gauges refresh at most every 5 s.
    coord = wait_for(
        lambda: (m := scrape(coordinator.coordinator_metrics)).get('fleetcap_captures{status="Stopped"}') == 1 and m,
        what="the deployment gauges to show the stopped capture",
        timeout_s=15,
        interval_s=0.5,
    )
    # This module has its own coordinator: every figure is exact.
    assert coord['fleetcap_captures{status="Stopped"}'] == 1
    assert coord['fleetcap_capture_instances{status="Stopped"}'] == 1
    assert coord['fleetcap_captures{status="Running"}'] == 0
    assert coord["fleetcap_agents_connected"] == 1
    assert coord["fleetcap_upload_lag_bytes"] == 0
    assert coord['fleetcap_storage_written_bytes_total{account="local"}'] == inst.bytes_captured
    assert coord["fleetcap_stored_bytes"] == inst.bytes_captured
    assert coord['fleetcap_api_requests_total{code="OK",method="Create"}'] == 1
    assert coord['fleetcap_api_errors_total{code="NOT_FOUND",method="Get"}'] == 1
    assert coord['fleetcap_api_requests_total{code="NOT_FOUND",method="Get"}'] == 1
    assert 'fleetcap_api_errors_total{code="OK",method="Create"}' not in coord
    # The histograms: one Create call, one instance reaching Running, one file uploaded.
    assert coord['fleetcap_api_request_duration_seconds_count{method="Create"}'] == 1
    assert 0 < coord['fleetcap_api_request_duration_seconds_sum{method="Create"}'] < 10
    assert coord["fleetcap_fanout_duration_seconds_count"] == 1
    assert 0 < coord["fleetcap_fanout_duration_seconds_sum"] < 10
    assert coord['fleetcap_upload_duration_seconds_count{account="local"}'] == 1
    assert coord['fleetcap_storage_commit_duration_seconds_count{account="local"}'] == 1
    assert coord['fleetcap_upload_duration_seconds_bucket{account="local",le="+Inf"}'] == 1
    # Each daemon's own CPU and memory, and what it runs.
    for daemon, figures in (("coordinator", coord), ("agent", agent)):
        assert figures["process_resident_memory_bytes"] > 10 << 20
        assert figures["process_cpu_seconds_total"] > 0
        [build] = [k for k in figures if k.startswith("fleetcap_build_info{")]
        assert f'component="{daemon}"' in build
        assert figures[build] == 1
    # docs/operations.md lists every fleetcap_ metric these daemons serve, with its type and
    # labels (every labelled series has samples by now, so the labels are compared too).
    got = served(exposition(coordinator.coordinator_metrics)[1]) | served(exposition(coordinator.agent_metrics)[1])
    assert got == {k: v for k, v in documented().items() if not k.startswith("fleetcap_gateway_")}


def test_openmetrics_on_request(coordinator):
    content_type, text = exposition(coordinator.coordinator_metrics, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n")
    assert "# TYPE fleetcap_api_requests counter" in text
