"""Faults as expected events, end to end: a killed agent, a killed coordinator, a network cut,
an etcd restart. etcd runs as its own process here so the coordinator can die without it."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests import pcaps
from tests.e2e.support import PAYLOAD, expected, running_fleet, wait_running
from tests.waiting import let_time_pass, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-faults")]
AGENT_TTL_S = 3


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with running_fleet(tmp_path_factory, "faultfleet", 3, agent_ttl_s=AGENT_TTL_S, external_etcd=True) as f:
        yield f


def instance(client, name: str, iid: str):
    """The instance's status, or None if the capture does not (yet) include it."""
    return next((i for i in client.get_status(name=name).instances if i.instance_id == iid), None)


def test_killed_agent_is_agent_stopped_and_recovers_its_file(fleet, client):
    i0, i1, i2 = fleet.instances
    client.create(
        name="kill-agent",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["0", "1"],
        time_limit_in_seconds=15,
        storage_account="local",
        file_path="/var/captures/ka.cap",
        filters=[{"protocol": "UDP", "localPort": "7001"}],
    )
    wait_running(client, "kill-agent")
    fleet.send_udp(i2, i0, dport=7001, sport=42000, count=10, size=PAYLOAD, tag=30)
    fleet.send_udp(i2, i1, dport=7001, sport=42001, count=12, size=PAYLOAD, tag=31)
    wait_for(
        lambda: instance(client, "kill-agent", "1").packets_captured == 12,
        what="instance 1 to report its 12 packets",
        timeout_s=20,
        interval_s=0.2,
    )
    time.sleep(0.5)  # the capture flushes its file every 0.2 s
    killed_at = time.monotonic()
    fleet.kill_agent(i1, signal.SIGKILL)
    lost = wait_for(
        lambda: (s := instance(client, "kill-agent", "1")).packet_capture_status == "Error" and s,
        what="instance 1 to be declared AgentStopped",
        timeout_s=30,
        interval_s=0.2,
    )
    detected_s = time.monotonic() - killed_at
    assert list(lost.packet_capture_error) == ["AgentStopped"]
    assert lost.stop_reason == "AgentStopped"
    # etcd expires leases within about a second of their TTL; the watch then acts at once.
    assert detected_s <= AGENT_TTL_S + 3, f"detected after {detected_s:.1f}s for a {AGENT_TTL_S}s lease"
    assert instance(client, "kill-agent", "0").packet_capture_status == "Running"  # the rest carries on
    # The file written up to the kill is readable on the instance, every packet in it.
    fleet.send_udp(i2, i0, dport=7001, sport=42000, count=5, size=PAYLOAD, tag=32)
    fleet.start_agent(i1)  # it finds the capture in its journal and uploads what was not stored
    final = client.wait(name="kill-agent", timeout_s=60)
    by_id = {i.instance_id: i for i in final.instances}
    assert (by_id["0"].packet_capture_status, by_id["0"].stop_reason) == ("Stopped", "TimeExceeded")
    assert (by_id["1"].packet_capture_status, by_id["1"].stop_reason) == ("Error", "AgentStopped")
    assert "hold what was captured until then" in by_id["1"].error_message
    local = os.path.join(i1.capture_root, "ka.cap")
    assert pcaps.flows(pcaps.read(local).records) == expected(i2, 42001, i1, 7001, 31, 12)
    # wait() does not hold for an instance in AgentStopped (its agent may never return); this
    # one did, and uploads what the coordinator had not stored.
    f = wait_for(
        lambda: (x := instance(client, "kill-agent", "1").files[0]).upload_complete and x,
        what="the restarted agent's upload",
        timeout_s=30,
        interval_s=0.2,
    )
    assert f.sha256 == f.stored_sha256
    with open(local, "rb") as a, open(f.storage_path.removeprefix("file://"), "rb") as b:
        assert a.read() == b.read()
    stored0 = pcaps.read(by_id["0"].files[0].storage_path.removeprefix("file://"))
    assert pcaps.flows(stored0.records) == expected(i2, 42000, i0, 7001, 30, 10) + expected(i2, 42000, i0, 7001, 32, 5)


def test_coordinator_killed_and_restarted_mid_capture(fleet, client):
    i0, i1, i2 = fleet.instances
    client.create(
        name="kill-coord",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["0", "1"],
        time_limit_in_seconds=14,
        storage_account="local",
        file_path="/var/captures/kc.cap",
        filters=[{"protocol": "UDP", "localPort": "7002"}],
    )
    wait_running(client, "kill-coord")
    fleet.send_udp(i2, i0, dport=7002, sport=42010, count=10, size=PAYLOAD, tag=33)
    fleet.send_udp(i2, i1, dport=7002, sport=42011, count=10, size=PAYLOAD, tag=33)
    fleet.kill_coordinator(signal.SIGKILL)
    fleet.send_udp(i2, i0, dport=7002, sport=42010, count=10, size=PAYLOAD, tag=34)
    fleet.send_udp(i2, i1, dport=7002, sport=42011, count=10, size=PAYLOAD, tag=34)
    time.sleep(1)
    fleet.start_coordinator()
    fleet.wait_agents()
    fleet.send_udp(i2, i0, dport=7002, sport=42010, count=10, size=PAYLOAD, tag=35)
    fleet.send_udp(i2, i1, dport=7002, sport=42011, count=10, size=PAYLOAD, tag=35)
    with fleet.client() as c:
        # While the coordinator was down nobody renewed the agents' leases; if they expire before
        # the agents are back, the instances show AgentStopped until their reports arrive.
        final = wait_for(
            lambda: (
                (x := c.get_status(name="kill-coord")).packet_capture_status == "Stopped"
                and all(i.files[0].upload_complete for i in x.instances)
                and x
            ),
            what="every instance stopped by its time limit with its file stored",
            timeout_s=60,
            interval_s=0.2,
        )
    assert final.stop_reason == "TimeExceeded"
    for inst, sport, dst in (("0", 42010, i0), ("1", 42011, i1)):
        got = next(i for i in final.instances if i.instance_id == inst)
        assert (got.stop_reason, list(got.packet_capture_error)) == ("TimeExceeded", [])
        pcap = pcaps.read(got.files[0].storage_path.removeprefix("file://"))
        want = expected(i2, sport, dst, 7002, 33, 10) + expected(i2, sport, dst, 7002, 34, 10) + expected(i2, sport, dst, 7002, 35, 10)
        assert pcaps.flows(pcap.records) == want


def test_network_cut_for_30s_loses_nothing(fleet, client):
    i0, i1, i2 = fleet.instances
    client.create(
        name="cut",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["2"],
        time_limit_in_seconds=40,
        storage_account="local",
        file_path="/var/captures/cut.cap",
        filters=[{"protocol": "UDP", "remotePort": "7003"}],
    )
    wait_running(client, "cut")
    fleet.send_udp(i2, i0, dport=7003, sport=42020, count=10, size=PAYLOAD, tag=36)  # also warms the ARP cache
    wait_for(
        lambda: instance(client, "cut", "2").files[0].uploaded_bytes > 24, what="the first packets stored", timeout_s=20, interval_s=0.2
    )
    fleet.cut_network(i2)
    try:
        fleet.send_udp(i2, i0, dport=7003, sport=42020, count=10, size=PAYLOAD, tag=37)  # leaves eth0, lost beyond
        lost = wait_for(
            lambda: (s := instance(client, "cut", "2")).packet_capture_status == "Error" and s,
            what="the instance to be declared AgentStopped during the cut",
            timeout_s=30,
            interval_s=0.2,
        )
        assert list(lost.packet_capture_error) == ["AgentStopped"]
        let_time_pass(30 - AGENT_TTL_S - 2, why="the network stays cut for 30 s in all")
    finally:
        fleet.restore_network(i2)
    fleet.send_udp(i2, i0, dport=7003, sport=42020, count=10, size=PAYLOAD, tag=38)
    # wait() returns on AgentStopped (the agent may never return); this one does, and its report
    # replaces the coordinator's guess with what really happened.
    inst = wait_for(
        lambda: (x := instance(client, "cut", "2")).packet_capture_status == "Stopped" and x.files[0].upload_complete and x,
        what="the agent to reconnect and the upload to finish",
        timeout_s=120,
        interval_s=0.2,
    )
    assert inst.stop_reason == "TimeExceeded"
    assert list(inst.packet_capture_error) == []
    f = inst.files[0]
    assert f.upload_complete
    assert f.sha256 == f.stored_sha256
    pcap = pcaps.read(f.storage_path.removeprefix("file://"))
    assert pcaps.flows(pcap.records) == sum(
        (expected(i2, 42020, i0, 7003, t, 10) for t in (37, 38)), start=expected(i2, 42020, i0, 7003, 36, 10)
    )


def test_etcd_restarted_mid_capture(fleet, client):
    i0, i1 = fleet.instances[:2]
    client.create(
        name="etcd-restart",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["1"],
        time_limit_in_seconds=12,
        storage_account="local",
        file_path="/var/captures/er.cap",
        filters=[{"protocol": "UDP", "localPort": "7004"}],
    )
    wait_running(client, "etcd-restart")
    fleet.send_udp(i0, i1, dport=7004, sport=42030, count=10, size=PAYLOAD, tag=39)
    fleet.stop_etcd()
    fleet.send_udp(i0, i1, dport=7004, sport=42030, count=10, size=PAYLOAD, tag=40)
    let_time_pass(2, why="etcd stays down while the agents report")
    fleet.start_etcd()
    fleet.send_udp(i0, i1, dport=7004, sport=42030, count=10, size=PAYLOAD, tag=41)
    final = wait_for(
        lambda: (
            (x := client.get_status(name="etcd-restart")).packet_capture_status == "Stopped"
            and x.instances[0].files[0].upload_complete
            and x
        ),
        what="the capture to stop by its time limit with its file stored",
        timeout_s=90,
        interval_s=0.2,
    )
    assert fleet.coordinator.poll() is None, "the coordinator must survive an etcd restart"
    (inst,) = final.instances
    assert (inst.stop_reason, list(inst.packet_capture_error)) == ("TimeExceeded", [])
    pcap = pcaps.read(inst.files[0].storage_path.removeprefix("file://"))
    assert pcaps.flows(pcap.records) == sum(
        (expected(i0, 42030, i1, 7004, t, 10) for t in (40, 41)), start=expected(i0, 42030, i1, 7004, 39, 10)
    )


def test_instance_joining_a_running_capture(fleet, client):
    """Azure's default: a capture keeps its instances. With addNewInstances, an instance that
    registers while it runs joins with the same settings."""
    i0, i1, i2 = fleet.instances
    fleet.kill_agent(i2, signal.SIGTERM)
    wait_for(lambda: len(client.list_agents()) == 2, what="instance 2 to leave the scale set", timeout_s=20, interval_s=0.2)
    for name, add in (("join", True), ("nojoin", False)):
        client.create(
            name=name,
            target="web",
            target_type="AzureVMSS",
            resource_group="rg1",
            time_limit_in_seconds=10,
            storage_account="local",
            file_path=f"/var/captures/{name}.cap",
            add_new_instances=add,
            filters=[{"protocol": "UDP", "localPort": "7005"}],
        )
        assert [i.instance_id for i in client.get_status(name=name).instances] == ["0", "1"]
    fleet.start_agent(i2)
    joined = wait_for(
        lambda: (x := instance(client, "join", "2")) is not None and x.packet_capture_status == "Running" and x,
        what="instance 2 to join and run",
        timeout_s=20,
        interval_s=0.2,
    )
    assert joined.id.endswith("/virtualMachineScaleSets/web/virtualMachines/2")
    fleet.send_udp(i0, i2, dport=7005, sport=42040, count=6, size=PAYLOAD, tag=42)
    final = wait_for(
        lambda: (
            (x := client.get_status(name="join")).packet_capture_status == "Stopped"
            and all(i.files[0].upload_complete for i in x.instances)
            and x
        ),
        what="the capture to finish",
        timeout_s=60,
        interval_s=0.2,
    )
    (late,) = [i for i in final.instances if i.instance_id == "2"]
    assert late.stop_reason == "TimeExceeded"
    assert pcaps.flows(pcaps.read(late.files[0].storage_path.removeprefix("file://")).records) == expected(i0, 42040, i2, 7005, 42, 6)
    assert [i.instance_id for i in client.get_status(name="nojoin").instances] == ["0", "1"]
