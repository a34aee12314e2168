"""Two coordinator replicas on one etcd: agents spread over both, the API served by either,
the leader killed mid-capture. Leadership moves, the agents move, the capture completes once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from fleetcap.clients import sdk
from tests import pcaps
from tests.e2e.support import PAYLOAD, expected, running_fleet, wait_running
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-ha")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with running_fleet(tmp_path_factory, "hafleet", 3, agent_ttl_s=3, external_etcd=True, coordinators=2) as f:
        yield f


def leader_of(fleet) -> int | None:
    """The replica whose log says it leads now (the last word of either log)."""
    last = {}
    for i in range(2):
        path = fleet.log_path("coordinator" if i == 0 else f"coordinator-{i}")
        with open(path) as f:
            for line in f:
                if "became the leader" in line or "lost the leadership" in line:
                    last[i] = (line[:23], "became" in line)
    leading = [i for i, (_, became) in last.items() if became]
    return max(leading, key=lambda i: last[i][0]) if leading else None


def test_leader_killed_mid_capture(fleet, client):
    i0, i1, i2 = fleet.instances
    wait_for(lambda: leader_of(fleet) is not None, what="a leader", timeout_s=20, interval_s=0.2)
    leader = leader_of(fleet)
    other = 1 - leader
    # The API call goes to the replica that will survive; half the agents are on the other one.
    with sdk.Client(f"unix:{fleet.replica_socket(other)}", token=fleet.token) as c:
        c.create(
            name="ha",
            target="web",
            target_type="AzureVMSS",
            resource_group="rg1",
            time_limit_in_seconds=14,
            storage_account="local",
            file_path="/var/captures/ha.cap",
            filters=[{"protocol": "UDP", "localPort": "7100"}],
        )
        wait_running(c, "ha")
    fleet.send_udp(i2, i0, dport=7100, sport=43000, count=10, size=PAYLOAD, tag=50)
    fleet.send_udp(i0, i1, dport=7100, sport=43001, count=10, size=PAYLOAD, tag=50)
    killed = time.monotonic()
    fleet.kill_coordinator(signal.SIGKILL, index=leader)
    wait_for(lambda: leader_of(fleet) == other, what="the other replica to lead", timeout_s=15, interval_s=0.2)
    moved_s = time.monotonic() - killed
    assert moved_s < 8, f"leadership moved after {moved_s:.1f}s"
    fleet.send_udp(i2, i0, dport=7100, sport=43000, count=10, size=PAYLOAD, tag=51)
    fleet.send_udp(i0, i1, dport=7100, sport=43001, count=10, size=PAYLOAD, tag=51)
    fleet.send_udp(i1, i2, dport=7100, sport=43002, count=10, size=PAYLOAD, tag=51)
    with sdk.Client(f"unix:{fleet.replica_socket(other)}", token=fleet.token) as c:
        final = wait_for(
            lambda: (
                (x := c.get_status(name="ha")).packet_capture_status == "Stopped"
                and all(i.files[0].upload_complete for i in x.instances)
                and x
            ),
            what="every instance stopped by its time limit with its file stored",
            timeout_s=90,
            interval_s=0.2,
        )
    assert [(i.instance_id, i.stop_reason, list(i.packet_capture_error)) for i in final.instances] == [
        ("0", "TimeExceeded", []),
        ("1", "TimeExceeded", []),
        ("2", "TimeExceeded", []),
    ]
    want = {
        "0": expected(i2, 43000, i0, 7100, 50, 10) + expected(i2, 43000, i0, 7100, 51, 10),
        "1": expected(i0, 43001, i1, 7100, 50, 10) + expected(i0, 43001, i1, 7100, 51, 10),
        "2": expected(i1, 43002, i2, 7100, 51, 10),
    }
    for inst in final.instances:
        pcap = pcaps.read(inst.files[0].storage_path.removeprefix("file://"))
        assert pcaps.flows(pcap.records) == want[inst.instance_id]  # nothing lost, nothing twice
        local = os.path.join(fleet.instances[int(inst.instance_id)].capture_root, "ha.cap")
        assert inst.files[0].sha256 == inst.files[0].stored_sha256
        assert os.path.getsize(local) == pcap.size
