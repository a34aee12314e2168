"""A fleet-wide byte budget: the files of all instances together stop short of fleetBytesLimit
by less than one record, never over it, and every instance stops with FleetBytesExceeded.
Instance 0 captures a flood on lo; instance 1 captures one end of a veth pair this test makes,
where nothing it filters flows: its first allowance must go back to the pool for instance 0 to use. A real
coordinator (embedded etcd) and two real agents."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time

import pytest

from fleetcap.clients import sdk
from tests import pcaps
from tests.integration.conftest import wait_every_instance
from tests.integration.fleet_support import free_udp_port, two_agents

pytestmark = pytest.mark.integration

PAYLOAD = 1000
RECORD = 16 + 14 + 20 + 8 + PAYLOAD
LIMIT = 1 << 20


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the test makes a veth pair and the agents need root")
    quiet = f"fcbud{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", quiet, "type", "veth", "peer", "name", quiet + "p"], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "link", "set", quiet, "up"], check=True, capture_output=True)
        with two_agents(tmp_path_factory.mktemp("budget"), agent1_interface=quiet) as f:
            yield f
    finally:
        subprocess.run(["ip", "link", "del", quiet], capture_output=True)  # its peer goes with it


def test_the_fleet_stops_within_one_record_of_its_budget(fleet):
    port = free_udp_port()
    with sdk.Client(fleet.api) as c:
        c.create(
            name="bud-1",
            target="web",
            target_type="AzureVMSS",
            resource_group="rg1",
            storage_account="local",
            file_path="/var/captures/bud-1.cap",
            bpf_filter=f"udp port {port}",
            fleet_bytes_limit=LIMIT,
            time_limit_in_seconds=60,
        )
        wait_every_instance(c, "bud-1")
        time.sleep(0.3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # 1,500 numbered datagrams, 500 a second
            start = time.monotonic()
            for i in range(1500):
                s.sendto(struct.pack(">I", i) + b"x" * (PAYLOAD - 4), ("127.0.0.1", port))
                time.sleep(max(0.0, start + (i + 1) / 500 - time.monotonic()))
        final = c.wait(name="bud-1", timeout_s=60)
    assert (final.packet_capture_status, final.stop_reason) == ("Stopped", "FleetBytesExceeded")
    busy, idle = final.instances
    assert [i.stop_reason for i in final.instances] == ["FleetBytesExceeded"] * 2
    assert (idle.packets_captured, idle.bytes_captured) == (0, 24)  # its header; its allowance went back
    total = busy.bytes_captured + idle.bytes_captured
    assert 0 <= LIMIT - total < RECORD, (LIMIT, total)
    # Instance 0's file: the first datagrams, every one, in order; paused for grants, it lost none.
    records = pcaps.read(str(fleet.root("0") / "bud-1.cap")).records
    assert len(records) == busy.packets_captured == (busy.bytes_captured - 24) // RECORD
    assert [r.dport for r in records] == [port] * len(records)
    data = (fleet.root("0") / "bud-1.cap").read_bytes()
    seqs = [struct.unpack(">I", data[24 + k * RECORD + 16 + 42 : 24 + k * RECORD + 16 + 46])[0] for k in range(len(records))]
    assert seqs == list(range(len(records)))
    assert busy.kernel_drops == 0


def test_a_fleet_budget_is_refused_where_it_cannot_hold(fleet):
    with sdk.Client(fleet.api) as c:
        for options, message in (
            ({"fleet_bytes_limit": 1000}, "fleetBytesLimit: 1000 is out of range 1048576..1125899906842624"),
            (
                {"fleet_bytes_limit": LIMIT, "continuous_capture": True},
                "fleetBytesLimit: applies to standard captures only (not with continuousCapture or standbyInSeconds)",
            ),
            (
                {"fleet_bytes_limit": LIMIT, "add_new_instances": True},
                "fleetBytesLimit: is not supported with addNewInstances: the budget is shared by the instances the capture starts with",
            ),
        ):
            with pytest.raises(sdk.InvalidCapture) as e:
                c.create(name="bud-bad", target="web", target_type="AzureVMSS", resource_group="rg1", storage_account="local", **options)
            assert e.value.message == message
