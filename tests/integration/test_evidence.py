"""Evidence-grade output: every capture has a manifest (each file with its instance, size,
SHA-256, packets and first and last packet times; the capture's filter, limits, stop reason,
drops and agent versions) signed by the coordinator's Ed25519 key. `capture verify` and the
offline `verify` say which files match; a flipped bit, a removed file, an added file, an edited
manifest and another key are each reported. A real coordinator (embedded etcd) and two real
agents, instances 0 and 1 of scale set `web`, capturing on lo."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcap.clients import sdk
from fleetcap.clients.errors import ErrorCode
from fleetcap.core.metrics import version
from fleetcap.core.naming import parse_rfc3339
from tests.integration.conftest import wait_every_instance
from tests.integration.fleet_support import RECORD, free_udp_port, send, two_agents

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with two_agents(tmp_path_factory.mktemp("evidence")) as f:
        yield f


@pytest.fixture(scope="module")
def downloaded(fleet, tmp_path_factory):
    """A finished capture of 5 datagrams on each instance, downloaded with --merge, its manifest
    and the coordinator's public key saved beside the download."""
    d = tmp_path_factory.mktemp("ev")
    port = free_udp_port()
    with sdk.Client(fleet.api) as c:
        c.create(
            name="ev-1",
            target="web",
            target_type="AzureVMSS",
            resource_group="rg1",
            storage_account="local",
            file_path="/var/captures/ev-1.cap",
            time_limit_in_seconds=3,
            filters=[{"protocol": "UDP", "localPort": str(port)}],
        )
        wait_every_instance(c, "ev-1")
        with pytest.raises(sdk.FleetcapError) as e:  # still running: nothing to sign yet
            c.manifest(name="ev-1")
        assert e.value.code == ErrorCode.FAILED_PRECONDITION
        assert e.value.message == (
            "packet capture 'ev-1' still runs on instance(s) 0, 1; its manifest is signed once every instance has stopped"
        )
        send(port, 5)
        final = c.wait(name="ev-1", timeout_s=30)
    dl = d / "dl"
    for args in (
        ("capture", "download", "--name", "ev-1", "--dest", str(dl), "--merge"),
        ("capture", "manifest", "--name", "ev-1", "--out", str(d / "manifest.json")),
        ("manifest-key", "show", "--out", str(d / "key.pem")),
    ):
        r = fleet.cli(*args)
        assert r.returncode == 0, r.stdout + r.stderr
    return d, dl, port, final


def offline(fleet, d, dl, key: str = "key.pem", manifest: str = "manifest.json") -> tuple[int, dict]:
    r = fleet.cli("verify", str(d / manifest), str(dl), "--public-key", str(d / key))
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def tshark_times(path) -> list[int]:
    t = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch"], capture_output=True, text=True, timeout=60, check=True
    )
    return [round(float(x) * 1_000_000) for x in t.stdout.split()]


def test_the_manifest_lists_every_file_and_the_capture_exactly(fleet, downloaded):
    d, dl, port, final = downloaded
    doc = json.loads((d / "manifest.json").read_text())
    assert sorted(doc) == ["algorithm", "keyId", "manifest", "signature"]
    assert doc["algorithm"] == "Ed25519"
    pem = (d / "key.pem").read_bytes()
    key = serialization.load_pem_public_key(pem)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert doc["keyId"] == hashlib.sha256(raw).hexdigest()[:16]
    m = doc["manifest"]
    cap = m["capture"]
    assert (cap["name"], cap["targetType"], cap["stopReason"], cap["packetCaptureStatus"]) == (
        "ev-1",
        "AzureVMSS",
        "TimeExceeded",
        "Stopped",
    )
    assert cap["filters"] == [{"protocol": "UDP", "localIPAddress": "", "remoteIPAddress": "", "localPort": str(port), "remotePort": ""}]
    assert cap["limits"] == {"bytesToCapturePerPacket": 0, "totalBytesPerSession": 1073741824, "timeLimitInSeconds": 3}
    assert [
        (i["instanceId"], i["packetsCaptured"], i["kernelDrops"], i["interfaceDrops"], i["agentVersion"], i["stopReason"])
        for i in m["instances"]
    ] == [(i, 5, 0, 0, version(), "TimeExceeded") for i in ("0", "1")]
    assert [f["path"] for f in m["files"]] == ["0/ev-1.cap", "1/ev-1.cap"]
    for f, inst in zip(m["files"], final.instances):
        local = dl / f["path"]
        data = local.read_bytes()
        assert (f["sizeBytes"], f["sha256"], f["packets"]) == (len(data), hashlib.sha256(data).hexdigest(), 5)
        assert len(data) == 24 + 5 * RECORD
        times = tshark_times(local)  # first and last packet times, read by tshark
        assert [round(parse_rfc3339(f[k]).timestamp() * 1_000_000) for k in ("firstPacketTime", "lastPacketTime")] == [times[0], times[-1]]
        assert (f["instance"], f["filePath"]) == (inst.id, "/var/captures/ev-1.cap")


def test_verify_passes_a_faithful_download_online_and_offline(fleet, downloaded):
    d, dl, _, _ = downloaded
    r = fleet.cli("capture", "verify", "--name", "ev-1", "--dir", str(dl))
    assert r.returncode == 0, r.stdout + r.stderr
    online = json.loads(r.stdout)
    code, out = offline(fleet, d, dl)
    assert code == 0
    for verdict in (online, out):
        assert (verdict["verified"], verdict["signature"], verdict["unlisted"], verdict["derived"]) == (True, "valid", [], ["ev-1.pcapng"])
        assert verdict["files"] == [{"path": "0/ev-1.cap", "status": "ok"}, {"path": "1/ev-1.cap", "status": "ok"}]


def test_a_flipped_bit_a_removed_file_and_an_added_file_are_each_reported(fleet, downloaded):
    d, dl, _, _ = downloaded
    target = dl / "0" / "ev-1.cap"
    original = target.read_bytes()
    flipped = bytearray(original)
    flipped[100] ^= 0x01
    target.write_bytes(bytes(flipped))
    try:
        code, out = offline(fleet, d, dl)
        assert (code, out["verified"], out["signature"]) == (1, False, "valid")
        assert out["files"] == [
            {
                "path": "0/ev-1.cap",
                "status": "modified",
                "detail": f"{len(original)} bytes, SHA-256 {hashlib.sha256(flipped).hexdigest()}; the manifest says "
                f"{len(original)} bytes, {hashlib.sha256(original).hexdigest()}",
            },
            {"path": "1/ev-1.cap", "status": "ok"},
        ]
    finally:
        target.write_bytes(original)
    moved = d / "away.cap"
    os.rename(dl / "1" / "ev-1.cap", moved)
    try:
        code, out = offline(fleet, d, dl)
        assert (code, out["files"]) == (1, [{"path": "0/ev-1.cap", "status": "ok"}, {"path": "1/ev-1.cap", "status": "missing"}])
    finally:
        os.rename(moved, dl / "1" / "ev-1.cap")
    (dl / "0" / "extra.cap").write_bytes(original)
    try:
        code, out = offline(fleet, d, dl)
        assert (code, out["unlisted"], [f["status"] for f in out["files"]]) == (1, ["0/extra.cap"], ["ok", "ok"])
    finally:
        os.remove(dl / "0" / "extra.cap")
    assert offline(fleet, d, dl)[0] == 0  # all restored: verified again


def test_an_edited_manifest_and_another_key_are_refused(fleet, downloaded):
    d, dl, _, _ = downloaded
    doc = json.loads((d / "manifest.json").read_text())
    doc["manifest"]["files"][0]["packets"] = 4  # one number changed, the signature kept
    (d / "edited.json").write_text(json.dumps(doc))
    code, out = offline(fleet, d, dl, manifest="edited.json")
    assert (code, out["verified"], out["signature"], out["signatureDetail"]) == (
        1,
        False,
        "invalid",
        "the signature does not match the manifest: it was edited, or signed by another key",
    )
    other = Ed25519PrivateKey.generate().public_key()
    (d / "other.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    raw = other.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    code, out = offline(fleet, d, dl, key="other.pem")
    assert (code, out["signature"], out["signatureDetail"]) == (
        1,
        "invalid",
        f"signed with key '{doc['keyId']}', not with this key ({hashlib.sha256(raw).hexdigest()[:16]})",
    )
    (d / "bad.json").write_text("not json")
    r = fleet.cli("verify", str(d / "bad.json"), str(dl), "--public-key", str(d / "key.pem"))
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith("fleetcap: error: the manifest is not JSON (")
