"""ARM's JSON shapes for packet captures, and Azure's error shape, over the SDK's messages.

A PacketCaptureResult is `{"name", "id", "etag", "type", "properties": {..., "provisioningState"},
"systemData": {"createdAt"}}` as ARM returns it; a status is Azure's PacketCaptureQueryStatusResult
plus fleetcap's per-instance breakdown (`instances`). Errors are `{"error": {"code", "message"}}`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import grpc
from google.protobuf import json_format

from fleetcap.clients import sdk
from fleetcap.v1 import captures_pb2 as pb

RESOURCE_TYPE = "Microsoft.Network/networkWatchers/packetCaptures"


@dataclasses.dataclass
class HttpError(Exception):
    status: int
    code: str
    message: str

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


# gRPC status → (HTTP status, Azure-style error code). Quota: 429, because retrying once other
# captures have ended is the right reaction; Azure documents no code for it.
HTTP_BY_CODE: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "InvalidParameter"),
    grpc.StatusCode.NOT_FOUND: (404, "ResourceNotFound"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "PacketCaptureExistingAlready"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "QuotaExceeded"),
    grpc.StatusCode.UNAVAILABLE: (503, "ServiceUnavailable"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "Conflict"),
}


def from_sdk_error(e: sdk.FleetcapError) -> HttpError:
    status, code = HTTP_BY_CODE.get(e.code, (500, "InternalServerError"))
    return HttpError(status, code, e.message)


def resource(capture: pb.PacketCaptureResult) -> dict[str, Any]:
    d = sdk.to_dict(capture)
    props = d["properties"]
    props["provisioningState"] = d["provisioningState"]
    return {"name": d["name"], "id": d["id"], "etag": d["etag"], "type": RESOURCE_TYPE, "properties": props,
            "systemData": {"createdAt": d["createdTime"]}}


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
