"""Security of the agent side, tried as an attacker would: an agent speaks only for itself and only
to a coordinator certificate, trusts nothing a coordinator sends, and a compromised agent can
neither upload past a limit nor fill etcd. The deployment is the one of test_security.py
(tests/integration/conftest.py, `secure`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time

import grpc
import grpc.aio
import pytest

from deploy.localfleet import LocalFleet
from fleetcap.clients import sdk
from fleetcap.clients.errors import ErrorCode
from fleetcap.core import transport
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import fleet_pb2, fleet_pb2_grpc
from tests.integration.security_support import fleetcap, serve_double
from tests.waiting import wait_for, wait_for_async

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_ambient_token")]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_an_agent_speaks_only_for_itself(secure):
    """vm2's certificate claiming vm1 is refused while the real vm1 keeps its stream; a client
    certificate cannot connect as an agent; an upload for a capture not dispatched to the caller
    is refused."""
    s = secure

    async def connect(channel: grpc.aio.Channel, vm: str) -> grpc.aio.AioRpcError | fleet_pb2.CoordinatorMessage:
        call = fleet_pb2_grpc.FleetStub(channel).Connect()
        try:  # the refusal may come before the hello is written (the write then raises it)
            await call.write(
                fleet_pb2.AgentMessage(
                    hello=fleet_pb2.AgentHello(identity=fleet_pb2.AgentIdentity(vm_name=vm, resource_group="rg1"), hostname="rogue")
                )
            )
            return await call.read()
        except grpc.aio.AioRpcError as e:
            return e
        finally:
            call.cancel()

    async def body() -> None:
        vm2 = s.agent_channel(os.path.join(s.d, "vm2"))
        alice = s.agent_channel(os.path.join(s.d, "alice"), "alice")
        try:
            refused = await connect(vm2, "vm1")
            assert isinstance(refused, grpc.aio.AioRpcError)
            assert (refused.code(), refused.details()) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "the certificate of /subscriptions/local/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/"
                "vm2 cannot speak for /subscriptions/local/resourceGroups/rg1/providers/Microsoft.Compute/"
                "virtualMachines/vm1",
            )
            as_client = await connect(alice, "vm1")
            assert isinstance(as_client, grpc.aio.AioRpcError)
            assert as_client.code() == grpc.StatusCode.PERMISSION_DENIED
            assert as_client.details() == "certificate:alice (contributor) may not call Connect; it needs the role agent"
            # An upload by vm2 (a real agent, for itself) into a capture that targets only vm1.
            with s.client(s.tokens["ops"]) as ops:
                created = ops.create(
                    name="up",
                    target="vm1",
                    resource_group="rg1",
                    storage_account="local",
                    file_path="/var/captures/up.cap",
                    time_limit_in_seconds=2,
                )
                capture_id = f"{created.id}@{created.created_time}"
                call = fleet_pb2_grpc.FleetStub(vm2).Upload()
                await call.write(
                    fleet_pb2.UploadRequest(
                        open=fleet_pb2.UploadOpen(
                            identity=fleet_pb2.AgentIdentity(vm_name="vm2", resource_group="rg1"),
                            capture_name="up",
                            capture_id=capture_id,
                            file_path="/var/captures/up.cap",
                        )
                    )
                )
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call.read()
                assert (e.value.code(), e.value.details()) == (
                    grpc.StatusCode.PERMISSION_DENIED,
                    "this capture does not target that instance",
                )
                final = ops.wait(name="up", timeout_s=30)  # vm1 kept its stream: the capture ran there
                assert (final.packet_capture_status, final.stop_reason) == ("Stopped", "TimeExceeded")
                assert final.instances[0].files[0].upload_complete
                ops.delete(name="up")
        finally:
            await vm2.close()
            await alice.close()

    asyncio.run(body())
    log = open(os.path.join(s.d, "coordinator.log")).read()
    assert "principal=certificate:web" not in log
    assert "principal=certificate:vm2 method=Connect capture=- decision=allowed" in log


def test_an_agent_refuses_a_coordinator_from_another_ca(secure, tmp_path):
    s = secure
    assert fleetcap("tls", "ca", "create", "--out", str(tmp_path / "other")).returncode == 0
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "agent",
                "--coordinator",
                s.fleet,
                "--vm",
                "vm9",
                "-g",
                "rg1",
                "--interface",
                "lo",
                "--capture-root",
                str(tmp_path / "captures"),
                "--tls-ca",
                str(tmp_path / "other" / "ca.pem"),
                "--tls-cert",
                os.path.join(s.d, "vm2", "agent.pem"),
                "--tls-key",
                os.path.join(s.d, "vm2", "agent-key.pem"),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
    try:
        wait_for(
            lambda: "control stream to" in log_path.read_text(),
            what="the agent's first control stream",
            timeout_s=20,
            interval_s=0.2,
            detail=lambda: log_path.read_text(),
        )
        with s.client(s.tokens["boss"]) as c:
            assert [a.id.rsplit("/", 1)[-1] for a in c.list_agents()] == ["vm1"]  # vm9 never registered
    finally:
        LocalFleet.stop_process(agent)
    text = log_path.read_text()
    assert f"control stream to {s.fleet}: UNAVAILABLE" in text
    assert "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text.lower(), text


def test_the_agent_trusts_nothing_a_coordinator_sends(tmp_path):
    """A test double of the coordinator sends a real agent process StartCaptures that escape
    its capture root: by '..', through a planted symlink, through a symlinked directory, and with
    limits past the documented maximums. Each is refused and reported; nothing lands outside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "planted.cap").symlink_to(outside / "stolen.cap")
    (root / "dir").symlink_to(outside)
    starts = [
        fleet_pb2.StartCapture(capture_name=name, capture_id=f"{name}@1", file_path=path, time_limit_s=limit)
        for name, path, limit in (
            ("dotdot", "/var/captures/../../../" + str(outside)[1:] + "/a.cap", 5),
            ("link", "/var/captures/planted.cap", 5),
            ("dirlink", "/var/captures/dir/b.cap", 5),
            ("forever", "/var/captures/c.cap", 10**9),
        )
    ]
    reports: dict[str, pb.InstanceStatus] = {}

    class Double(fleet_pb2_grpc.FleetServicer):
        async def Connect(self, requests, context):
            hello = await requests.__anext__()
            assert hello.HasField("hello")
            yield fleet_pb2.CoordinatorMessage(welcome=fleet_pb2.Welcome(instance_resource_id="x", heartbeat_interval_ms=1000))
            for start in starts:
                yield fleet_pb2.CoordinatorMessage(start=start)
            async for message in requests:
                if message.HasField("progress"):
                    reports[message.progress.capture_name] = message.progress.status
                    if len(reports) == len(starts) and all(r.packet_capture_status == "Error" for r in reports.values()):
                        return

    async def body() -> None:
        async with serve_double(fleet_pb2_grpc.add_FleetServicer_to_server, Double(), f"unix:{tmp_path}/double.sock") as socket_path:
            log = open(tmp_path / "agent.log", "wb")
            agent = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
                [
                    sys.executable,
                    "-m",
                    "fleetcap",
                    "agent",
                    "--coordinator",
                    socket_path,
                    "--vm",
                    "vm1",  # noqa: ASYNC220 (started once, not awaited)
                    "--interface",
                    "lo",
                    "--capture-root",
                    str(root),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=log,
                env=dict(os.environ, FLEETCAP_TOKEN="t"),
            )
            try:
                await wait_for_async(
                    lambda: len(reports) == len(starts) and all(r.packet_capture_status == "Error" for r in reports.values()),
                    what="every refused start reported as Error",
                    timeout_s=30,
                    interval_s=0.1,
                )
            finally:
                LocalFleet.stop_process(agent)

    asyncio.run(body())
    assert {name: (s.packet_capture_status, list(s.packet_capture_error)) for name, s in reports.items()} == {
        "dotdot": ("Error", ["CaptureFailed"]),
        "link": ("Error", ["LocalFileFailed"]),
        "dirlink": ("Error", ["LocalFileFailed"]),
        "forever": ("Error", ["CaptureFailed"]),
    }
    assert reports["forever"].error_message == "the agent refused the capture: time limit 1000000000 s is out of range"
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("impostor", ["gateway", "coordinator"])
def test_an_agent_speaks_only_to_a_coordinator_certificate(secure, tmp_path, impostor):
    """A fake coordinator on mutual TLS with a certificate of the fleet's own CA: the gateway's is
    refused in the handshake (the agent never sends its hello); a coordinator's, the control case,
    is spoken to, which shows the test could see the difference."""
    s = secure
    if impostor == "gateway":
        s.cert("--out", str(tmp_path / "pki"), "--gateway", "gw1")
        cert, key = tmp_path / "pki" / "gw1.pem", tmp_path / "pki" / "gw1-key.pem"
    else:
        cert, key = os.path.join(s.d, "coord", "coordinator.pem"), os.path.join(s.d, "coord", "coordinator-key.pem")
    hellos: list[fleet_pb2.AgentMessage] = []

    class Fake(fleet_pb2_grpc.FleetServicer):
        async def Connect(self, requests, context):
            async for message in requests:
                hellos.append(message)
                return
            yield  # never reached: an async generator that sends nothing

    async def body() -> None:
        server = grpc.aio.server()
        fleet_pb2_grpc.add_FleetServicer_to_server(Fake(), server)
        port = server.add_secure_port("127.0.0.1:0", transport.ServerTls(str(cert), str(key), s.ca).credentials())
        address = f"127.0.0.1:{port}"
        await server.start()
        log_path = tmp_path / "agent.log"
        agent = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
            [
                sys.executable,
                "-m",
                "fleetcap",
                "agent",
                "--coordinator",
                address,
                "--vm",
                "vm2",
                "-g",
                "rg1",
                "--interface",
                "lo",
                "--capture-root",
                str(tmp_path / "captures"),
                "--tls-ca",
                s.ca,
                "--tls-cert",
                os.path.join(s.d, "vm2", "agent.pem"),
                "--tls-key",
                os.path.join(s.d, "vm2", "agent-key.pem"),
            ],
            cwd=ROOT,
            stdout=open(log_path, "wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            await wait_for_async(
                lambda: hellos or log_path.read_text().count(f"control stream to {address}: UNAVAILABLE") >= 2,
                what="a hello, or two refused handshakes",
                timeout_s=20,
                interval_s=0.1,
            )
        finally:
            LocalFleet.stop_process(agent)
            await server.stop(None)

    asyncio.run(body())
    if impostor == "gateway":
        assert hellos == []
    else:
        assert hellos[0].hello.identity.vm_name == "vm2"


def test_the_coordinators_name_is_reserved_to_coordinator_certificates(secure, tmp_path):
    for args in (
        ("--client", "fleetcap-coordinator", "--role", "admin"),
        ("--gateway", "fleetcap-coordinator"),
        ("--gateway", "gw", "--dns", "fleetcap-coordinator"),
    ):
        r = fleetcap("tls", "cert", "create", "--ca", os.path.join(secure.d, "ca"), "--out", str(tmp_path), *args)
        assert (r.returncode, r.stderr.strip().splitlines()[-1]) == (
            2,
            "fleetcap: error: 'fleetcap-coordinator' is reserved for coordinator certificates (--coordinator)",
        ), r


def test_an_agent_cannot_upload_past_the_captures_limit(secure):
    """A compromised vm1 starts a 33 MB upload into a capture limited to 100,000 bytes: refused at the
    chunk that passes the limit plus one record; nothing of it is committed."""
    import zlib

    s = secure

    async def body() -> list[fleet_pb2.UploadResponse]:
        vm1 = s.agent_channel(os.path.join(s.d, "vm1"))
        with s.client(s.tokens["ops"]) as ops:
            created = ops.create(
                name="limit",
                target="vm1",
                resource_group="rg1",
                storage_account="local",
                file_path="/var/captures/limit-real.cap",
                time_limit_in_seconds=60,
                total_bytes_per_session=100_000,
                filters=[{"protocol": "UDP", "localPort": "47125"}],
            )
        call = fleet_pb2_grpc.FleetStub(vm1).Upload()
        await call.write(
            fleet_pb2.UploadRequest(
                open=fleet_pb2.UploadOpen(
                    identity=fleet_pb2.AgentIdentity(vm_name="vm1", resource_group="rg1"),
                    capture_name="limit",
                    capture_id=f"{created.id}@{created.created_time}",
                    file_path="/var/captures/limit-real.cap",
                )
            )
        )
        acks = [await call.read()]
        data = b"\xd4\xc3\xb2\xa1" + b"F" * (1024 * 1024 - 4)
        # The first MiB of the 33: the coordinator must refuse it rather than store it.
        await call.write(fleet_pb2.UploadRequest(chunk=fleet_pb2.UploadChunk(offset=0, data=data, crc32=zlib.crc32(data))))
        with contextlib.suppress(grpc.aio.AioRpcError):
            while (ack := await call.read()) is not grpc.aio.EOF:
                acks.append(ack)
        assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT, await call.details()
        assert await call.details() == (
            "upload: a chunk ending at 1048576 bytes: past this capture's limit for one file "
            "(362160 bytes, one record over the limit included); not stored"
        )
        await vm1.close()
        return acks

    acks = asyncio.run(body())
    assert [a.acked_offset for a in acks] == [0]
    with s.client(s.tokens["ops"]) as ops:
        ops.stop(name="limit")
        final = ops.wait(name="limit", timeout_s=30)
        # The real agent's upload of the same file took over again and was stored whole.
        [f] = final.instances[0].files
        assert (f.file_path, f.upload_complete, f.uploaded_bytes) == ("/var/captures/limit-real.cap", True, f.size_bytes)
        assert f.size_bytes <= 100_000
        ops.delete(name="limit")


def test_a_compromised_agent_cannot_fill_etcd(secure):
    """vm2's own certificate, a stream of its own: 60 reports with a 1.4 MB error message each
    (the first audit grew etcd by 100 MB in 20 s this way). Each is cut to 1 KiB, the writes are
    paced, and the first, Error, is final: the record never changes after it."""
    s = secure
    db = next(
        os.path.join(top, "db")
        for top, _, names in os.walk(os.path.join(s.d, "data"))
        if "db" in names and top.endswith(os.path.join("member", "snap"))
    )
    size_before = os.path.getsize(db)

    async def body() -> None:
        vm2 = s.agent_channel(os.path.join(s.d, "vm2"))
        call = fleet_pb2_grpc.FleetStub(vm2).Connect()
        await call.write(
            fleet_pb2.AgentMessage(
                hello=fleet_pb2.AgentHello(
                    identity=fleet_pb2.AgentIdentity(vm_name="vm2", resource_group="rg1"), hostname="vm2", interface="lo"
                )
            )
        )
        assert (await call.read()).HasField("welcome")
        with s.client(s.tokens["ops"]) as ops:
            ops.create(name="flood", target="vm2", resource_group="rg1", file_path="/var/captures/flood.cap", time_limit_in_seconds=60)
        start = await call.read()
        while not start.HasField("start"):
            start = await call.read()
        for i in range(60):
            await call.write(
                fleet_pb2.AgentMessage(
                    progress=fleet_pb2.CaptureProgress(
                        capture_name="flood",
                        capture_id=start.start.capture_id,
                        status=pb.InstanceStatus(
                            packet_capture_status="Error",
                            packet_capture_error=["CaptureFailed"],
                            error_message=f"{i:02d}" + "E" * 1_400_000,
                        ),
                    )
                )
            )
        with s.client(s.tokens["ops"]) as ops:
            # The first report, cut, is the record; Error is final, so the 59 after it (paced,
            # over about 8 s) change nothing: watched for 10 s.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                [inst] = ops.get_status(name="flood").instances
                if inst.packet_capture_status == "Error":
                    assert (inst.error_message[:2], len(inst.error_message)) == ("00", 1027)
                await asyncio.sleep(0.2)
            assert inst.packet_capture_status == "Error"
            ops.delete(name="flood")
        call.cancel()
        await vm2.close()

    asyncio.run(body())
    assert os.path.getsize(db) - size_before < 8 * 1024 * 1024, (size_before, os.path.getsize(db))


def test_a_capture_file_swapped_under_the_agent_is_refused_never_served(secure, tmp_path):
    """A local user renames the running capture's file and writes another in its place: the agent
    refuses to hash or send it (LocalFileFailed), and no forged byte reaches storage or a reader."""
    s = secure
    with s.client(s.tokens["ops"]) as ops:
        ops.create(
            name="swap",
            target="vm1",
            resource_group="rg1",
            storage_account="local",
            file_path="/var/captures/swap.cap",
            time_limit_in_seconds=3,
            filters=[{"protocol": "UDP", "localPort": "47126"}],
        )
        wait_for(
            lambda: ops.get_status(name="swap").packet_capture_status == "Running",
            what='ops.get_status(name="swap").packet_capture_status == "Running"',
            timeout_s=20,
            interval_s=0.1,
        )
        [path] = [os.path.join(top, n) for top, _, names in os.walk(os.path.join(s.d, "captures")) for n in names if n == "swap.cap"]
        os.rename(path, path + ".orig")
        with open(path, "wb") as f:
            f.write(b"FORGED-BY-NOBODY" * 100)
        final = ops.wait(name="swap", timeout_s=30)
        [inst] = final.instances
        assert (inst.packet_capture_status, list(inst.packet_capture_error)) == ("Error", ["LocalFileFailed"])
        assert "swap.cap is not the file the agent wrote (it was replaced or linked); refused" in inst.error_message
        assert not inst.files[0].sha256
        assert not inst.files[0].upload_complete
    with s.client(s.tokens["boss"]) as boss:
        assert boss.download(name="swap", dest=str(tmp_path / "dl")) == []  # nothing verified to write
        with pytest.raises(sdk.FleetcapError) as e:
            b"".join(boss.read_file(name="swap", instance_id=inst.instance_id))
        assert (e.value.code, e.value.message.split(" and the")[0]) == (
            ErrorCode.FAILED_PRECONDITION,
            "/var/captures/swap.cap of instance 'vm1' was never stored whole,",
        )
        boss.delete(name="swap")
    for top, _, names in os.walk(os.path.join(s.d, "data")):
        for n in names:
            with open(os.path.join(top, n), "rb") as f:
                assert b"FORGED-BY-NOBODY" not in f.read(), os.path.join(top, n)
