"""ARM's JSON shapes for packet captures, and Azure's error shape, over the SDK's messages.

A PacketCaptureResult is `{"name", "id", "etag", "type", "properties": {..., "provisioningState"},
"systemData": {"createdAt"}}` as ARM returns it; a status is Azure's PacketCaptureQueryStatusResult
plus fleetcap's per-instance breakdown (`instances`). Errors are `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import urllib.parse
from typing import Any

from google.protobuf import json_format

from fleetcap.clients import sdk
from fleetcap.clients.errors import ErrorCode
from fleetcap.v1 import captures_pb2 as pb

RESOURCE_TYPE = "Microsoft.Network/networkWatchers/packetCaptures"


@dataclasses.dataclass
class HttpError(Exception):
    status: int
    code: str
    message: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


# The SDK's error code → (HTTP status, Azure-style error code). Quota: 429, because retrying once
# other captures have ended is the right reaction; Azure documents no code for it.
HTTP_BY_CODE: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.UNAUTHENTICATED: (401, "AuthenticationFailed"),
    ErrorCode.PERMISSION_DENIED: (403, "AuthorizationFailed"),
    ErrorCode.INVALID_ARGUMENT: (400, "InvalidParameter"),
    ErrorCode.NOT_FOUND: (404, "ResourceNotFound"),
    ErrorCode.ALREADY_EXISTS: (409, "PacketCaptureExistingAlready"),
    ErrorCode.RESOURCE_EXHAUSTED: (429, "QuotaExceeded"),
    ErrorCode.UNAVAILABLE: (503, "ServiceUnavailable"),
    ErrorCode.FAILED_PRECONDITION: (409, "Conflict"),
}


def from_sdk_error(e: sdk.FleetcapError) -> HttpError:
    status, code = HTTP_BY_CODE.get(e.code, (500, "InternalServerError"))
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else {}
    return HttpError(status, code, e.message, headers)


# -- long-running operations ---------------------------------------------------------------------
#
# ARM answers a create with Azure-AsyncOperation, and a delete with Location, each naming an
# operation to poll. fleetcap's operations finish (or, for a create, reach Running) on their
# own, so an operation id needs no state: it is the kind and the capture name, encoded. Reading
# it goes through the caller's own credential like any other call, so a made-up id gets
# nothing a GET of the capture would not give.

LOCATION = "local"
OPERATION_KINDS = ("create", "delete")
OPERATION_PATH = re.compile(
    r"^/subscriptions/([^/]+)/providers/Microsoft\.Network/locations/([^/]+)/"
    r"(operations|operationResults)/([A-Za-z0-9_-]{1,400})/?$",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class Operation:
    kind: str  # one of OPERATION_KINDS
    name: str  # the capture's

    def id(self) -> str:
        raw = json.dumps([self.kind, self.name], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def url(self, base_url: str, subscription: str, results: bool) -> str:
        leaf = "operationResults" if results else "operations"
        subscription = urllib.parse.quote(subscription, safe="")  # a header holds ASCII only
        return (
            f"{base_url}/subscriptions/{subscription}/providers/Microsoft.Network/locations/{LOCATION}/"
            f"{leaf}/{self.id()}?api-version=2024-05-01"
        )

    @classmethod
    def parse(cls, op_id: str) -> Operation:
        """Raises HttpError 404 for an id this gateway did not make."""
        try:
            kind, name = json.loads(base64.urlsafe_b64decode(op_id + "=" * (-len(op_id) % 4)))
            if kind in OPERATION_KINDS and isinstance(name, str) and name:
                return cls(kind, name)
        except (binascii.Error, ValueError, TypeError):
            pass
        raise HttpError(404, "OperationNotFound", f"no operation '{op_id[:80]}'")


def resource(capture: pb.PacketCaptureResult) -> dict[str, Any]:
    d = sdk.to_dict(capture)
    props = d["properties"]
    props["provisioningState"] = d["provisioningState"]
    return {
        "name": d["name"],
        "id": d["id"],
        "etag": d["etag"],
        "type": RESOURCE_TYPE,
        "properties": props,
        "systemData": {"createdAt": d["createdTime"]},
    }


def status(s: pb.PacketCaptureQueryStatusResult) -> dict[str, Any]:
    return sdk.to_dict(s)


def parameters(body: Any) -> pb.PacketCaptureParameters:
    """The `properties` of a PUT body as a message. Raises HttpError 400 naming the field."""
    if not isinstance(body, dict):
        raise HttpError(400, "InvalidRequestFormat", "the request body must be a JSON object")
    unknown = sorted(set(body) - {"properties", "name", "id", "etag", "type"})
    if unknown:
        raise HttpError(400, "InvalidRequestFormat", f"{unknown[0]}: unknown member of the request body")
    props = body.get("properties")
    if not isinstance(props, dict):
        raise HttpError(400, "InvalidRequestFormat", "properties: required, a JSON object")
    props = {k: v for k, v in props.items() if k != "provisioningState"}  # read-only; echoed back by GET
    try:
        return json_format.ParseDict(props, pb.PacketCaptureParameters())
    except json_format.ParseError as e:
        raise HttpError(400, "InvalidRequestFormat", f"properties: {_parse_error(str(e))}") from None


def _parse_error(text: str) -> str:
    # protobuf says "Failed to parse timeLimitInSeconds field: ..." or "Message type ... has no
    # field named x at ..."; keep it to one line with the field first.
    text = text.replace("Failed to parse ", "").replace("fleetcap.v1.", "")
    return text.splitlines()[0] if text else "not valid"
