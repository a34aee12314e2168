"""End to end: etcd, a coordinator and four agent processes, each agent in its own network
namespace as one instance of scale set "web". Known traffic is sent between the instances;
each pcap is read back by an independent parser and must hold exactly the datagrams that
match, each cut to the snap length, with the right stop reason."""

from __future__ import annotations

import os

import pytest

from deploy.localfleet import LocalFleet
from fleetcap.clients import sdk
from fleetcap.core.naming import parse_rfc3339
from tests import pcaps
from tests.e2e.support import PAYLOAD, expected, running_fleet, wait_running

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-scale-set")]

SNAPLEN = 100


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with running_fleet(tmp_path_factory, "fleet", 4) as f:
        yield f


def stored_and_local(fleet: LocalFleet, status, instance_index: int, filename: str) -> tuple[str, str]:
    inst = next(i for i in status.instances if i.instance_id == str(instance_index))
    return inst.files[0].storage_path.removeprefix("file://"), os.path.join(fleet.instances[instance_index].capture_root, filename)


def test_filters_scope_snaplen_and_time_limit(fleet, client):
    i0, i1, i2, i3 = fleet.instances
    created = client.create(
        name="filters",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["0", "web_1", "2"],
        exclude=["2"],
        bytes_to_capture_per_packet=SNAPLEN,
        time_limit_in_seconds=6,
        storage_account="local",
        file_path="/var/captures/filters.cap",
        filters=[{"protocol": "UDP", "localPort": "5001"}, {"protocol": "UDP", "remoteIPAddress": i2.ip, "remotePort": "6000-6005"}],
    )
    assert [s.rsplit("/", 1)[1] for s in created.properties.scope.include] == ["0", "1", "2"]
    assert [s.rsplit("/", 1)[1] for s in created.properties.scope.exclude] == ["2"]
    wait_running(client, "filters")

    fleet.send_udp(i1, i0, dport=5001, sport=40001, count=25, size=PAYLOAD, tag=1)  # i0: local port 5001, in
    fleet.send_udp(i0, i1, dport=40001, sport=5001, count=15, size=PAYLOAD, tag=2)  # i0: local port 5001, out
    fleet.send_udp(i2, i1, dport=7000, sport=6003, count=20, size=PAYLOAD, tag=3)  # i1: remote i2:6003
    fleet.send_udp(i2, i1, dport=7000, sport=6010, count=20, size=PAYLOAD, tag=4)  # nobody: port out of range
    fleet.send_udp(i3, i1, dport=7000, sport=6003, count=20, size=PAYLOAD, tag=5)  # nobody: wrong remote address
    fleet.send_udp(i0, i1, dport=5002, sport=40002, count=20, size=PAYLOAD, tag=6)  # nobody
    fleet.send_udp(i3, i2, dport=5001, sport=40003, count=20, size=PAYLOAD, tag=7)  # i2 is excluded

    final = client.wait(name="filters", timeout_s=60)
    assert final.packet_capture_status == "Stopped"
    assert final.stop_reason == "TimeExceeded"
    assert list(final.packet_capture_error) == []
    assert [i.instance_id for i in final.instances] == ["0", "1"]
    want = {
        "0": expected(i1, 40001, i0, 5001, 1, 25) + expected(i0, 5001, i1, 40001, 2, 15),
        "1": expected(i2, 6003, i1, 7000, 3, 20),
    }
    for inst in final.instances:
        assert inst.packet_capture_status == "Stopped"
        assert inst.stop_reason == "TimeExceeded"
        stored, local = stored_and_local(fleet, final, int(inst.instance_id), "filters.cap")
        pcap = pcaps.read(stored)
        assert pcaps.flows(pcap.records) == want[inst.instance_id]
        assert pcap.snaplen == SNAPLEN
        assert pcap.linktype == 1
        assert all(r.caplen == SNAPLEN and r.wirelen == 14 + 20 + 8 + PAYLOAD for r in pcap.records)
        assert inst.packets_captured == sum(want[inst.instance_id].values())
        assert inst.bytes_captured == pcap.size == os.path.getsize(local)
        with open(stored, "rb") as a, open(local, "rb") as b:
            assert a.read() == b.read()
        f = inst.files[0]
        assert f.upload_complete
        assert f.sha256 == f.stored_sha256
        assert f.uploaded_bytes == pcap.size
        assert inst.kernel_drops == 0
    for excluded in (i2, i3):
        assert not os.path.exists(os.path.join(excluded.capture_root, "filters.cap"))


def test_byte_limit_stops_on_the_packet_that_would_cross_it(fleet, client):
    i0, i1 = fleet.instances[:2]
    record = 16 + SNAPLEN
    limit = 24 + 10 * record + record // 2  # room for 10 records and half of the 11th
    client.create(
        name="bytes",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["1"],
        bytes_to_capture_per_packet=SNAPLEN,
        total_bytes_per_session=limit,
        time_limit_in_seconds=60,
        storage_account="local",
        file_path="/var/captures/bytes.cap",
        filters=[{"protocol": "UDP", "localPort": "5003"}],
    )
    wait_running(client, "bytes")
    fleet.send_udp(i0, i1, dport=5003, sport=40010, count=30, size=PAYLOAD, tag=8)
    final = client.wait(name="bytes", timeout_s=60)
    assert final.packet_capture_status == "Stopped"
    assert final.stop_reason == "TotalBytesExceeded"
    (inst,) = final.instances
    stored, local = stored_and_local(fleet, final, 1, "bytes.cap")
    pcap = pcaps.read(stored)
    assert pcap.size == 24 + 10 * record <= limit
    assert pcaps.flows(pcap.records) == expected(i0, 40010, i1, 5003, 8, 10)  # the first ten, in order
    assert [r.seq for r in pcap.records] == list(range(10))
    assert inst.packets_captured == 10
    assert inst.bytes_captured == pcap.size


def test_manual_stop_and_idempotent_stop(fleet, client):
    i0, i2 = fleet.instances[0], fleet.instances[2]
    client.create(
        name="manual",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["2"],
        time_limit_in_seconds=0,
        total_bytes_per_session=0,
        storage_account="local",
        filters=[{"protocol": "UDP", "localPort": "5004"}],
    )
    wait_running(client, "manual")
    fleet.send_udp(i0, i2, dport=5004, sport=40020, count=5, size=PAYLOAD, tag=9)
    for status in client.watch(name="manual", timeout_s=20):  # every reported change, until all 5 are in
        if status.instances[0].packets_captured >= 5:
            break
    client.stop(name="manual")
    client.stop(name="manual")  # idempotent
    final = client.wait(name="manual", timeout_s=60)
    assert final.packet_capture_status == "Stopped"
    assert final.stop_reason == "StoppedByUser"
    (inst,) = final.instances
    assert inst.stop_reason == "StoppedByUser"
    stored = inst.files[0].storage_path.removeprefix("file://")
    pcap = pcaps.read(stored)
    assert pcaps.flows(pcap.records) == expected(i0, 40020, i2, 5004, 9, 5)
    assert all(r.caplen == r.wirelen == 14 + 20 + 8 + PAYLOAD for r in pcap.records)  # whole packets
    # Storage only: the instance's copy is removed once the stored copy is verified.
    local_dir = os.path.join(fleet.instances[2].capture_root, "fleetcap")
    assert [n for n in os.listdir(local_dir) if n.startswith("manual-")] == []
    client.stop(name="manual")  # still idempotent once stopped
    client.delete(name="manual")
    with pytest.raises(sdk.CaptureNotFound):
        client.get(name="manual")
    assert os.path.exists(stored), "delete must not delete files"


def test_time_limit_precision_and_concurrent_captures_on_one_agent(fleet, client):
    """Two captures on instance 3 at once, each with its own filter and limits; neither sees
    the other's packets, and each stops within 1 s of its own time limit."""
    i0, i3 = fleet.instances[0], fleet.instances[3]
    for name, port, limit in (("conc-a", 5010, 3), ("conc-b", 5011, 5)):
        client.create(
            name=name,
            target="web",
            target_type="AzureVMSS",
            resource_group="rg1",
            include=["3"],
            time_limit_in_seconds=limit,
            storage_account="local",
            filters=[{"protocol": "UDP", "localPort": str(port)}],
        )
    wait_running(client, "conc-a")
    wait_running(client, "conc-b")
    fleet.send_udp(i0, i3, dport=5010, sport=40030, count=12, size=PAYLOAD, tag=10)
    fleet.send_udp(i0, i3, dport=5011, sport=40031, count=7, size=PAYLOAD, tag=11)
    for name, port, sport, tag, count, limit in (("conc-a", 5010, 40030, 10, 12, 3), ("conc-b", 5011, 40031, 11, 7, 5)):
        final = client.wait(name=name, timeout_s=60)
        (inst,) = final.instances
        assert inst.stop_reason == "TimeExceeded"
        pcap = pcaps.read(inst.files[0].storage_path.removeprefix("file://"))
        assert pcaps.flows(pcap.records) == expected(i0, sport, i3, port, tag, count)
        ran = sdk_time(inst.capture_stop_time) - sdk_time(inst.capture_start_time)
        assert limit <= ran <= limit + 1.0, f"{name} ran {ran:.3f}s for a {limit}s limit"


def test_capture_without_filters_leaves_out_the_agents_own_connection(fleet, client):
    """No filters: everything on eth0 is captured except the agent's own gRPC connection to the
    coordinator (10.77.0.1:7770), which carries this very upload."""
    i0, i1 = fleet.instances[:2]
    client.create(
        name="nofilter",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["1"],
        time_limit_in_seconds=4,
        storage_account="local",
    )
    wait_running(client, "nofilter")
    fleet.send_udp(i0, i1, dport=5020, sport=40040, count=10, size=PAYLOAD, tag=12)
    final = client.wait(name="nofilter", timeout_s=60)
    (inst,) = final.instances
    pcap = pcaps.read(inst.files[0].storage_path.removeprefix("file://"))
    ours = [r for r in pcap.records if r.tag == 12]
    assert pcaps.flows(ours) == expected(i0, 40040, i1, 5020, 12, 10)
    coordinator_traffic = [r for r in pcap.records if 7770 in (r.sport, r.dport)]
    assert coordinator_traffic == []
    # The agent's connection was busy meanwhile: progress and this upload crossed eth0.
    assert inst.files[0].uploaded_bytes == pcap.size > 24


def sdk_time(text: str) -> float:
    return parse_rfc3339(text).timestamp()


def test_continuous_capture_keeps_a_ring_of_exact_files(fleet, client):
    """A ring of 3 files of 5 records each: 23 datagrams make files 0-4; files 0 and 1 leave
    the ring on the instance and in storage; every kept file holds exactly its 5 (or 3)."""
    i0, i1 = fleet.instances[:2]
    record = 16 + SNAPLEN
    client.create(
        name="ring",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["1"],
        continuous_capture=True,
        local_path="/var/captures/ring.cap",
        file_count=3,
        file_size_in_bytes=24 + 5 * record,
        session_time_limit_in_seconds=5,
        bytes_to_capture_per_packet=SNAPLEN,
        storage_account="local",
        filters=[{"protocol": "UDP", "localPort": "5030"}],
    )
    wait_running(client, "ring")
    fleet.send_udp(i0, i1, dport=5030, sport=40050, count=23, size=PAYLOAD, tag=13)
    final = client.wait(name="ring", timeout_s=60)
    assert (final.packet_capture_status, final.stop_reason) == ("Stopped", "SessionTimeExceeded")
    (inst,) = final.instances
    assert inst.packets_captured == 23
    assert [f.file_path for f in inst.files] == [f"/var/captures/ring_0000{i}.cap" for i in (2, 3, 4)]
    root = fleet.instances[1].capture_root
    assert sorted(n for n in os.listdir(root) if n.startswith("ring")) == [f"ring_0000{i}.cap" for i in (2, 3, 4)]
    for f, first, count in zip(inst.files, (10, 15, 20), (5, 5, 3)):
        stored = f.storage_path.removeprefix("file://")
        pcap = pcaps.read(stored)
        assert [r.seq for r in pcap.records] == list(range(first, first + count))
        assert pcap.size == 24 + count * record
        assert f.upload_complete
        assert f.sha256 == f.stored_sha256
        with open(os.path.join(root, os.path.basename(f.file_path)), "rb") as a, open(stored, "rb") as b:
            assert a.read() == b.read()
    first_stored = inst.files[0].storage_path.removeprefix("file://")
    ring_prefix = os.path.basename(first_stored)[: -len("00002.cap")]  # packetcapture_HH_MM_SS_mmm_
    stored = sorted(n for n in os.listdir(os.path.dirname(first_stored)) if n.startswith(ring_prefix))
    assert stored == [f"{ring_prefix}0000{i}.cap" for i in (2, 3, 4)]


def test_download_merge_and_follow(fleet, client, tmp_path):
    """download fetches each instance's stored file; --merge writes one pcapng that tshark
    reads as one trace with an interface per instance; follow streams a running capture's
    bytes as they are stored."""
    import json
    import subprocess
    import sys
    import threading

    i0, i1, i2 = fleet.instances[:3]
    client.create(
        name="dl",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["0", "1"],
        time_limit_in_seconds=5,
        storage_account="local",
        file_path="/var/captures/dl.cap",
        filters=[{"protocol": "UDP", "localPort": "5040"}],
    )
    wait_running(client, "dl")
    followed = bytearray()
    follower = threading.Thread(target=lambda: followed.extend(b"".join(client.read_file(name="dl", instance_id="1", follow=True))))
    follower.start()
    fleet.send_udp(i2, i0, dport=5040, sport=40060, count=8, size=PAYLOAD, tag=14)
    fleet.send_udp(i2, i1, dport=5040, sport=40061, count=5, size=PAYLOAD, tag=15)
    client.wait(name="dl", timeout_s=60)
    follower.join(30)
    with open(os.path.join(fleet.instances[1].capture_root, "dl.cap"), "rb") as f:
        assert bytes(followed) == f.read()

    dest = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetcap",
            "--coordinator",
            fleet.api_address,
            "capture",
            "download",
            "--name",
            "dl",
            "--dest",
            str(dest),
            "--merge",
        ],
        capture_output=True,
        text=True,
        env=fleet.cli_env(),
    )
    assert r.returncode == 0, r.stderr
    files = json.loads(r.stdout)["files"]
    assert sorted(os.path.relpath(p, dest) for p in files) == ["0/dl.cap", "1/dl.cap", "dl.pcapng"]
    for inst in ("0", "1"):
        with open(dest / inst / "dl.cap", "rb") as a, open(os.path.join(fleet.instances[int(inst)].capture_root, "dl.cap"), "rb") as b:
            assert a.read() == b.read()
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(dest / "dl.pcapng"),
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.time_epoch",
            "-e",
            "udp.dstport",
            "-e",
            "frame.cap_len",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in out if line]
    assert sorted((name, port) for name, _, port, _ in rows) == sorted([("web_0", "5040")] * 8 + [("web_1", "5040")] * 5)
    times = [float(t) for _, t, _, _ in rows]
    assert times == sorted(times)
    assert all(int(c) == 14 + 20 + 8 + PAYLOAD for *_, c in rows)
