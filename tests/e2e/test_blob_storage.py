"""End to end with Azure Blob storage: Azurite (npm) in the hub namespace as storage account
"blob1". Blobs are read back with azure-storage-blob and must equal the instances' files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.parse

import pytest

from deploy.localfleet import LocalFleet
from tests import pcaps
from tests.e2e.support import PAYLOAD, expected, running_fleet, wait_running
from tests.waiting import let_time_pass, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-blob")]

BLOB_URL = re.compile(
    r"^http://127\.0\.0\.1:10000/devstoreaccount1/network-watcher-logs/subscriptions/local/resourcegroups/rg1/"
    r"providers/microsoft\.compute/virtualmachinescalesets/web/virtualmachines/(\d+)/\d{4}/\d{2}/\d{2}/"
    r"packetcapture_\d{2}_\d{2}_\d{2}_\d{3}\.cap$"
)
RETRY_BUDGET_S = 8


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    # At DEBUG, so that the SAS test sees what every library logs there (the Azure SDK, urllib3).
    with running_fleet(tmp_path_factory, "blobfleet", 3, azurite=True, storage_retry_s=RETRY_BUDGET_S, log_level="DEBUG") as f:
        yield f


def blob_bytes(fleet: LocalFleet, url: str, tmp_path) -> bytes:
    dest = tmp_path / f"blob-{abs(hash(url))}.cap"
    fleet.fetch_blob(url, str(dest))
    return dest.read_bytes()


def test_both_file_and_blob_with_azure_layout(fleet, client, tmp_path):
    i0, i1, i2 = fleet.instances
    # The accounts captures can name, and never the key in the connection string.
    accounts = [(a.name, a.kind, a.endpoint) for a in client.list_storage_accounts()]
    assert accounts[0][:2] == ("local", "Local")
    assert accounts[0][2].startswith("file:///")
    assert accounts[1:] == [
        ("blob1", "AzureBlob", "http://127.0.0.1:10000/devstoreaccount1/"),
        ("sas1", "AzureBlob", "http://127.0.0.1:10000/devstoreaccount1/"),
    ]  # no SAS in it
    created = client.create(
        name="blob-both",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["0", "1"],
        time_limit_in_seconds=4,
        storage_account="blob1",
        file_path="/var/captures/both.cap",
        filters=[{"protocol": "UDP", "localPort": "6001"}],
    )
    prefix = created.properties.storage_location.storage_path
    assert prefix.startswith(
        "http://127.0.0.1:10000/devstoreaccount1/network-watcher-logs/subscriptions/local/"
        "resourcegroups/rg1/providers/microsoft.compute/virtualmachinescalesets/web/"
    )
    wait_running(client, "blob-both")
    fleet.send_udp(i2, i0, dport=6001, sport=41000, count=30, size=PAYLOAD, tag=20)
    fleet.send_udp(i2, i1, dport=6001, sport=41001, count=17, size=PAYLOAD, tag=21)
    final = client.wait(name="blob-both", timeout_s=60)
    assert (final.packet_capture_status, final.stop_reason) == ("Stopped", "TimeExceeded")
    want = {"0": expected(i2, 41000, i0, 6001, 20, 30), "1": expected(i2, 41001, i1, 6001, 21, 17)}
    for inst in final.instances:
        (f,) = inst.files
        m = BLOB_URL.match(f.storage_path)
        assert m and m.group(1) == inst.instance_id, f.storage_path
        # Azure's scale-set form: the instance blobs without /virtualmachines/{id}, without .cap
        assert f.storage_path.replace(f"/virtualmachines/{inst.instance_id}", "")[: -len(".cap")] == prefix
        stored = blob_bytes(fleet, f.storage_path, tmp_path)
        local_path = os.path.join(fleet.instances[int(inst.instance_id)].capture_root, "both.cap")
        with open(local_path, "rb") as lf:
            assert stored == lf.read()  # Both: the instance keeps its file, the blob is identical
        assert f.upload_complete
        assert f.sha256 == f.stored_sha256
        path = tmp_path / f"{inst.instance_id}.cap"
        path.write_bytes(stored)
        assert pcaps.flows(pcaps.read(str(path)).records) == want[inst.instance_id]


def test_azurite_killed_and_restarted_mid_capture(fleet, client, tmp_path):
    i0, i2 = fleet.instances[0], fleet.instances[2]
    client.create(
        name="blob-restart",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["2"],
        time_limit_in_seconds=12,
        storage_account="blob1",
        filters=[{"protocol": "UDP", "localPort": "6002"}],
    )
    wait_running(client, "blob-restart")
    fleet.send_udp(i0, i2, dport=6002, sport=41010, count=20, size=PAYLOAD, tag=22)
    wait_for(
        lambda: client.get_status(name="blob-restart").instances[0].files[0].uploaded_bytes > 24,
        what="the first datagrams acknowledged as stored",
        timeout_s=20,
        interval_s=0.2,
    )
    fleet.stop_azurite(signal.SIGKILL)
    fleet.send_udp(i0, i2, dport=6002, sport=41010, count=20, size=PAYLOAD, tag=23)
    let_time_pass(3, why="Azurite stays down while the datagrams come")
    fleet.start_azurite()
    fleet.send_udp(i0, i2, dport=6002, sport=41010, count=20, size=PAYLOAD, tag=24)
    final = client.wait(name="blob-restart", timeout_s=90)
    assert (final.packet_capture_status, final.stop_reason) == ("Stopped", "TimeExceeded")
    (inst,) = final.instances
    f = inst.files[0]
    assert f.upload_complete
    assert f.sha256 == f.stored_sha256
    assert f.uploaded_bytes == inst.bytes_captured
    path = tmp_path / "restart.cap"
    path.write_bytes(blob_bytes(fleet, f.storage_path, tmp_path))
    want = sum((expected(i0, 41010, i2, 6002, tag, 20) for tag in (22, 23, 24)), start=expected(i0, 0, i2, 0, 0, 0))
    assert pcaps.flows(pcaps.read(str(path)).records) == want
    # Storage only: once the blob is verified, the instance's copy is gone.
    local_dir = os.path.join(fleet.instances[2].capture_root, "fleetcap")
    assert [n for n in os.listdir(local_dir) if n.startswith("blob-restart-")] == []


def test_storage_down_past_the_retry_budget_keeps_the_local_file(fleet, client):
    i0, i1 = fleet.instances[:2]
    fleet.stop_azurite()
    try:
        client.create(
            name="blob-down",
            target="web",
            target_type="AzureVMSS",
            resource_group="rg1",
            include=["1"],
            time_limit_in_seconds=3,
            storage_account="blob1",
            filters=[{"protocol": "UDP", "localPort": "6003"}],
        )
        wait_running(client, "blob-down")
        fleet.send_udp(i0, i1, dport=6003, sport=41020, count=9, size=PAYLOAD, tag=25)
        final = client.wait(name="blob-down", timeout_s=3 + RETRY_BUDGET_S + 60)
    finally:
        fleet.start_azurite()
    assert final.packet_capture_status == "Error"
    assert list(final.packet_capture_error) == ["StorageFailed"]
    (inst,) = final.instances
    assert inst.stop_reason == "TimeExceeded"  # the capture itself ended normally
    assert "the instance keeps the file" in inst.error_message
    f = inst.files[0]
    assert not f.upload_complete
    local = os.path.join(fleet.instances[1].capture_root, f.file_path.removeprefix("/var/captures/"))
    assert pcaps.flows(pcaps.read(local).records) == expected(i0, 41020, i1, 6003, 25, 9)


def test_a_sas_never_shows_in_output_logs_or_metrics(fleet, client, tmp_path):
    """A storage account given as a SAS connection string: its signature appears in no API
    response, CLI output or log line, although the SAS is what stores the file."""
    i0, i1 = fleet.instances[:2]
    client.create(
        name="sas-1",
        target="web",
        target_type="AzureVMSS",
        resource_group="rg1",
        include=["1"],
        time_limit_in_seconds=3,
        storage_account="sas1",
        filters=[{"protocol": "UDP", "localPort": "6004"}],
    )
    wait_running(client, "sas-1")
    fleet.send_udp(i0, i1, dport=6004, sport=41030, count=5, size=PAYLOAD, tag=26)
    final = client.wait(name="sas-1", timeout_s=60)
    (inst,) = final.instances
    f = inst.files[0]
    assert (final.stop_reason, f.upload_complete, f.stored_sha256) == ("TimeExceeded", True, f.sha256)
    assert BLOB_URL.match(f.storage_path), f.storage_path
    outputs = []
    for args in (
        ["capture", "show", "-n", "sas-1"],
        ["capture", "show-status", "-n", "sas-1"],
        ["capture", "list"],
        ["storage-accounts", "list"],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "fleetcap", "--coordinator", fleet.api_address, *args],
            capture_output=True,
            text=True,
            env=fleet.cli_env(),
        )
        assert r.returncode == 0, r.stderr
        outputs.append(r.stdout + r.stderr)
    assert "sas1" in outputs[3]
    assert "devstoreaccount1" in outputs[3]
    logs = [open(fleet.log_path(n), errors="replace").read() for n in ("coordinator", "agent-i0", "agent-i1")]
    signature = re.search(r"sig=([^&;]+)", fleet.azurite_sas_connection_string).group(1)
    for text in outputs + logs:
        assert signature not in text
        assert urllib.parse.unquote(signature) not in text
        assert re.search(r"sig=(?!REDACTED)", text) is None
        assert "SharedAccessSignature" not in text
