"""The public API's error contract, against a real coordinator process (with its embedded
etcd) and a real agent: exact status codes, messages that name the field, CLI exit codes,
and no state left behind by a rejected request."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fleetcap.clients import sdk
from fleetcap.clients.errors import ErrorCode

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def client(coordinator):
    with sdk.Client(coordinator) as c:
        yield c


def cli(address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fleetcap", "--coordinator", address, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


GOOD = {
    "target": "vm1",
    "resource_group": "rg1",
    "file_path": "/var/captures/ok.cap",
    "time_limit_in_seconds": 1,
    "filters": [{"protocol": "UDP", "localPort": "9"}],
}


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"name": "bad name"}, "name"),
        ({"target": ""}, "target"),
        ({"target_type": "AzureVMs"}, "targetType"),
        ({"bytes_to_capture_per_packet": -1}, "bytesToCapturePerPacket"),
        ({"total_bytes_per_session": 5_000_000_000}, "totalBytesPerSession"),
        ({"time_limit_in_seconds": 18001}, "timeLimitInSeconds"),
        ({"file_path": "/etc/passwd.cap"}, "storageLocation.filePath"),
        ({"file_path": "/var/captures/x.txt"}, "storageLocation.filePath"),
        ({"file_path": "", "storage_account": ""}, "storageLocation"),
        ({"storage_account": "nosuch"}, "storageLocation.storageId"),
        ({"include": ["0"]}, "scope"),
        ({"filters": [{"protocol": "TCP", "localPort": "1-5;7"}]}, "filters[0].localPort"),
        ({"filters": [{"protocol": "UDP"}, {"remoteIPAddress": "10.0.0.999"}]}, "filters[1].remoteIPAddress"),
        ({"filters": [{}]}, "filters[0]"),
        ({"bpf_filter": "port 99999999"}, "bpfFilter"),
    ],
)
def test_invalid_fields_are_named_and_leave_nothing(client, override, field):
    args = dict(GOOD, name="pc-invalid")
    args.update(override)
    with pytest.raises(sdk.InvalidCapture) as e:
        client.create(**args)
    assert e.value.code == ErrorCode.INVALID_ARGUMENT
    assert e.value.message.startswith(f"{field}: ")
    assert "Traceback" not in e.value.message
    assert [c.name for c in client.list() if c.name == args["name"]] == []
    with pytest.raises(sdk.CaptureNotFound):
        client.get(name=args["name"])


def test_unknown_target_and_instances_are_not_found(client):
    with pytest.raises(sdk.CaptureNotFound) as e:
        client.create(**dict(GOOD, name="pc-nf", target="vm9"))
    assert e.value.code == ErrorCode.NOT_FOUND
    assert "target: no virtual machine 'vm9'" in e.value.message
    with pytest.raises(sdk.CaptureNotFound):
        client.create(**dict(GOOD, name="pc-nf", target="web", target_type="AzureVMSS"))
    for call in (client.get, client.stop, client.delete, client.get_status):
        with pytest.raises(sdk.CaptureNotFound) as e:
            call(name="never-created")
        assert e.value.message == "packet capture 'never-created' not found"


def test_duplicate_name_is_already_exists_and_keeps_the_first(client):
    first = client.create(**dict(GOOD, name="pc-dup"))
    with pytest.raises(sdk.CaptureAlreadyExists) as e:
        client.create(**dict(GOOD, name="pc-dup", time_limit_in_seconds=2))
    assert e.value.code == ErrorCode.ALREADY_EXISTS
    assert client.get(name="pc-dup") == first
    final = client.wait(name="pc-dup", timeout_s=30)
    assert (final.packet_capture_status, final.stop_reason) == ("Stopped", "TimeExceeded")
    assert final.instances[0].id.endswith("/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1")
    client.delete(name="pc-dup")


def test_cli_exit_codes(coordinator):
    ok = [
        "capture",
        "create",
        "--vm",
        "vm1",
        "-g",
        "rg1",
        "--file-path",
        "/var/captures/cli.cap",
        "--time-limit",
        "1",
        "--filters",
        json.dumps([{"protocol": "UDP", "localPort": "9"}]),
    ]
    r = cli(coordinator, *ok, "--name", "cli-1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["properties"]["timeLimitInSeconds"] == 1
    r = cli(coordinator, *ok, "--name", "cli-1")
    assert r.returncode == 4
    assert "ALREADY_EXISTS" in r.stderr
    r = cli(coordinator, *ok, "--name", "cli-2", "--capture-limit", "-3")
    assert r.returncode == 2
    assert "totalBytesPerSession: -3 is out of range" in r.stderr
    r = cli(coordinator, *ok[:-2], "--name", "cli-2", "--filters", "[{not json")
    assert r.returncode == 2
    assert "--filters: not valid JSON" in r.stderr
    r = cli(coordinator, "capture", "create", "--name", "cli-2", "--target-type", "AzureVMSS", "--file-path", "/var/captures/a.cap")
    assert r.returncode == 2
    assert "--target is required" in r.stderr
    r = cli(coordinator, "capture", "show", "--name", "cli-nope")
    assert r.returncode == 3
    assert "NOT_FOUND" in r.stderr
    r = cli(coordinator, "capture", "wait", "--name", "cli-1", "--timeout", "30")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert (status["packetCaptureStatus"], status["stopReason"]) == ("Stopped", "TimeExceeded")
    assert status["instances"][0]["packetsCaptured"] == 0
    r = cli(coordinator, "capture", "delete", "--name", "cli-1")
    assert r.returncode == 0
    r = cli(coordinator, "capture", "list")
    assert r.returncode == 0
    assert "cli-1" not in r.stdout
