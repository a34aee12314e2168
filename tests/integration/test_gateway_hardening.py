"""The gateway tried as an attacker and as a demanding client would: anonymous and forged
callers, DNS rebinding, cross-site bodies, idle and slow connections, a full house, Range
requests, the streamed merge against the SDK's own, IPv6, refusing to listen where it would
expose itself, and a graceful stop."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from fleetcap.clients import sdk
from fleetcap.clients.rest.downloads import attachment
from fleetcap.core.auth import Role
from tests import pcaps
from tests.conftest import TOKENS
from tests.integration.gateway_support import ARM, ROOT, Gateway
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
API = "?api-version=2024-05-01"
VM1 = "/subscriptions/local/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"
PORT = 47123  # the UDP port the capture of this module records


@pytest.fixture(scope="module")
def gateway(coordinator, tmp_path_factory):
    g = Gateway(
        coordinator,
        tmp_path_factory.mktemp("hard"),
        "--idle-timeout",
        "1",
        "--max-requests",
        "4",
        "--request-timeout",
        "2",
        "--public-host",
        "gw.example",
    )
    yield g
    g.stop()


@pytest.fixture(scope="module")
def stored(gateway, coordinator):
    """A finished capture of vm1 holding 40 UDP packets: its final status and stored file."""
    with sdk.Client(coordinator) as c:
        c.create(
            name="hard-1",
            target=VM1,
            file_path="/var/captures/hard-1.cap",
            storage_account="local",
            time_limit_in_seconds=60,
            filters=[{"protocol": "UDP", "localPort": str(PORT)}],
        )
        wait_for(
            lambda: c.get_status(name="hard-1").packet_capture_status == "Running",
            what='c.get_status(name="hard-1").packet_capture_status == "Running"',
            timeout_s=20,
            interval_s=0.1,
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(40):
                s.sendto(bytes([i]) * (100 + i), ("127.0.0.1", PORT))
        time.sleep(1)
        c.stop(name="hard-1")
        final = c.wait(name="hard-1", timeout_s=30)
        data = b"".join(c.read_file(name="hard-1", instance_id=final.instances[0].instance_id))
    assert final.instances[0].packets_captured == 40
    yield final, data
    with sdk.Client(coordinator) as c:
        c.delete(name="hard-1")


def tls_connect(gateway, host: str = "127.0.0.1") -> ssl.SSLSocket:
    raw = socket.create_connection((host, gateway.port), 5)
    return gateway.ssl_context().wrap_socket(raw, server_hostname=host)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except (ConnectionResetError, ssl.SSLError):
        return True


# -- who may call ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{ARM}{API}"),
        ("GET", f"{ARM}/x{API}"),
        ("POST", f"{ARM}/x/queryStatus{API}"),
        ("DELETE", f"{ARM}/x{API}"),
        ("GET", "/fleetcap/v1/agents"),
        ("GET", "/fleetcap/v1/storage-accounts"),
        ("GET", "/fleetcap/v1/captures/x/files?instance=vm1"),
        ("GET", "/fleetcap/v1/captures/x/merged"),
        ("GET", "/fleetcap/v1/captures/x/events"),
        ("GET", "/metrics"),
    ],
)
def test_every_data_route_needs_the_callers_token(gateway, method, path):
    for auth in (None, "Bearer fct_forged", "Bearer not a token;", f"Basic {TOKENS[Role.ADMIN]}"):
        status, headers, body = gateway.request(method, path, token=None, headers={"Authorization": auth} if auth else None)
        assert status == 401, (auth, body)
        assert json.loads(body)["error"]["code"] == "AuthenticationFailed"
        assert headers["WWW-Authenticate"].startswith("Bearer")
    # A token in the URL is not a credential.
    status, _, _ = gateway.request(method, path + ("&" if "?" in path else "?") + f"access_token={TOKENS[Role.ADMIN]}", token=None)
    assert status == 401


def test_the_coordinator_decides_by_the_callers_role(gateway, coordinator):
    reader = TOKENS[Role.READER]
    assert gateway.call("GET", f"{ARM}{API}", token=reader)[0] == 200
    status, err = gateway.call(
        "PUT", f"{ARM}/hard-denied{API}", {"properties": {"target": VM1, "storageLocation": {"storageId": "local"}}}, token=reader
    )
    assert (status, err["error"]["code"]) == (403, "AuthorizationFailed")
    assert "may not call Create" in err["error"]["message"]
    # Downloads need data-reader: a reader sees the status but not the bytes.
    status, err = gateway.call("GET", "/fleetcap/v1/captures/none/merged", token=reader)
    assert status == 404  # the status read is allowed; there is no capture
    with sdk.Client(coordinator) as c:
        assert [x.name for x in c.list() if x.name == "hard-denied"] == []


def test_a_reader_gets_no_pcap_bytes(gateway, stored):
    final, _ = stored
    inst = final.instances[0].instance_id
    status, err = gateway.call("GET", f"/fleetcap/v1/captures/hard-1/files?instance={inst}", token=TOKENS[Role.READER])
    assert (status, err["error"]["code"]) == (403, "AuthorizationFailed")
    status, err = gateway.call("GET", "/fleetcap/v1/captures/hard-1/merged", token=TOKENS[Role.READER])
    assert (status, err["error"]["code"]) == (403, "AuthorizationFailed")


# -- the web's own attacks -------------------------------------------------------------------------------------


def test_dns_rebinding_an_unknown_host_is_refused(gateway):
    assert gateway.request("GET", f"{ARM}{API}", headers={"Host": "attacker.example"})[0] == 400
    assert gateway.request("GET", "/", headers={"Host": f"attacker.example:{gateway.port}"})[0] == 400
    assert gateway.request("GET", f"{ARM}{API}", headers={"Host": f"gw.example:{gateway.port}"})[0] == 200
    assert gateway.request("GET", f"{ARM}{API}", headers={"Host": f"localhost:{gateway.port}"})[0] == 200


def test_a_cross_site_body_never_acts(gateway, coordinator):
    body = json.dumps({"properties": {"target": VM1, "storageLocation": {"storageId": "local"}}}).encode()
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        status, err = gateway.call(
            "PUT", f"{ARM}/hard-csrf{API}", raw=body, headers={"Content-Type": media} if media else {"Content-Type": ""}
        )
        assert (status, err["error"]["code"]) == (415, "UnsupportedMediaType"), media
    with sdk.Client(coordinator) as c:
        assert [x.name for x in c.list() if x.name == "hard-csrf"] == []


def test_security_headers_on_pages_api_and_errors(gateway):
    for path, token in (
        ("/", None),
        ("/app.js", None),
        (f"{ARM}{API}", TOKENS[Role.ADMIN]),
        (f"{ARM}{API}", None),
        ("/nothing-here", None),
    ):
        _, headers, _ = gateway.request("GET", path, token=token)
        assert headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'self'"), path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert (headers["X-Frame-Options"], headers["X-Content-Type-Options"]) == ("DENY", "nosniff"), path
        assert headers["Strict-Transport-Security"] == "max-age=31536000"
        assert "Set-Cookie" not in headers
    assert "<script>" not in open(os.path.join(ROOT, "clients/rest/portal/index.html")).read()  # CSP: no inline code


def test_attachment_names_are_sanitized():
    assert attachment("pc1", "web_3", "pc1.cap") == 'attachment; filename="pc1_web_3_pc1.cap"'
    hostile = attachment('a"b', "x\r\nSet-Cookie: s=1", "../../etc/passwd")
    assert hostile == 'attachment; filename="a-b_x-Set-Cookie-s-1_etc-passwd"'
    assert attachment("", "") == 'attachment; filename="capture"'


# -- connections -------------------------------------------------------------------------------------------------


def test_200_idle_connections_do_not_stop_it_answering_and_are_closed(gateway):
    raw = [socket.create_connection(("127.0.0.1", gateway.port), 5) for _ in range(100)]
    handshaken = [tls_connect(gateway) for _ in range(100)]
    try:
        status, _ = gateway.call("GET", f"{ARM}{API}", timeout=10)
        assert status == 200
        # --idle-timeout 1: a connection that sends no request is closed, TLS or not.
        assert closed_within(handshaken[0], 5)
        assert all(closed_within(s, 5) for s in handshaken[1:])
    finally:
        for s in raw + handshaken:
            s.close()


def test_a_slow_headers_client_is_cut_off(gateway):
    s = tls_connect(gateway)
    try:
        s.sendall(b"GET / HTTP/1.1\r\n")
        deadline = time.monotonic() + 5
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                s.sendall(b"X-a: b\r\n")  # a header line every 0.2 s, never the end
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                closed = True
                break
            closed = closed_within(s, 0.2)
        assert closed
    finally:
        s.close()


def test_a_full_house_gets_503_with_retry_after(gateway, coordinator):
    # --max-requests 4: four requests whose bodies have not come hold the four slots (for up to
    # --request-timeout, 2 s); the fifth request is refused at once.
    held = []
    try:
        for _ in range(4):
            s = tls_connect(gateway)
            s.sendall(
                f"PUT {ARM}/hard-full{API} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: 100\r\nAuthorization: Bearer {TOKENS[Role.ADMIN]}\r\n\r\n".encode()
            )
            held.append(s)
        time.sleep(0.3)  # the four have reached the gateway's handler (well within their 2 s)
        status, headers, body = gateway.request("GET", f"{ARM}{API}")
        assert (status, headers["Retry-After"], json.loads(body)["error"]["code"]) == (503, "1", "ServiceUnavailable")
    finally:
        for s in held:
            s.close()
    wait_for(
        lambda: gateway.request("GET", f"{ARM}{API}")[0] == 200,
        what='gateway.request("GET", f"{ARM}{API}")[0] == 200',
        timeout_s=10,
        interval_s=0.1,
    )


def test_a_request_whose_body_never_comes_times_out(gateway, coordinator):
    s = tls_connect(gateway)
    try:
        s.sendall(
            f"PUT {ARM}/hard-slow{API} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKENS[Role.ADMIN]}\r\nContent-Length: 100\r\n\r\n{{".encode()
        )
        s.settimeout(10)
        reply = b""
        while b'"GatewayTimeout"' not in reply and (data := s.recv(4096)):
            reply += data
        assert reply.startswith(b"HTTP/1.1 504"), reply  # --request-timeout 2
        assert b'"GatewayTimeout"' in reply
    finally:
        s.close()
    with sdk.Client(coordinator) as c:
        assert [x.name for x in c.list() if x.name == "hard-slow"] == []


# -- downloads ------------------------------------------------------------------------------------------------


def test_ranges_resume_a_download(gateway, stored):
    final, data = stored
    f = final.instances[0].files[0]
    path = f"/fleetcap/v1/captures/hard-1/files?instance={final.instances[0].instance_id}"
    status, headers, whole = gateway.request("GET", path)
    assert (status, whole, headers["Accept-Ranges"]) == (200, data, "bytes")
    assert headers["Content-Disposition"] == 'attachment; filename="hard-1_vm1_hard-1.cap"'
    assert headers["ETag"] == f'"{f.stored_sha256}"'
    assert hashlib.sha256(whole).hexdigest() == f.sha256
    size = len(data)
    for spec, start, end in (
        ("bytes=10-19", 10, 19),
        ("bytes=100-", 100, size - 1),
        ("bytes=-7", size - 7, size - 1),
        (f"bytes=5-{size + 50}", 5, size - 1),
    ):
        status, headers, part = gateway.request("GET", path, headers={"Range": spec})
        assert (status, part) == (206, data[start : end + 1]), spec
        assert headers["Content-Range"] == f"bytes {start}-{end}/{size}"
    status, headers, body = gateway.request("GET", path, headers={"Range": f"bytes={size}-"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{size}")
    # If-Range with another file's ETag: the whole file, not a piece of a different one.
    status, _, body = gateway.request("GET", path, headers={"Range": "bytes=10-19", "If-Range": '"0000"'})
    assert (status, body) == (200, data)
    status, _, body = gateway.request(
        "GET", path, headers={"Range": "bytes=10-19", "If-Range": headers.get("ETag", f'"{f.stored_sha256}"')}
    )
    assert (status, body) == (206, data[10:20])


def test_the_streamed_merge_is_the_sdks_merge(gateway, stored, coordinator, tmp_path):
    status, headers, streamed = gateway.request("GET", "/fleetcap/v1/captures/hard-1/merged")
    assert status == 200
    assert headers["Content-Type"] == "application/x-pcapng"
    assert headers["Content-Disposition"] == 'attachment; filename="hard-1.pcapng"'
    with sdk.Client(coordinator) as c:
        written = c.download(name="hard-1", dest=str(tmp_path), merge=True)
        final = c.get_status(name="hard-1").instances[0]
    with open([p for p in written if p.endswith(".pcapng")][0], "rb") as f:
        assert streamed == f.read()
    out = (
        subprocess.run(
            ["tshark", "-r", "-", "-T", "fields", "-e", "udp.length", "-e", "frame.interface_name"],
            input=streamed,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\n")
    )
    assert [line.split("\t") for line in out if line] == [[str(8 + 100 + i), "vm1"] for i in range(40)]
    (tmp_path / "streamed.pcapng").write_bytes(streamed)
    [isb] = pcaps.interface_statistics(str(tmp_path / "streamed.pcapng"))  # what vm1 received and lost
    assert (isb.interface, isb.delivered, isb.accepted, isb.os_drops, isb.if_drops) == (
        0,
        40,
        final.packets_received,
        final.kernel_drops,
        final.interface_drops,
    )


# -- where and how it listens ---------------------------------------------------------------------------------------


def test_ipv6_loopback(coordinator, tmp_path):
    g = Gateway(coordinator, tmp_path, host="::1")
    try:
        assert g.call("GET", f"{ARM}{API}")[0] == 200
        assert g.request("GET", f"{ARM}{API}", headers={"Host": f"[::1]:{g.port}"})[0] == 200
    finally:
        g.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "0.0.0.0:{port}"], "--listen: 0.0.0.0:{port} is beyond loopback; serve HTTPS"),
        (
            ["--listen", "0.0.0.0:{port}", "--tls-cert", "{cert}", "--tls-key", "{key}"],
            "--webhook-token: required when the gateway listens beyond loopback",
        ),
        (["--tls-cert", "{cert}"], "--tls-cert and --tls-key go together"),
        (["--webhook-token", "s3cret"], "--webhook-token: give the secret as env:VARIABLE or file:PATH"),
    ],
)
def test_it_refuses_to_expose_itself(coordinator, tmp_path, args, message, refused_port):
    from fleetcap.core import pki

    pki.create_ca(str(tmp_path / "ca"))
    issued = pki.issue_gateway(str(tmp_path / "ca"), str(tmp_path), name="gw")
    port = refused_port  # the gateway refuses before it would bind anything
    fill = lambda a: a.format(port=port, cert=issued.cert_path, key=issued.key_path)
    r = subprocess.run(
        [sys.executable, "-m", "fleetcap", "--coordinator", coordinator, "gateway", *[fill(a) for a in args]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2, r.stderr
    assert fill(message) in r.stderr
    assert "Traceback" not in r.stderr


def test_sigterm_is_a_graceful_stop(coordinator, tmp_path):
    g = Gateway(coordinator, tmp_path)
    idle = tls_connect(g)
    try:
        assert g.call("GET", f"{ARM}{API}")[0] == 200
        started = time.monotonic()
        g.proc.send_signal(signal.SIGTERM)
        # uvicorn finishes what is in flight, then ends by its signal again, as a process
        # manager expects (systemd counts a SIGTERM exit as a clean stop).
        assert g.proc.wait(20) == -signal.SIGTERM
        assert time.monotonic() - started < 15
        log = g.log()
        assert "Shutting down" in log and "Finished server process" in log and "Traceback" not in log, log
    finally:
        idle.close()
        g.stop()


# -- one caller cannot take the gateway from the others ---------------------------------------------------


def open_event_stream(gateway, name: str, token: str) -> tuple[ssl.SSLSocket, bytes]:
    """An event stream held open: the socket and the response's status line."""
    s = tls_connect(gateway)
    s.sendall(f"GET /fleetcap/v1/captures/{name}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    s.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, head
        head += chunk
    return s, head.split(b"\r\n", 1)[0]


@pytest.fixture
def running(coordinator):
    """A capture of vm1 that runs for the test's length."""
    with sdk.Client(coordinator) as c:
        c.create(
            name="hard-streams",
            target=VM1,
            file_path="/var/captures/hard-streams.cap",
            time_limit_in_seconds=120,
            filters=[{"protocol": "UDP", "localPort": "47124"}],
        )
        yield "hard-streams"
        c.stop(name="hard-streams")
        c.wait(name="hard-streams", timeout_s=30)
        c.delete(name="hard-streams")


def test_one_readers_event_streams_leave_the_others_served(coordinator, running, tmp_path):
    # Streams without the per-token cap, to show they cannot take the requests' connection: 140
    # streams (the coordinator allows 128 per connection) and an admin's GET is still answered at once.
    g = Gateway(coordinator, tmp_path, "--max-streams-per-caller", "1000", "--max-streams", "150")
    streams = []
    try:
        for _ in range(140):
            sock, status = open_event_stream(g, running, TOKENS[Role.READER])
            assert status == b"HTTP/1.1 200 OK"
            streams.append(sock)
        started = time.monotonic()
        status, body = g.call("GET", f"{ARM}/{running}{API}", timeout=5)
        assert (status, body["name"]) == (200, running)
        assert time.monotonic() - started < 2
        assert g.request("GET", "/style.css", token=None, timeout=5)[0] == 200
        # --max-streams: the 151st stream of anyone gets 503, and requests are still served.
        for _ in range(10):
            sock, status = open_event_stream(g, running, TOKENS[Role.READER])
            streams.append(sock)
        sock, status = open_event_stream(g, running, TOKENS[Role.ADMIN])
        streams.append(sock)
        assert status == b"HTTP/1.1 503 Service Unavailable"
        assert g.call("GET", f"{ARM}/{running}{API}", timeout=5)[0] == 200
    finally:
        for sock in streams:
            sock.close()
        g.stop()


def test_a_token_holds_at_most_its_share_of_streams_and_requests(gateway, running):
    streams = [open_event_stream(gateway, running, TOKENS[Role.READER]) for _ in range(5)]
    try:
        assert [status for _, status in streams] == [b"HTTP/1.1 200 OK"] * 4 + [b"HTTP/1.1 429 Too Many Requests"]
        assert b'"code":"TooManyRequests"' in streams[4][0].recv(4096).replace(b" ", b"")
        # Another token is not affected, and the reader's ordinary requests are still served.
        sock, status = open_event_stream(gateway, running, TOKENS[Role.ADMIN])
        sock.close()
        assert status == b"HTTP/1.1 200 OK"
        assert gateway.call("GET", f"{ARM}/{running}{API}", token=TOKENS[Role.READER])[0] == 200
    finally:
        for sock, _ in streams:
            sock.close()

    # A closed stream gives its place back.
    def opens() -> bool:
        sock, status = open_event_stream(gateway, running, TOKENS[Role.READER])
        sock.close()
        return status == b"HTTP/1.1 200 OK"

    wait_for(opens, what="a new event stream once one closed", timeout_s=10, interval_s=0.2)


@pytest.mark.parametrize("size", [70 * 1024, 72 * 1024 * 1024])
def test_a_huge_header_gets_431_and_does_not_stall_the_others(gateway, size):
    from fleetcap.clients.rest import server

    rss_before = _rss_kib(gateway.proc.pid)
    answered: list[float] = []

    def others() -> None:  # while the hostile header is on its way
        for _ in range(5):
            t = time.monotonic()
            assert gateway.request("GET", "/style.css", token=None, timeout=5)[0] == 200
            answered.append(time.monotonic() - t)

    hostile = tls_connect(gateway)
    hostile.settimeout(30)
    refused = b""
    other = threading.Thread(target=others)
    try:
        hostile.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        other.start()
        block, sent = b"A" * (1024 * 1024), 0
        while sent < size:
            hostile.sendall(block[: size - sent])
            sent += min(len(block), size - sent)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass  # cut off by the gateway part-way, as it should be
    with contextlib.suppress(OSError, ssl.SSLError):
        refused = hostile.recv(4096)
    hostile.close()
    other.join(30)
    if size < 1024 * 1024:
        assert refused.startswith(b"HTTP/1.1 431 ")
    else:  # the gateway closed with bytes unread: the 431 may be lost in the reset
        assert refused.startswith(b"HTTP/1.1 431 ") or refused == b""
    assert f"a request's headers passed {server.MAX_HEAD_BYTES} bytes; connection closed" in gateway.log()
    assert len(answered) == 5 and max(answered) < 2, answered
    assert _rss_kib(gateway.proc.pid) - rss_before < 32 * 1024  # the header was never held


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.parametrize("depth", [33, 100_000])
def test_deeply_nested_json_is_a_400_in_azures_shape(gateway, coordinator, depth):
    body = b'{"properties":' + b"[" * depth + b"]" * depth + b"}"
    for method, path in (("PUT", f"{ARM}/hard-nested{API}"), ("POST", f"{ARM}/hard-1/trigger{API}")):
        status, err = gateway.call(method, path, raw=body)
        assert (status, err["error"]["code"], err["error"]["message"]) == (
            400,
            "InvalidRequestFormat",
            "the body nests objects and arrays deeper than 32 levels",
        ), (method, path)
    with sdk.Client(coordinator) as c:
        assert [x.name for x in c.list() if x.name == "hard-nested"] == []
    assert "Traceback" not in gateway.log()
    assert "RecursionError" not in gateway.log()
