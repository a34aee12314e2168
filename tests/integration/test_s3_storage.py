"""A capture stored in an S3 account, end to end: a real coordinator given `--storage-account
s3:archive=env:...` (moto's S3 server with its authentication on), a real agent capturing on lo.
The object lands in the bucket under the prefix, in Azure's layout, byte for byte the agent's
file, tagged with its SHA-256; `storage-accounts list` shows the kind and no secret."""

from __future__ import annotations

import hashlib
import socket

import boto3
import pytest

from fleetcap.clients import sdk
from tests.integration.conftest import deployment

pytestmark = pytest.mark.integration
PORT = 47231


@pytest.fixture(scope="module")
def s3_deployment(tmp_path_factory, s3_server):
    with deployment(
        tmp_path_factory.mktemp("s3"),
        "--storage-account",
        "s3:archive=env:FLEETCAP_TEST_S3",
        coordinator_env={"FLEETCAP_TEST_S3": s3_server[0]},
    ) as dep:
        yield dep


def test_a_capture_is_stored_in_s3_byte_for_byte_and_tagged_with_its_sha256(s3_deployment, s3_server, tmp_path):
    connection, secret = s3_server
    fields = dict(item.split("=", 1) for item in connection.split(";") if item)
    with sdk.Client(s3_deployment) as c:
        [local, archive] = c.list_storage_accounts()
        assert (archive.name, archive.kind, archive.endpoint) == ("archive", "S3", f"{fields['S3Endpoint']}/captures/fleet/a")
        assert secret not in str(c.list_storage_accounts())
        c.create(
            name="s3-1",
            target="vm1",
            resource_group="rg1",
            storage_account="archive",
            file_path="/var/captures/s3-1.cap",
            time_limit_in_seconds=4,
            filters=[{"protocol": "UDP", "localPort": str(PORT)}],
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(50):
                s.sendto(bytes([i]) * 200, ("127.0.0.1", PORT))
        final = c.wait(name="s3-1", timeout_s=60)
        [inst] = final.instances
        [f] = inst.files
        assert (final.packet_capture_status, final.stop_reason, f.upload_complete) == ("Stopped", "TimeExceeded", True)
        assert f.stored_sha256 == f.sha256
        local_copy = s3_deployment.dir + "/captures/s3-1.cap"
        with open(local_copy, "rb") as fh:
            data = fh.read()
        assert hashlib.sha256(data).hexdigest() == f.sha256
        key = f.storage_path.split("/captures/", 1)[1]
        assert key.startswith("fleet/a/network-watcher-logs/subscriptions/")
        written = c.download(name="s3-1", dest=str(tmp_path / "dl"))
        assert [open(p, "rb").read() for p in written] == [data]
    s3 = boto3.client(
        "s3",
        endpoint_url=fields["S3Endpoint"],
        aws_access_key_id=fields["AccessKeyId"],
        aws_secret_access_key=fields["SecretAccessKey"],
        region_name="us-east-1",
    )
    assert s3.get_object(Bucket="captures", Key=key)["Body"].read() == data
    assert s3.get_object_tagging(Bucket="captures", Key=key)["TagSet"] == [{"Key": "sha256", "Value": f.sha256}]
