"""Downloading a File-only capture (a --file-path and no storage account, Azure's default): the
coordinator asks each instance's agent for its file over the fleet channel and streams it
(chunk CRC-32s, then the SHA-256 the agent reported), keeping nothing in storage afterwards. An
offline instance is named, and the other instances' files still download. A real coordinator
(embedded etcd) and two real agents, instances 0 and 1 of scale set `web`, capturing on lo."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time

import grpc
import pytest

from fleetcap.clients import sdk
from fleetcap.clients.errors import ErrorCode
from fleetcap.core.auth import Role
from fleetcap.core.naming import parse_rfc3339
from fleetcap.v1 import fleet_pb2, fleet_pb2_grpc
from tests import pcaps
from tests.conftest import TOKENS
from tests.integration.conftest import wait_agents
from tests.integration.fleet_support import RECORD, Fleet, free_udp_port, send, two_agents
from tests.integration.gateway_support import Gateway
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with two_agents(tmp_path_factory.mktemp("fileonly")) as f:
        yield f


def capture(client: sdk.Client, name: str, port: int, time_limit: int = 3) -> None:
    client.create(
        name=name,
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        file_path=f"/var/captures/{name}.cap",
        time_limit_in_seconds=time_limit,
        filters=[{"protocol": "UDP", "localPort": str(port)}],
    )
    wait_for(
        lambda: (
            (s := client.get_status(name=name)).packet_capture_status == "Running"
            and all(i.packet_capture_status == "Running" for i in s.instances)
        ),
        what=f"{name} and every instance Running",
        timeout_s=15,
        interval_s=0.1,
    )
    time.sleep(0.3)


def local_file(fleet: Fleet, instance: str, name: str) -> bytes:
    return (fleet.root(instance) / f"{name}.cap").read_bytes()


def fetch_area_empty(fleet: Fleet) -> bool:
    area = fleet.storage / "fleetcap-fetch"
    return not area.exists() or os.listdir(area) == []


def captured(fleet: Fleet, name: str, count: int, time_limit: int = 3) -> tuple[int, object]:
    """A finished capture of `count` datagrams to a port of its own: (port, final status)."""
    port = free_udp_port()
    with sdk.Client(fleet.api) as c:
        capture(c, name, port, time_limit)
        send(port, count)
        return port, c.wait(name=name, timeout_s=30)


def test_download_fetches_every_instance_file_byte_for_byte_and_keeps_nothing(fleet, tmp_path):
    port, final = captured(fleet, "fo-1", 5)
    assert [(i.instance_id, i.packets_captured) for i in final.instances] == [("0", 5), ("1", 5)]
    assert all(not f.storage_path and not f.upload_complete for i in final.instances for f in i.files)

    r = fleet.cli("capture", "download", "--name", "fo-1", "--dest", str(tmp_path / "dl"), "--merge")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["missing"] == []
    assert out["files"] == [
        str(tmp_path / "dl" / "0" / "fo-1.cap"),
        str(tmp_path / "dl" / "1" / "fo-1.cap"),
        str(tmp_path / "dl" / "fo-1.pcapng"),
    ]
    for inst in final.instances:
        got = (tmp_path / "dl" / inst.instance_id / "fo-1.cap").read_bytes()
        assert got == local_file(fleet, inst.instance_id, "fo-1")
        assert hashlib.sha256(got).hexdigest() == inst.files[0].sha256
        records = pcaps.read(str(tmp_path / "dl" / inst.instance_id / "fo-1.cap")).records
        assert [(r.dport, r.wirelen) for r in records] == [(port, RECORD - 16)] * 5
        assert len(got) == 24 + 5 * RECORD
    # The merged pcapng: one interface per instance, five packets on each.
    t = subprocess.run(
        ["tshark", "-r", str(tmp_path / "dl" / "fo-1.pcapng"), "-T", "fields", "-e", "frame.interface_id", "-e", "udp.dstport"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert t.returncode == 0, t.stderr
    assert sorted(t.stdout.split("\n")[:-1]) == [f"0\t{port}"] * 5 + [f"1\t{port}"] * 5
    # Each interface's statistics (pcapng ISB), read back by tshark: the instance's own counters.
    stats = pcaps.interface_statistics(str(tmp_path / "dl" / "fo-1.pcapng"))
    assert [(x.interface, x.accepted, x.delivered, x.os_drops, x.if_drops) for x in stats] == [
        (i, inst.packets_received, 5, inst.kernel_drops, inst.interface_drops) for i, inst in enumerate(final.instances)
    ]
    assert all(inst.packets_received >= 5 for inst in final.instances)
    for x, inst in zip(stats, final.instances):
        assert x.start_us == round(parse_rfc3339(inst.capture_start_time).timestamp() * 1e6)
        assert x.end_us == round(parse_rfc3339(inst.capture_stop_time).timestamp() * 1e6)
        assert x.end == parse_rfc3339(inst.capture_stop_time).strftime("%b %e, %Y %H:%M:%S.%f000 UTC")
    # Nothing is kept: the fetch area is empty once the download has ended.
    assert fetch_area_empty(fleet)


def test_an_offline_instance_is_named_and_the_others_still_download(fleet, tmp_path):
    captured(fleet, "fo-2", 3)
    with sdk.Client(fleet.api) as c:
        fleet.stop_agent("1")
        wait_for(lambda: len(c.list_agents()) == 1, what="len(c.list_agents()) == 1", timeout_s=15, interval_s=0.1)
    try:
        r = fleet.cli("capture", "download", "--name", "fo-2", "--dest", str(tmp_path / "dl"))
        assert r.returncode == 1, r.stdout + r.stderr
        assert r.stderr == (
            "fleetcap: instance 1: /var/captures/fo-2.cap not downloaded: FAILED_PRECONDITION: "
            "instance '1' is offline: /var/captures/fo-2.cap stays on it until its agent "
            "reconnects\n"
        )
        out = json.loads(r.stdout)
        assert out["files"] == [str(tmp_path / "dl" / "0" / "fo-2.cap")]
        assert [(m["instanceId"], m["code"]) for m in out["missing"]] == [("1", "FAILED_PRECONDITION")]
        assert (tmp_path / "dl" / "0" / "fo-2.cap").read_bytes() == local_file(fleet, "0", "fo-2")
        assert sorted(os.listdir(tmp_path / "dl" / "1")) == []  # no partial file left behind
    finally:
        fleet.start_agent("1")
    with sdk.Client(fleet.api) as c:
        wait_agents(c, 2, str(fleet.dir / "coordinator.log"))
    # Back online (the agent reloads its journal), its file downloads.
    r = fleet.cli("capture", "download", "--name", "fo-2", "--dest", str(tmp_path / "dl2"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "dl2" / "1" / "fo-2.cap").read_bytes() == local_file(fleet, "1", "fo-2")
    assert len(local_file(fleet, "1", "fo-2")) == 24 + 3 * RECORD
    assert fetch_area_empty(fleet)


def test_follow_streams_a_running_file_only_capture(fleet):
    port = free_udp_port()
    got = bytearray()
    with sdk.Client(fleet.api) as c:
        capture(c, "fo-3", port, time_limit=8)  # the sends take 2 s; room for a loaded machine
        errors: list[BaseException] = []

        def follow() -> None:
            try:
                for data in c.read_file(name="fo-3", instance_id="0", follow=True):
                    got.extend(data)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        reader = threading.Thread(target=follow)
        reader.start()
        for _ in range(4):
            send(port, 2)
            time.sleep(0.5)
        final = c.wait(name="fo-3", timeout_s=30)
        reader.join(30)
        assert not reader.is_alive() and errors == [], (errors, (fleet.dir / "coordinator.log").read_text()[-3000:])
    inst = final.instances[0]
    assert (inst.packets_captured, inst.stop_reason) == (8, "TimeExceeded")
    assert bytes(got) == local_file(fleet, "0", "fo-3")
    assert hashlib.sha256(got).hexdigest() == inst.files[0].sha256
    assert fetch_area_empty(fleet)


def test_a_running_file_is_refused_without_follow(fleet):
    port = free_udp_port()
    with sdk.Client(fleet.api) as c:
        capture(c, "fo-4", port, time_limit=5)
        with pytest.raises(sdk.FleetcapError) as e:
            list(c.read_file(name="fo-4", instance_id="0"))
        assert e.value.code == ErrorCode.FAILED_PRECONDITION
        assert e.value.message == (
            "instance '0': /var/captures/fo-4.cap is still being written; follow it with "
            "`fleetcap capture follow`, or download it once the capture has stopped there"
        )
        c.stop(name="fo-4")


def test_an_agent_cannot_upload_into_the_fetch_area_uninvited(fleet):
    """An Upload naming a fetch that no download asked for, or a malformed one, is NOT_FOUND:
    an agent cannot write into the coordinator's storage by choosing a fetch id."""
    with sdk.Client(fleet.api) as c:
        capture(c, "fo-5", free_udp_port(), time_limit=1)
        status = c.wait(name="fo-5", timeout_s=30)
    ch = grpc.insecure_channel(fleet.api)  # a unix socket: local IPC, plaintext, the agent's token
    stub = fleet_pb2_grpc.FleetStub(ch)
    identity = fleet_pb2.AgentIdentity(resource_group="rg1", vmss_name="web", instance_id="0")
    with sdk.Client(fleet.api) as c:
        resource = c.get(name="fo-5")
    session = f"{resource.id}@{resource.created_time}"
    try:
        for fetch_id in ("0" * 32, "../../../etc/passwd", "A" * 32):
            call = stub.Upload(
                iter(
                    [
                        fleet_pb2.UploadRequest(
                            open=fleet_pb2.UploadOpen(
                                identity=identity,
                                capture_name="fo-5",
                                capture_id=session,
                                file_path="/var/captures/fo-5.cap",
                                fetch_id=fetch_id,
                            )
                        )
                    ]
                ),
                metadata=(("authorization", f"Bearer {TOKENS[Role.AGENT]}"),),
            )
            with pytest.raises(grpc.RpcError) as e:
                list(call)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value.details()
            assert e.value.details() == f"fetch '{fetch_id[:40]}' not found (its download has ended)"
    finally:
        ch.close()
    assert status.instances[0].packet_capture_status == "Stopped"
    assert fetch_area_empty(fleet)


def test_the_gateway_serves_a_file_only_capture(fleet, tmp_path):
    captured(fleet, "fo-6", 4)
    g = Gateway(fleet.api, tmp_path)
    try:
        status, headers, body = g.request("GET", "/fleetcap/v1/captures/fo-6/files?instance=1")
        assert status == 200, body[:500]
        assert body == local_file(fleet, "1", "fo-6")
        assert headers["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'
        status, headers, body = g.request("GET", "/fleetcap/v1/captures/fo-6/files?instance=0", headers={"Range": "bytes=24-"})
        assert status == 206
        assert body == local_file(fleet, "0", "fo-6")[24:]
        status, headers, body = g.request("GET", "/fleetcap/v1/captures/fo-6/merged")
        assert status == 200
        assert "Fleetcap-Missing-Instances" not in headers
        (tmp_path / "m.pcapng").write_bytes(body)
        t = subprocess.run(
            ["tshark", "-r", str(tmp_path / "m.pcapng"), "-T", "fields", "-e", "frame.interface_id"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sorted(t.stdout.split()) == ["0"] * 4 + ["1"] * 4
    finally:
        g.stop()
    assert fetch_area_empty(fleet)
