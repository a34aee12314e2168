"""S3-compatible object storage (AWS S3, MinIO, Ceph RGW, R2, ...): each file is a multipart
upload under the account's bucket and prefix, in Azure's layout.

Parts are PART_BYTES, each sent with its SHA-256 for the server to check. A flush sends what is
buffered as the current part even if it is short: the part is sent again, whole, once more bytes
complete it (S3 keeps the last upload of a part number), so every acknowledged byte is stored.
The upload's id and its parts are the server's state, not this process's: after a restart the
writer finds the upload by its key and resumes after its last full part (a short last part is
sent again from the agent's bytes). On commit the parts are completed in order, the object's
SHA-256 is checked, and kept as the object's `sha256` tag.

The connection string: `S3Endpoint=https://host:port;Bucket=B;Region=R;AccessKeyId=K;
SecretAccessKey=S`, with optional `PathStyle=true`, `Prefix=P` and `CACertificate=/path`; without
AccessKeyId the SDK's default credential chain applies.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from fleetcap.coordinator.storage.sink import Committed, IntegrityError, ObjectWriter, OffsetMismatch, Sink, SinkError
from fleetcap.core.vocabulary import StorageKind

log = logging.getLogger(__name__)

PART_BYTES = 8 << 20  # S3 takes parts of 5 MiB at least, but the last
REQUEST_TIMEOUT_S = 20


@dataclasses.dataclass(frozen=True)
class S3Account:
    endpoint: str
    bucket: str
    region: str = "us-east-1"
    access_key_id: str = dataclasses.field(default="", repr=False)
    secret_access_key: str = dataclasses.field(default="", repr=False)
    path_style: bool = False
    prefix: str = ""
    ca_certificate: str = ""


FIELDS = {
    "S3Endpoint": "endpoint",
    "Bucket": "bucket",
    "Region": "region",
    "AccessKeyId": "access_key_id",
    "SecretAccessKey": "secret_access_key",
    "PathStyle": "path_style",
    "Prefix": "prefix",
    "CACertificate": "ca_certificate",
}


def parse_connection_string(text: str) -> S3Account:
    """The account a connection string describes; ValueError naming the field (never its value)."""
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, sep, value = item.partition("=")
        if not sep or key not in FIELDS:
            raise ValueError(f"S3 connection string: '{key}' is not one of {', '.join(FIELDS)}")
        values[FIELDS[key]] = value.lower() == "true" if key == "PathStyle" else value
    for required in ("endpoint", "bucket"):
        if not values.get(required):
            name = next(k for k, v in FIELDS.items() if v == required)
            raise ValueError(f"S3 connection string: {name} is required")
    if bool(values.get("access_key_id")) != bool(values.get("secret_access_key")):
        raise ValueError("S3 connection string: AccessKeyId and SecretAccessKey go together")
    values["prefix"] = values.get("prefix", "").strip("/")
    return S3Account(**values)


def _error(what: str, e: Exception) -> SinkError:
    code = e.response.get("Error", {}).get("Code", "") if isinstance(e, ClientError) else type(e).__name__
    return SinkError(f"{what}: {code or type(e).__name__}")


def _sha256_b64(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class S3Sink(Sink):
    kind = StorageKind.S3
    resend_at_most = PART_BYTES - 1

    def __init__(self, connection_string: str):
        self.account = parse_connection_string(connection_string)
        a = self.account
        keys: dict[str, Any] = (
            {"aws_access_key_id": a.access_key_id, "aws_secret_access_key": a.secret_access_key} if a.access_key_id else {}
        )
        config = Config(
            s3={"addressing_style": "path" if a.path_style else "auto"},
            connect_timeout=REQUEST_TIMEOUT_S,
            read_timeout=REQUEST_TIMEOUT_S,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=a.endpoint, region_name=a.region, verify=a.ca_certificate or True, config=config, **keys
        )

    def key(self, object_name: str) -> str:
        return f"{self.account.prefix}/{object_name}" if self.account.prefix else object_name

    def endpoint(self) -> str:
        return f"{self.account.endpoint.rstrip('/')}/{self.account.bucket}" + (f"/{self.account.prefix}" if self.account.prefix else "")

    def uri(self, object_name: str) -> str:
        return f"{self.account.endpoint.rstrip('/')}/{self.account.bucket}/{self.key(object_name)}"

    def open(self, object_name: str) -> S3Writer:
        return S3Writer(self, self.key(object_name), self.uri(object_name))

    def uploads(self, key: str) -> list[str]:
        """The ids of the multipart uploads in progress for `key`, oldest first."""
        try:
            found = self.client.list_multipart_uploads(Bucket=self.account.bucket, Prefix=key)
        except (ClientError, BotoCoreError) as e:
            raise _error("list uploads", e) from None
        ups = [u for u in found.get("Uploads", []) if u["Key"] == key]
        return [u["UploadId"] for u in sorted(ups, key=lambda u: u["Initiated"])]

    def delete(self, object_name: str) -> None:
        key = self.key(object_name)
        try:
            for upload_id in self.uploads(key):
                self.client.abort_multipart_upload(Bucket=self.account.bucket, Key=key, UploadId=upload_id)
            self.client.delete_object(Bucket=self.account.bucket, Key=key)
        except (ClientError, BotoCoreError) as e:
            raise _error("delete", e) from None

    def read(self, object_name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            got = self.client.get_object(
                Bucket=self.account.bucket, Key=self.key(object_name), Range=f"bytes={offset}-{offset + length - 1}"
            )
            return bytes(got["Body"].read())
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "InvalidRange", "404", "416"):
                return b""  # not committed yet (S3 shows no part of an upload), or past the end
            raise _error("read", e) from None
        except BotoCoreError as e:
            raise _error("read", e) from None


class S3Writer(ObjectWriter):
    def __init__(self, sink: S3Sink, key: str, uri: str):
        self.sink, self.key, self.uri = sink, key, uri
        self.bucket = sink.account.bucket
        self.client = sink.client
        self._upload_id = ""
        self._parts: dict[int, tuple[str, str]] = {}  # part number -> (ETag, SHA-256)
        self._full = 0  # bytes in full parts (PART_BYTES each), all stored
        self._buffer = bytearray()  # the current part's bytes; its first `_flushed` are stored too
        self._flushed = 0
        self._hash: hashlib._Hash | None = hashlib.sha256()  # of every byte, when this writer saw them all

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, Key=self.key, **kwargs)
        except (ClientError, BotoCoreError) as e:
            raise _error(what, e) from None

    def open(self, restart: bool = False) -> int:
        uploads = self.sink.uploads(self.key)
        if restart:
            for upload_id in uploads:
                self._call("abort upload", self.client.abort_multipart_upload, UploadId=upload_id)
            return 0
        if not uploads:
            return 0
        self._upload_id = uploads[-1]
        listed = self._call("list parts", self.client.list_parts, UploadId=self._upload_id).get("Parts", [])
        number = 1
        for p in sorted(listed, key=lambda p: p["PartNumber"]):
            if p["PartNumber"] != number or p["Size"] != PART_BYTES:
                break  # a gap, or a short part: resumed from before it (the agent sends it again)
            self._parts[number] = (p["ETag"], p.get("ChecksumSHA256", ""))
            number += 1
        self._full = (number - 1) * PART_BYTES
        if self._full:
            self._hash = None
        return self._full

    def durable_size(self) -> int:
        return self._full + self._flushed

    def committed(self) -> Committed | None:
        if self.sink.uploads(self.key):
            return None  # an upload of this object is under way
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
            tags = self.client.get_object_tagging(Bucket=self.bucket, Key=self.key).get("TagSet", [])
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _error("head", e) from None
        digest = next((t["Value"] for t in tags if t["Key"] == "sha256"), "")
        return Committed(self.uri, int(head["ContentLength"]), digest)

    def _send_part(self) -> None:
        """Stores the current part's buffered bytes under its part number (again, if it was stored short)."""
        if not self._upload_id:
            self._upload_id = self._call("start upload", self.client.create_multipart_upload, ChecksumAlgorithm="SHA256")["UploadId"]
        number = self._full // PART_BYTES + 1
        data = bytes(self._buffer)
        checksum = _sha256_b64(data)
        got = self._call(
            "upload part", self.client.upload_part, UploadId=self._upload_id, PartNumber=number, Body=data, ChecksumSHA256=checksum
        )
        self._parts[number] = (got["ETag"], checksum)
        if len(data) == PART_BYTES:
            self._full += PART_BYTES
            self._buffer.clear()
            self._flushed = 0
        else:
            self._flushed = len(data)

    def write(self, offset: int, data: bytes | memoryview) -> int:
        expected = self._full + len(self._buffer)
        if offset != expected:
            raise OffsetMismatch(expected, offset)
        if self._hash is not None:
            self._hash.update(data)
        view = memoryview(data)
        while view:
            take = min(PART_BYTES - len(self._buffer), len(view))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == PART_BYTES:
                self._send_part()
        return self.durable_size()

    def flush(self) -> int:
        if len(self._buffer) > self._flushed:
            self._send_part()
        return self.durable_size()

    def commit(self, size: int, sha256: str) -> Committed:
        durable = self.flush()
        if durable != size:
            raise IntegrityError(f"{durable} bytes stored, the agent's file has {size}")
        digest = self._hash.hexdigest() if self._hash is not None else ""
        if digest and digest != sha256:
            raise IntegrityError(f"stored bytes hash to {digest}, the agent's file to {sha256}")
        if not self._upload_id:  # an empty file: no part to complete
            self._call("put", self.client.put_object, Body=b"")
        else:
            parts = [{"PartNumber": n, "ETag": etag, "ChecksumSHA256": checksum} for n, (etag, checksum) in sorted(self._parts.items())]
            self._call("complete upload", self.client.complete_multipart_upload, UploadId=self._upload_id, MultipartUpload={"Parts": parts})
        if not digest:  # resumed after a restart: read the object back once
            h = hashlib.sha256()
            body = self._call("download", self.client.get_object)["Body"]
            for chunk in iter(lambda: body.read(1 << 20), b""):
                h.update(chunk)
            digest = h.hexdigest()
            if digest != sha256:
                self._call("delete", self.client.delete_object)
                raise IntegrityError(f"stored object hashes to {digest}, the agent's file to {sha256}")
        self._call("tag", self.client.put_object_tagging, Tagging={"TagSet": [{"Key": "sha256", "Value": digest}]})
        return Committed(self.uri, size, digest)
