"""Signed manifests: what a capture wrote, signed with the coordinator's Ed25519 key.

The key lives in one PEM file (default data_dir/manifest-key.pem), created with mode 0600 on
first use; replicas of one deployment share it by pointing --manifest-key at the same file.
The manifest lists every file with its instance, size, SHA-256, packets and first and last
packet times, and the capture's target, filters, limits, stop reason, drops and agent versions.
fleetcap.core.manifest has the signed form; docs/evidence.md the fields.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcap.coordinator import status as st
from fleetcap.coordinator.errors import FailedPrecondition
from fleetcap.core import manifest
from fleetcap.core.naming import rfc3339
from fleetcap.v1 import state_pb2

log = logging.getLogger(__name__)


class ManifestSigner:
    def __init__(self, key_path: str):
        self.key_path = key_path
        self._key = self._load_or_create(key_path)
        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = manifest.key_id(raw)
        self.public_key_pem = (
            self._key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        )

    @staticmethod
    def _load_or_create(path: str) -> Ed25519PrivateKey:
        try:
            with open(path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=None)
        except FileNotFoundError:
            key = Ed25519PrivateKey.generate()
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another replica made it first: use that one
                return ManifestSigner._load_or_create(path)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            log.info("created the manifest signing key %s", path)
            return key
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"--manifest-key {path}: not an Ed25519 private key")
        return key

    def sign(self, body: dict[str, Any]) -> bytes:
        """The signed manifest as JSON bytes."""
        signature = self._key.sign(manifest.canonical(body))
        return json.dumps(
            {"manifest": body, "signature": base64.b64encode(signature).decode(), "keyId": self.key_id, "algorithm": manifest.ALGORITHM},
            indent=2,
            sort_keys=True,
            ensure_ascii=False,
        ).encode()


def body(record: state_pb2.CaptureRecord, instances: list[state_pb2.InstanceRecord]) -> dict[str, Any]:
    """The manifest of a finished capture. Raises FailedPrecondition while it still runs or a
    file is not yet hashed by its agent."""
    name = record.resource.name
    status = st.aggregate(record, instances)
    running = [i.instance_id for i in status.instances if not st.is_final(i)]
    if running:
        raise FailedPrecondition(
            f"packet capture '{name}' still runs on instance(s) {', '.join(running)}; "
            "its manifest is signed once every instance has stopped"
        )
    p = record.resource.properties
    files = []
    for inst in status.instances:
        for f in inst.files:
            if not f.sha256:
                raise FailedPrecondition(
                    f"packet capture '{name}': {f.file_path} of instance {inst.instance_id} is not hashed yet; try again in a moment"
                )
            files.append(
                {
                    "path": f"{inst.instance_id}/{os.path.basename(f.file_path)}",  # as `capture download` writes it
                    "instanceId": inst.instance_id,
                    "instance": inst.id,
                    "filePath": f.file_path,
                    "sizeBytes": f.size_bytes,
                    "sha256": f.sha256,
                    "packets": f.packets,
                    "firstPacketTime": f.first_packet_time,
                    "lastPacketTime": f.last_packet_time,
                    "storagePath": f.storage_path,
                }
            )
    limits: dict[str, Any] = {"bytesToCapturePerPacket": p.bytes_to_capture_per_packet}
    if p.HasField("continuous_capture"):
        limits.update(
            fileCount=p.capture_settings.file_count,
            fileSizeInBytes=p.capture_settings.file_size_in_bytes,
            sessionTimeLimitInSeconds=p.capture_settings.session_time_limit_in_seconds,
        )
    else:
        limits.update(totalBytesPerSession=p.total_bytes_per_session, timeLimitInSeconds=p.time_limit_in_seconds)
    if p.standby_in_seconds:
        limits.update(standbyInSeconds=p.standby_in_seconds, standbyBytes=p.standby_bytes)
    if p.fleet_bytes_limit:
        limits.update(fleetBytesLimit=p.fleet_bytes_limit)
    capture: dict[str, Any] = {
        "name": name,
        "id": record.resource.id,
        "target": p.target,
        "targetType": p.target_type,
        "createdTime": record.resource.created_time,
        "filters": [
            {
                "protocol": f.protocol,
                "localIPAddress": f.local_ip_address,
                "remoteIPAddress": f.remote_ip_address,
                "localPort": f.local_port,
                "remotePort": f.remote_port,
            }
            for f in p.filters
        ],
        "bpfFilter": p.bpf_filter,
        "limits": limits,
        "packetCaptureStatus": status.packet_capture_status,
        "stopReason": status.stop_reason,
    }
    if record.trigger_time:
        capture.update(triggerTime=record.trigger_time, triggerSource=record.trigger_source, triggerAfterSeconds=record.trigger_after_s)
    return {
        "version": manifest.VERSION,
        "issuedAt": rfc3339(dt.datetime.now(dt.UTC)),
        "capture": capture,
        "instances": [
            {
                "instanceId": i.instance_id,
                "instance": i.id,
                "packetCaptureStatus": i.packet_capture_status,
                "stopReason": i.stop_reason,
                "captureStartTime": i.capture_start_time,
                "captureStopTime": i.capture_stop_time,
                "packetsCaptured": i.packets_captured,
                "packetsReceived": i.packets_received,
                "kernelDrops": i.kernel_drops,
                "interfaceDrops": i.interface_drops,
                "agentVersion": i.agent_version,
                "clockOffsetUs": i.clock_offset_us,
                "clockUncertaintyUs": i.clock_uncertainty_us,
            }
            for i in status.instances
        ],
        "files": files,
    }
