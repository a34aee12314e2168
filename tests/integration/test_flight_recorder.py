"""The flight recorder: a capture created with standbyInSeconds arms every instance to keep the
last seconds of matching packets in a bounded ring, stores nothing, and on a trigger keeps the
window from before it, records the seconds after it, and then stores the file like any capture.
A real coordinator (embedded etcd) and two real agents, instances 0 and 1 of scale set `web`,
capturing on lo."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import pytest

from fleetcap.clients import sdk
from fleetcap.clients.errors import ErrorCode
from tests import pcaps
from tests.integration.conftest import wait_every_instance
from tests.integration.fleet_support import Fleet, free_udp_port, two_agents
from tests.waiting import let_time_pass, wait_for

pytestmark = pytest.mark.integration

PAYLOAD = 100
RING = 8 << 20  # the smallest ring


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with two_agents(tmp_path_factory.mktemp("recorder")) as f:
        yield f


def send(port: int, tag: bytes, count: int, size: int = PAYLOAD) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            s.sendto(tag + bytes([i % 256]) * (size - len(tag)), ("127.0.0.1", port))


def arm(c: sdk.Client, name: str, port: int, standby: int, **options) -> None:
    c.create(
        name=name,
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        storage_account="local",
        file_path=f"/var/captures/{name}.cap",
        filters=[{"protocol": "UDP", "localPort": str(port)}],
        standby_in_seconds=standby,
        **options,
    )
    assert wait_every_instance(c, name, "Standby").packet_capture_status == "Standby"
    time.sleep(0.3)  # the filter is attached once the status is reported


def segments(fleet: Fleet, instance: str, name: str) -> list[str]:
    return [n for n in os.listdir(fleet.root(instance)) if n.startswith(f".{name}.cap.standby-")]


def ring_bytes(fleet: Fleet, instance: str, name: str) -> int:
    total = 0
    for n in segments(fleet, instance, name):
        try:
            total += os.path.getsize(fleet.root(instance) / n)
        except FileNotFoundError:
            pass  # dropped between the listing and the stat
    return total


def tags(path: str, port: int) -> list[bytes]:
    """Each packet's first payload byte, read by tshark; every packet must be to `port`."""
    t = subprocess.run(
        ["tshark", "-r", path, "-T", "fields", "-e", "udp.dstport", "-e", "data.data"], capture_output=True, text=True, timeout=60
    )
    assert t.returncode == 0, t.stderr
    rows = [line.split("\t") for line in t.stdout.splitlines()]
    assert {r[0] for r in rows} <= {str(port)}
    return [bytes.fromhex(r[1][:2]) for r in rows]


def test_the_trigger_keeps_the_window_before_it_and_the_seconds_after_it(fleet):
    """The issue's case: packets sent 20 s before the trigger of a 30 s standby are in the file;
    packets sent 35 s before it are not; packets of the seconds after it are."""
    port = free_udp_port()
    with sdk.Client(fleet.api) as c:
        arm(c, "fr-1", port, 30)
        assert not os.path.exists(fleet.root("0") / "fr-1.cap")  # armed: nothing is written where the API says
        t_old = time.monotonic()
        send(port, b"A", 5)  # leaves the window before the trigger
        let_time_pass(t_old + 15 - time.monotonic(), why="the first packets are 15 s older than the next")
        t_in = time.monotonic()
        send(port, b"B", 5)  # 20 s before the trigger: kept
        wait_for(
            lambda: [i.packets_captured for i in c.get_status(name="fr-1").instances] == [10, 10],
            what='[i.packets_captured for i in c.get_status(name="fr-1").instances] == [10, 10]',
            timeout_s=4,
            interval_s=0.1,
            detail=lambda: c.get_status(name="fr-1"),
        )  # what each ring holds
        status = c.get_status(name="fr-1")
        assert status.packet_capture_status == "Standby"
        assert not status.trigger_time
        assert not any(fleet.storage.rglob("fr-1*")) if fleet.storage.exists() else True  # nothing stored
        let_time_pass(t_in + 20 - time.monotonic(), why="the trigger comes 20 s after the second packets")
        triggered = c.trigger(name="fr-1", after_in_seconds=3, note="INC-1")
        assert triggered.packet_capture_status == "Triggered"
        assert triggered.trigger_source == "admin (INC-1)"
        assert triggered.trigger_after_seconds == 3
        assert triggered.trigger_time.endswith("000Z")
        assert len(triggered.trigger_time) == len("2026-12-02T21:00:00.000000Z")
        send(port, b"C", 3)  # within the seconds after: kept
        again = c.trigger(name="fr-1", after_in_seconds=60, note="second")  # idempotent: the first one stands
        assert (again.trigger_time, again.trigger_source, again.trigger_after_seconds) == (triggered.trigger_time, "admin (INC-1)", 3)
        final = c.wait(name="fr-1", timeout_s=60)
    assert (final.packet_capture_status, final.stop_reason) == ("Stopped", "TriggerWindowEnded")
    assert final.trigger_time == triggered.trigger_time
    for inst in final.instances:
        assert (inst.packet_capture_status, inst.stop_reason) == ("Stopped", "TriggerWindowEnded")
        assert (inst.trigger_time, inst.trigger_source) == (triggered.trigger_time, "admin (INC-1)")
        assert inst.packets_captured == 8
        assert [(f.file_path, f.upload_complete, f.size_bytes == f.uploaded_bytes) for f in inst.files] == [
            ("/var/captures/fr-1.cap", True, True)
        ]
        local = str(fleet.root(inst.instance_id) / "fr-1.cap")
        assert tags(local, port) == [b"B"] * 5 + [b"C"] * 3
        assert [(r.dport, r.caplen) for r in pcaps.read(local).records] == [(port, 14 + 20 + 8 + PAYLOAD)] * 8
        assert os.path.getsize(local) == inst.bytes_captured == 24 + 8 * (16 + 14 + 20 + 8 + PAYLOAD)
        stored = fleet.storage / inst.files[0].storage_path.split("/storage/", 1)[1]
        assert stored.read_bytes() == open(local, "rb").read()
        assert segments(fleet, inst.instance_id, "fr-1") == []  # the ring is gone


def test_the_ring_never_exceeds_its_byte_cap_while_armed_and_a_stop_stores_nothing(fleet):
    port = free_udp_port()
    with sdk.Client(fleet.api) as c:
        arm(c, "fr-2", port, 3, standby_bytes=RING)
        done = threading.Event()
        peak = {"0": 0, "1": 0}

        def sample() -> None:
            while not done.is_set():
                for i in peak:
                    peak[i] = max(peak[i], ring_bytes(fleet, i, "fr-2"))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            for _ in range(4):  # 4 x 8,000 x 1,400 bytes: the ring turns several times over
                send(port, b"F", 8000, size=1400)
            wait_for(
                lambda: c.get_status(name="fr-2").instances[0].packets_captured >= 1000,
                what="1,000 packets in the ring",
                timeout_s=10,
                interval_s=0.1,
            )
            reported = [i.bytes_captured for i in c.get_status(name="fr-2").instances]
        finally:
            done.set()
            sampler.join()
        assert 0 < max(peak.values()) <= RING, peak
        assert all(0 < b <= RING for b in reported), reported
        assert all(len(segments(fleet, i, "fr-2")) <= 9 for i in peak)
        # Idle for longer than the window and its slack: the packets' segments go for their age.
        let_time_pass(3 + 5 + 1, why="the packets' segments leave the window by their age alone")
        send(port, b"G", 1)  # the ring is looked after as packets arrive
        wait_for(
            lambda: c.get_status(name="fr-2").instances[0].packets_captured == 1,
            what='c.get_status(name="fr-2").instances[0].packets_captured == 1',
            timeout_s=10,
            interval_s=0.1,
            detail=lambda: c.get_status(name="fr-2"),
        )
        c.stop(name="fr-2")
        final = c.wait(name="fr-2", timeout_s=30)
    assert (final.packet_capture_status, final.stop_reason, final.trigger_time) == ("Stopped", "StoppedByUser", "")
    for inst in final.instances:
        assert (inst.packets_captured, inst.bytes_captured, list(inst.files)) == (0, 0, [])
        assert segments(fleet, inst.instance_id, "fr-2") == []
        assert not os.path.exists(fleet.root(inst.instance_id) / "fr-2.cap")


def test_trigger_refusals_name_the_rule(fleet):
    port = free_udp_port()
    with sdk.Client(fleet.api) as c:
        with pytest.raises(sdk.InvalidCapture) as e:
            c.create(
                name="fr-bad",
                target="web",
                target_type="AzureVMSS",
                resource_group="rg1",
                storage_account="local",
                standby_in_seconds=30,
                continuous_capture=True,
            )
        assert e.value.code == ErrorCode.INVALID_ARGUMENT
        assert e.value.message.startswith("standbyInSeconds: is not supported with continuousCapture")
        with pytest.raises(sdk.InvalidCapture) as e:
            c.create(
                name="fr-bad",
                target="web",
                target_type="AzureVMSS",
                resource_group="rg1",
                storage_account="local",
                standby_in_seconds=30,
                standby_bytes=1 << 20,
            )
        assert e.value.message == "standbyBytes: 1048576 is out of range 8388608..4294967295"
        c.create(
            name="fr-plain",
            target="web",
            target_type="AzureVMSS",
            resource_group="rg1",
            storage_account="local",
            time_limit_in_seconds=1,
            filters=[{"protocol": "UDP", "localPort": str(port)}],
        )
        with pytest.raises(sdk.FleetcapError) as e:
            c.trigger(name="fr-plain")
        assert e.value.code == ErrorCode.FAILED_PRECONDITION
        assert e.value.message == ("packet capture 'fr-plain' is not a flight recorder: create it with standbyInSeconds to trigger it")
        arm(c, "fr-3", port, 10)
        with pytest.raises(sdk.InvalidCapture) as e:
            c.trigger(name="fr-3", after_in_seconds=18001)
        assert e.value.message == "afterInSeconds: 18001 is out of range 0..18000"
        with pytest.raises(sdk.InvalidCapture) as e:
            c.trigger(name="fr-3", note="bad\nnote")
        assert e.value.message == "note: must be at most 200 printable characters"
        c.stop(name="fr-3")
        with pytest.raises(sdk.FleetcapError) as e:
            c.trigger(name="fr-3")
        assert e.value.code == ErrorCode.FAILED_PRECONDITION
        assert e.value.message == "packet capture 'fr-3' was stopped before a trigger; its window is gone"
        with pytest.raises(sdk.CaptureNotFound):
            c.trigger(name="fr-none")
        assert c.wait(name="fr-3", timeout_s=30).stop_reason == "StoppedByUser"
