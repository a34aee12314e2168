"""Clock skew: each agent measures its clock against the coordinator's over the control stream
and reports the offset with its uncertainty; `download --merge` moves each instance's packets by
its offset and says so in that interface's comment, so that a packet crossing two instances
comes out in causal order. Instance 1's agent runs 2 s ahead (FLEETCAP_TEST_CLOCK_OFFSET_S, a
documented test-only setting); both capture lo, so both see every request and every reply."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from fleetcap.clients import sdk
from tests.integration.conftest import wait_every_instance
from tests.integration.fleet_support import free_udp_port, two_agents

pytestmark = pytest.mark.integration

EXCHANGES = 5
THINK_S = 0.15  # the server's time before it replies: far above the offset's uncertainty


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with two_agents(tmp_path_factory.mktemp("skew"), FLEETCAP_TEST_CLOCK_OFFSET_S="2") as f:
        yield f


def exchange(port: int) -> None:
    """EXCHANGES request-reply pairs: Q<i> to the server's port, R<i> back after THINK_S."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", port))

    def serve() -> None:
        for _ in range(EXCHANGES):
            data, peer = server.recvfrom(100)
            time.sleep(THINK_S)
            server.sendto(b"R" + data[1:], peer)

    t = threading.Thread(target=serve)
    t.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        for i in range(EXCHANGES):
            client.sendto(b"Q" + bytes([i]) * 40, ("127.0.0.1", port))
            client.recvfrom(100)
    t.join()
    server.close()


def fields(path, *names: str) -> list[list[str]]:
    t = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", *sum((["-e", n] for n in names), [])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line.split("\t") for line in t.stdout.splitlines()]


def epoch_us(text: str) -> int:
    """tshark's frame.time_epoch ("1764712345.123456000") in whole microseconds, without floats."""
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000 + int((frac + "000000")[:6])


def test_the_merge_corrects_each_instance_by_its_measured_offset(fleet, tmp_path):
    port = free_udp_port()
    with sdk.Client(fleet.api) as c:
        c.create(
            name="skew-1",
            target="web",
            target_type="AzureVMSS",
            resource_group="rg1",
            storage_account="local",
            file_path="/var/captures/skew-1.cap",
            time_limit_in_seconds=4,
            filters=[{"protocol": "UDP", "localPort": str(port)}],
        )
        wait_every_instance(c, "skew-1")
        time.sleep(0.3)
        exchange(port)
        final = c.wait(name="skew-1", timeout_s=30)
    one, two = final.instances
    # Measured: instance 0 on time, instance 1 two seconds ahead (its times need -2 s), each within
    # its uncertainty plus what a loaded 2-core machine adds.
    assert one.clock_uncertainty_us > 0
    assert two.clock_uncertainty_us > 0
    assert abs(one.clock_offset_us) <= one.clock_uncertainty_us + 5000, one
    assert abs(two.clock_offset_us + 2_000_000) <= two.clock_uncertainty_us + 5000, two
    r = fleet.cli("capture", "download", "--name", "skew-1", "--dest", str(tmp_path / "dl"), "--merge")
    assert r.returncode == 0, r.stdout + r.stderr
    # The instances' own files are left as captured: instance 1's times are 2 s ahead of
    # instance 0's for the very same packets (each packet socket stamps it, a microsecond apart at most).
    t0 = [epoch_us(x[0]) for x in fields(tmp_path / "dl" / "0" / "skew-1.cap", "frame.time_epoch")]
    t1 = [epoch_us(x[0]) for x in fields(tmp_path / "dl" / "1" / "skew-1.cap", "frame.time_epoch")]
    assert len(t0) == len(t1) == 2 * EXCHANGES
    assert all(abs(b - a - 2_000_000) <= 5 for a, b in zip(t0, t1)), [b - a for a, b in zip(t0, t1)]
    # The merge: each reply after every copy of its request.
    rows = fields(tmp_path / "dl" / "skew-1.pcapng", "frame.interface_id", "data.data")
    order = [(r[1][:4], r[0]) for r in rows]  # ("51" Q / "52" R + the exchange's byte, interface)
    assert len(order) == 4 * EXCHANGES
    for i in range(EXCHANGES):
        q = [k for k, (tag, _) in enumerate(order) if tag == f"51{i:02x}"]
        r_ = [k for k, (tag, _) in enumerate(order) if tag == f"52{i:02x}"]
        assert len(q) == len(r_) == 2 and max(q) < min(r_), (i, order)
    # Uncorrected, instance 1's copies would all come 2 s late, after instance 0's replies.
    assert sorted(t0 + t1)[2 * EXCHANGES - 1] < min(t1)
    # Each interface's comment records the correction.
    text = subprocess.run(
        ["tshark", "-X", "read_format:MIME Files Format", "-r", str(tmp_path / "dl" / "skew-1.pcapng"), "-V"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for inst in (one, two):
        assert (
            f"fleetcap: timestamps corrected by {inst.clock_offset_us:+d} us, this instance's clock offset to "
            f"the coordinator's (uncertainty +/- {inst.clock_uncertainty_us} us)"
        ) in text
