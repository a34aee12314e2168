"""The signed manifest's body and key (coordinator/manifest.py) in the cases the end-to-end
tests do not reach: a ring's and a flight recorder's limits, a budget, a file not yet hashed, a
key file that holds another kind of key."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleetcap.coordinator import manifest
from fleetcap.coordinator.errors import FailedPrecondition
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import state_pb2


def finished(properties: pb.PacketCaptureParameters, *, sha256: str = "ab" * 32, **record: str | int) -> tuple:
    rec = state_pb2.CaptureRecord(
        resource=pb.PacketCaptureResult(name="m", id="/x/m", created_time="2026-12-08T00:00:00Z", properties=properties),
        instance_keys=["k0"],
        **record,
    )
    status = pb.InstanceStatus(id="/x/vm0", instance_id="0", packet_capture_status="Stopped", stop_reason="TimeExceeded")
    status.files.add(file_path="/var/captures/m.cap", size_bytes=100, sha256=sha256, upload_complete=True)
    return rec, [state_pb2.InstanceRecord(instance_key="k0", status=status)]


def test_a_rings_limits_and_a_flight_recorders_trigger_are_in_the_manifest():
    p = pb.PacketCaptureParameters(target="vm0", standby_in_seconds=30, standby_bytes=8 << 20, fleet_bytes_limit=1 << 20)
    p.continuous_capture = True
    p.capture_settings.file_count, p.capture_settings.file_size_in_bytes = 3, 1 << 20
    p.capture_settings.session_time_limit_in_seconds = 60
    rec, insts = finished(p, trigger_time="2026-12-08T00:00:10Z", trigger_source="ops (INC-1)", trigger_after_s=5)
    capture = manifest.body(rec, insts)["capture"]
    assert capture["limits"] == {
        "bytesToCapturePerPacket": 0,
        "fileCount": 3,
        "fileSizeInBytes": 1 << 20,
        "sessionTimeLimitInSeconds": 60,
        "standbyInSeconds": 30,
        "standbyBytes": 8 << 20,
        "fleetBytesLimit": 1 << 20,
    }
    assert (capture["triggerTime"], capture["triggerSource"], capture["triggerAfterSeconds"]) == (
        "2026-12-08T00:00:10Z",
        "ops (INC-1)",
        5,
    )


def test_no_manifest_while_a_file_is_not_hashed():
    rec, insts = finished(pb.PacketCaptureParameters(target="vm0"), sha256="")
    with pytest.raises(FailedPrecondition, match=r"/var/captures/m.cap of instance 0 is not hashed yet"):
        manifest.body(rec, insts)


def test_a_key_file_with_another_kind_of_key_is_refused_naming_the_flag(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "manifest-key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ValueError, match=f"--manifest-key {path}: not an Ed25519 private key"):
        manifest.ManifestSigner(str(path))


def test_a_new_key_is_made_once_private_and_then_kept(tmp_path):
    path = tmp_path / "keys" / "manifest-key.pem"
    first = manifest.ManifestSigner(str(path))
    assert path.stat().st_mode & 0o777 == 0o600
    assert manifest.ManifestSigner(str(path)).key_id == first.key_id
