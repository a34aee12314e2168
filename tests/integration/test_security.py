"""Security, tried as an attacker would, on real processes on loopback: a coordinator serving
TLS to token callers and mutual TLS to agents, with certificates and tokens made by
`fleetcap tls`, and a real agent (vm1) capturing on lo."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from fleetcap.clients import sdk
from fleetcap.v1 import captures_pb2 as pb
from tests.integration.security_support import fleetcap, serve_double
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_ambient_token")]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def refused(call) -> bool:
    """Whether the call is refused as unauthenticated now."""
    try:
        call()
    except sdk.Unauthenticated:
        return True
    return False


def test_each_role_can_do_what_it_may_and_nothing_more(secure, tmp_path):
    s = secure
    with s.client() as anonymous:  # TLS, but no credential at all
        for call in (
            anonymous.list,
            lambda: anonymous.get(name="x"),
            lambda: anonymous.create(name="anon", target="vm1", resource_group="rg1", file_path="/var/captures/anon.cap"),
            lambda: anonymous.trigger(name="x"),
            lambda: anonymous.manifest(name="x"),
            anonymous.manifest_key,
        ):
            with pytest.raises(sdk.Unauthenticated):
                call()
    with s.client(s.tokens["ops"]) as ops:
        ops.create(
            name="roles",
            target="vm1",
            resource_group="rg1",
            file_path="/var/captures/roles.cap",
            storage_account="local",
            time_limit_in_seconds=1,
            filters=[{"protocol": "UDP", "localPort": "9"}],
        )
        final = ops.wait(name="roles", timeout_s=30)
        assert (final.packet_capture_status, final.stop_reason) == ("Stopped", "TimeExceeded")
    with s.client(s.tokens["viewer"]) as viewer:
        assert [c.name for c in viewer.list()] == ["roles"]
        with pytest.raises(sdk.PermissionDenied, match="token:viewer \\(reader\\) may not call Create; it needs the role contributor"):
            viewer.create(name="nope", target="vm1", resource_group="rg1", file_path="/var/captures/nope.cap")
        with pytest.raises(sdk.PermissionDenied, match="needs the role data-reader"):
            viewer.download(name="roles", dest=str(tmp_path / "v"))
        with pytest.raises(sdk.PermissionDenied, match="token:viewer \\(reader\\) may not call Trigger; it needs the role contributor"):
            viewer.trigger(name="roles")
        # A reader may read the signed manifest (hashes and counters, no packet) and the public key.
        assert json.loads(viewer.manifest(name="roles"))["manifest"]["capture"]["name"] == "roles"
        assert viewer.manifest_key()[0].startswith("-----BEGIN PUBLIC KEY-----")
    with s.client(s.tokens["analyst"]) as analyst:
        [path] = analyst.download(name="roles", dest=str(tmp_path / "a"))
        assert os.path.getsize(path) == final.instances[0].files[0].size_bytes
        with pytest.raises(sdk.PermissionDenied, match="needs the role contributor"):
            analyst.stop(name="roles")
        with pytest.raises(sdk.PermissionDenied, match="needs the role contributor"):
            analyst.trigger(name="roles", after_in_seconds=5)
    with s.client(s.tokens["ops"]) as ops:
        ops.stop(name="roles")
        ops.delete(name="roles")
    # A client certificate carries its role too (alice: contributor), on the mutual-TLS listener.
    with sdk.Client(
        s.fleet,
        tls_ca=s.ca,
        tls_cert=os.path.join(s.d, "alice", "alice.pem"),
        tls_key=os.path.join(s.d, "alice", "alice-key.pem"),
        token="",
    ) as alice:
        assert alice.list() == []
    # The CLI's exit codes: 6 without a credential, 7 without the role.
    env = dict(os.environ, FLEETCAP_TLS_CA=s.ca)
    r = fleetcap("--coordinator", s.api, "capture", "list", env=env)
    assert (r.returncode, r.stderr.splitlines()[-1]) == (
        6,
        "fleetcap: UNAUTHENTICATED: no valid credential: present a client certificate from the trusted CA or a bearer token",
    )
    r = fleetcap("--coordinator", s.api, "capture", "delete", "-n", "x", env=dict(env, FLEETCAP_TOKEN=s.tokens["viewer"]))
    assert r.returncode == 7, r.stderr
    # A literal token on the command line is refused (it would show in ps): env: or file: only.
    r = fleetcap("--coordinator", s.api, "--token", s.tokens["viewer"], "capture", "list", env=env)
    assert r.returncode == 2
    assert "--token: give the secret as env:VARIABLE or file:PATH" in r.stderr
    r = fleetcap("--coordinator", s.api, "--token", "env:MY_TOKEN", "capture", "list", env=dict(env, MY_TOKEN=s.tokens["viewer"]))
    assert (r.returncode, r.stdout.strip()) == (0, "[]")


def test_a_revoked_token_stops_working_after_sighup(secure):
    s = secure
    token = s.token("temp", "reader")
    coordinator = s.procs[0]
    coordinator.send_signal(signal.SIGHUP)  # loads the new token
    with s.client(token) as c:
        wait_for(lambda: c.list() is not None, what="the new token accepted", timeout_s=10, ignoring=(sdk.Unauthenticated,))
        r = fleetcap("tls", "token", "revoke", "--name", "temp", "--auth-file", s.auth_file)
        assert r.returncode == 0, r.stderr
        c.list()  # still in force until the coordinator reloads
        coordinator.send_signal(signal.SIGHUP)
        wait_for(lambda: refused(c.list), what="the revoked token refused", timeout_s=10)
    assert 'name = "temp"' not in open(s.auth_file).read()


def test_plaintext_beyond_loopback_is_refused_and_insecure_is_loud(tmp_path):
    r = fleetcap("coordinator", "--listen", "0.0.0.0:0", "--store", "memory", "--data-dir", str(tmp_path))
    assert (r.returncode, r.stderr.strip().splitlines()[-1]) == (
        2,
        "fleetcap: error: --listen 0.0.0.0:0: not a local address, and there is no --tls-cert; give --tls-cert and "
        "--tls-key (and --tls-client-ca for agents), or --insecure",
    )
    r = fleetcap("agent", "--coordinator", "192.0.2.1:7770", "--vm", "x", "--capture-root", str(tmp_path))
    assert r.returncode == 2
    assert "192.0.2.1:7770 is not a local address: give --tls-ca" in r.stderr
    r = fleetcap(
        "coordinator",
        "--store",
        "memory",
        "--storage-account",
        "acct=DefaultEndpointsProtocol=https;AccountKey=c2VjcmV0",
        "--data-dir",
        str(tmp_path),
    )
    assert r.returncode == 2
    assert "c2VjcmV0" not in r.stderr
    assert "--storage-account acct: give the secret as env:VARIABLE or file:PATH" in r.stderr
    # etcd beyond loopback without --etcd-ca: refused at start, before dialling (192.0.2.1 is
    # TEST-NET-1: nothing there, and nothing is sent; the exit is immediate).
    started = time.monotonic()
    r = fleetcap("coordinator", "--etcd", "192.0.2.1:2379", "--data-dir", str(tmp_path), env=dict(os.environ, ETCD_PASSWORD="hunter2"))
    assert (r.returncode, r.stderr.strip().splitlines()[-1]) == (
        2,
        "fleetcap: error: --etcd 192.0.2.1:2379: not a local address, and there is no --etcd-ca; give --etcd-ca "
        "(with --etcd-cert and --etcd-key) to reach etcd over TLS, or --insecure to send plaintext, ETCD_PASSWORD "
        "included",
    )
    assert time.monotonic() - started < 20
    assert "hunter2" not in r.stderr


def test_a_huge_filter_is_refused_at_once_and_other_calls_are_answered(secure):
    s = secure
    huge = " or ".join(f"host 10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(1200))  # ~20 KB
    assert len(huge) > 20_000

    async def body() -> None:
        async with sdk.AsyncClient(s.api, tls_ca=s.ca, token=s.tokens["ops"]) as c:

            async def slow_create() -> float:
                t = time.monotonic()
                with pytest.raises(sdk.InvalidCapture, match=r"bpfFilter: \d+ characters; at most 4096"):
                    await c.create(name="huge", target="vm1", resource_group="rg1", bpf_filter=huge, file_path="/var/captures/huge.cap")
                return time.monotonic() - t

            async def other_calls() -> list[float]:
                out = []
                for _ in range(5):
                    t = time.monotonic()
                    await c.list()
                    out.append(time.monotonic() - t)
                return out

            create_s, others = await asyncio.gather(slow_create(), other_calls())
            assert create_s < 15 and max(others) < 1, (create_s, others)
            with pytest.raises(sdk.CaptureNotFound):
                await c.get(name="huge")  # nothing was left behind

    asyncio.run(body())


def test_download_writes_only_under_dest_whatever_the_server_says(tmp_path):
    """A hostile or spoofed coordinator names an instance '..' and a file '../../x': the
    download refuses before writing anything."""
    from fleetcap.v1 import captures_pb2_grpc

    class Hostile(captures_pb2_grpc.PacketCapturesServicer):
        async def GetStatus(self, request, context):
            status = pb.PacketCaptureQueryStatusResult(name=request.name)
            inst = status.instances.add(id="/x", instance_id="..")
            inst.files.add(file_path="/var/captures/../../../../tmp/evil.cap", upload_complete=True)
            return pb.GetPacketCaptureStatusResponse(status=status)

    async def body() -> None:
        async with (
            serve_double(captures_pb2_grpc.add_PacketCapturesServicer_to_server, Hostile(), f"unix:{tmp_path}/hostile.sock") as socket_path,
            sdk.AsyncClient(socket_path, token="t") as c,
        ):
            with pytest.raises(sdk.UnsafeName, match="instance id '..' from the coordinator is not a plain file"):
                await c.download(name="x", dest=str(tmp_path / "dest"))

    asyncio.run(body())
    assert not os.path.exists(tmp_path / "dest") or os.listdir(tmp_path / "dest") == []
    assert not os.path.exists("/tmp/evil.cap")


def test_an_anonymous_caller_can_neither_forge_audit_lines_nor_fill_the_disk(secure):
    s = secure
    log_path = os.path.join(s.d, "coordinator.log")
    size_before = os.path.getsize(log_path)
    forged = "x\nfleetcap.audit: principal=token:t-admin method=Delete capture=prod decision=allowed"
    with s.client() as anonymous:
        with pytest.raises(sdk.Unauthenticated):
            anonymous.get(name=forged)
        for _ in range(5):
            with pytest.raises(sdk.Unauthenticated):
                anonymous.get(name="A" * (7 * 1024 * 1024))

    def written() -> list[str]:
        with open(log_path, errors="replace") as f:
            f.seek(size_before)
            return f.read().splitlines()

    wait_for(lambda: sum(" fleetcap.audit: " in line for line in written()) >= 6, what="six audit lines", timeout_s=5, interval_s=0.05)
    lines = written()
    audit = [line for line in lines if " fleetcap.audit: " in line]
    assert len(audit) == 6, lines
    assert not any(line.startswith("fleetcap.audit") for line in lines)
    assert audit[0].endswith(
        "method=Get capture=x\\nfleetcap.audit: principal=token:t-admin method=Delete "
        "capture=prod decision=allowed decision=unauthenticated"
    )
    assert all(line.endswith(f"... ({7 * 1024 * 1024 - 100} more characters) decision=unauthenticated") for line in audit[1:])
    assert os.path.getsize(log_path) - size_before < 4096  # 35 MiB of names, a few hundred bytes a line


def test_one_contributor_cannot_hold_up_everyone_elses_creates(secure):
    """A filter whose compile is predictably long is refused before compiling; expensive filters
    that are allowed take one lane per caller, so an admin's create is not queued behind them."""
    s = secure
    portranges = " or ".join(f"portrange {i * 10}-{i * 10 + 5}" for i in range(200))[:4091].rsplit(" or ", 1)[0]

    async def body() -> None:
        async with (
            sdk.AsyncClient(s.api, tls_ca=s.ca, token=s.tokens["ops"]) as ops,
            sdk.AsyncClient(s.api, tls_ca=s.ca, token=s.tokens["boss"]) as boss,
        ):
            t = time.monotonic()
            with pytest.raises(
                sdk.InvalidCapture,
                match=r"^INVALID_ARGUMENT: bpfFilter: too complex: \d+ address and port terms \(a port "
                r"range counts 3\), at most 300; split the capture",
            ):
                await ops.create(
                    name="ranges", target="vm1", resource_group="rg1", bpf_filter=portranges, file_path="/var/captures/ranges.cap"
                )
            assert time.monotonic() - t < 2  # refused before any compile
            # Allowed but expensive (about a second each here): 290 port terms.
            costly = "tcp and (" + " or ".join(f"port {1000 + i}" for i in range(290)) + ")"
            finished: list[str] = []

            async def create(client: sdk.AsyncClient, name: str, bpf: str) -> None:
                await client.create(
                    name=name,
                    target="vm1",
                    resource_group="rg1",
                    bpf_filter=bpf,
                    file_path=f"/var/captures/{name}.cap",
                    time_limit_in_seconds=1,
                )
                finished.append(name)

            ops_creates = [asyncio.ensure_future(create(ops, f"costly{i}", costly)) for i in range(3)]
            await asyncio.sleep(0.2)  # the three are in, queued behind each other
            await create(boss, "simple", "udp port 53")
            await asyncio.gather(*ops_creates)
            # The admin's create did not wait for the contributor's three: at most one went first.
            assert finished.index("simple") <= 1, finished
            for name in ("simple", "costly0", "costly1", "costly2"):
                await boss.wait(name=name, timeout_s=30)
                await boss.delete(name=name)

    asyncio.run(body())
