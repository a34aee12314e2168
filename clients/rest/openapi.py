"""The OpenAPI 3.0 document of the REST front. Message schemas are derived from the protobuf
descriptors that produce the JSON, so the document cannot drift from the responses; each
response schema lists every field the server always prints as required, and allows no others."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor

from fleetcap.core.vocabulary import TargetType
from fleetcap.v1 import captures_pb2 as pb

_F = descriptor.FieldDescriptor
_SCALARS = {
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_INT32: {"type": "integer", "format": "int32"},
    _F.TYPE_INT64: {"type": "integer", "format": "int64"},
    _F.TYPE_UINT32: {"type": "integer", "minimum": 0},
    _F.TYPE_UINT64: {"type": "integer", "minimum": 0},
    _F.TYPE_DOUBLE: {"type": "number"},
}


def message_schema(desc: descriptor.Descriptor, *, response: bool) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required = []
    for f in desc.fields:
        if f.message_type is not None:
            item: dict[str, Any] = {"$ref": f"#/components/schemas/{f.message_type.name}{'' if response else 'Input'}"}
        else:
            item = dict(_SCALARS[f.type])  # type: ignore[call-overload]
        if f.is_repeated:
            item = {"type": "array", "items": item}
        props[f.json_name] = item
        if response and not f.has_presence:
            required.append(f.json_name)
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _messages(root: descriptor.Descriptor) -> list[descriptor.Descriptor]:
    seen: dict[str, descriptor.Descriptor] = {}

    def walk(d: descriptor.Descriptor) -> None:
        if d.name not in seen:
            seen[d.name] = d
            for f in d.fields:
                if f.message_type is not None:
                    walk(f.message_type)

    walk(root)
    return list(seen.values())


def _error() -> dict[str, Any]:
    return {
        "description": "Azure's error shape",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


EXAMPLE_NAME = "openapi-example"


def example_body(target_id: str) -> dict[str, Any]:
    """A request that works on this deployment: a 1-second capture of one connected target."""
    scale_set = "/virtualMachineScaleSets/" in target_id
    return {
        "properties": {
            "target": target_id,
            "targetType": TargetType.VMSS if scale_set else TargetType.VM,
            "storageLocation": {"storageId": "local", "filePath": f"/var/captures/{EXAMPLE_NAME}.cap"},
            "timeLimitInSeconds": 1,
            "filters": [{"protocol": "UDP", "localPort": "9"}],
        }
    }


def document(example_target: str = "") -> dict[str, Any]:
    """The OpenAPI document. With example_target (a connected VM or scale set), the create
    operation carries a request example that works here, so that a tester reaches real resources."""
    schemas: dict[str, Any] = {}
    for d in _messages(pb.PacketCaptureParameters.DESCRIPTOR):  # type: ignore[arg-type]
        schemas[d.name + "Input"] = message_schema(d, response=False)
        schemas[d.name] = message_schema(d, response=True)
    schemas["PacketCaptureParameters"]["required"] = [
        "target",
        "targetType",
        "scope",
        "storageLocation",
        "filters",
        "bpfFilter",
        "addNewInstances",
    ]
    props = dict(schemas["PacketCaptureParameters"]["properties"], provisioningState={"type": "string"})
    schemas["PacketCaptureResultProperties"] = dict(
        schemas["PacketCaptureParameters"],
        properties=props,
        required=schemas["PacketCaptureParameters"]["required"] + ["provisioningState"],
    )
    input_props = dict(schemas["PacketCaptureParametersInput"]["properties"], provisioningState={"type": "string"})
    schemas["PacketCaptureParametersInput"] = dict(
        schemas["PacketCaptureParametersInput"], properties=input_props, required=["target", "storageLocation"]
    )
    schemas["PacketCapture"] = {
        "type": "object",
        "required": ["properties"],
        "additionalProperties": False,
        "properties": {
            "properties": {"$ref": "#/components/schemas/PacketCaptureParametersInput"},
            "name": {"type": "string"},
            "id": {"type": "string"},
            "etag": {"type": "string"},
            "type": {"type": "string"},
        },
    }
    schemas["PacketCaptureResult"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "id", "etag", "type", "properties", "systemData"],
        "properties": {
            "name": {"type": "string"},
            "id": {"type": "string"},
            "etag": {"type": "string"},
            "type": {"type": "string", "enum": ["Microsoft.Network/networkWatchers/packetCaptures"]},
            "properties": {"$ref": "#/components/schemas/PacketCaptureResultProperties"},
            "systemData": {
                "type": "object",
                "required": ["createdAt"],
                "additionalProperties": False,
                "properties": {"createdAt": {"type": "string"}},
            },
        },
    }
    schemas["TriggerRequest"] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "afterInSeconds": {
                "type": "integer",
                "minimum": 0,
                "maximum": 18000,
                "description": "seconds to record after the trigger; default 0",
            },
            "note": {"type": "string", "maxLength": 200, "description": "free text kept with the trigger's source"},
        },
    }
    schemas["PacketCaptureListResult"] = {
        "type": "object",
        "required": ["value"],
        "additionalProperties": False,
        "properties": {
            "value": {"type": "array", "items": {"$ref": "#/components/schemas/PacketCaptureResult"}},
            "nextLink": {"type": "string", "description": "the next page's URL; absent on the last page"},
        },
    }
    for d in _messages(pb.PacketCaptureQueryStatusResult.DESCRIPTOR):  # type: ignore[arg-type]
        schemas[d.name] = message_schema(d, response=True)
    schemas["ErrorResponse"] = {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    }

    segment = "^[^/\\u0000-\\u001f\\u007f]+$"  # a path segment: no slash, no control character
    params = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string", "pattern": segment}}
        for n in ("subscriptionId", "resourceGroupName", "networkWatcherName")
    ]
    api_version = {
        "name": "api-version",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "accepted and ignored; fleetcap serves the 2024-05-01 shape",
    }
    top = {
        "name": "$top",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        "description": "captures per page",
    }
    skip = {
        "name": "$skipToken",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "where the previous page's nextLink left off",
    }
    pc_name = {
        "name": "packetCaptureName",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": segment},
        "example": EXAMPLE_NAME,
    }
    base = (
        "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/"
        "Microsoft.Network/networkWatchers/{networkWatcherName}/packetCaptures"
    )
    # Every call: 401 without a valid bearer token, 403 without the role, 503 when the
    # coordinator is down; PUT and POST: 415 for a body that is not application/json.
    common = {code: _error() for code in ("401", "403", "503")}
    errors = {code: _error() for code in ("400", "404", "409", "413", "415", "429")} | common
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "fleetcap packet captures (ARM-shaped)",
            "version": "2024-05-01",
            "description": "Azure Network Watcher's packetCaptures REST API, served by fleetcap.",
        },
        "paths": {
            base: {
                "get": {
                    "operationId": "PacketCaptures_List",
                    "parameters": params + [api_version, top, skip],
                    "x-ms-pageable": {"nextLinkName": "nextLink"},
                    "responses": {
                        "200": _json("#/components/schemas/PacketCaptureListResult", "a page of captures in name order"),
                        "400": _error(),
                        "404": _error(),
                        **common,
                    },
                }
            },
            base + "/{packetCaptureName}": {
                "put": {
                    "operationId": "PacketCaptures_Create",
                    "parameters": params + [pc_name, api_version],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/PacketCapture"},
                                **({"example": example_body(example_target)} if example_target else {}),
                            }
                        },
                    },
                    "responses": {"201": _json("#/components/schemas/PacketCaptureResult", "created and started"), **errors},
                },
                "get": {
                    "operationId": "PacketCaptures_Get",
                    "parameters": params + [pc_name, api_version],
                    "responses": {"200": _json("#/components/schemas/PacketCaptureResult", "the capture"), "404": _error(), **common},
                },
                "delete": {
                    "operationId": "PacketCaptures_Delete",
                    "parameters": params + [pc_name, api_version],
                    "responses": {
                        "202": {"description": "deleted (stopped first; files are kept); Location names the operation"},
                        "204": {"description": "there was no such capture"},
                        **common,
                    },
                },
            },
            base + "/{packetCaptureName}/stop": {
                "post": {
                    "operationId": "PacketCaptures_Stop",
                    "parameters": params + [pc_name, api_version],
                    "responses": {
                        "200": {"description": "stopped (idempotent)"},
                        "404": _error(),
                        "413": _error(),
                        "415": _error(),
                        **common,
                    },
                }
            },
            base + "/{packetCaptureName}/trigger": {
                "post": {
                    "operationId": "PacketCaptures_Trigger",
                    "parameters": params + [pc_name, api_version],
                    "description": "fleetcap extension, the flight recorder: keeps the armed window on every "
                    "instance, records afterInSeconds more, then stores the files. Idempotent.",
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TriggerRequest"}}},
                    },
                    "responses": {
                        "200": _json(
                            "#/components/schemas/PacketCaptureQueryStatusResult", "the status, with triggerTime and triggerSource"
                        ),
                        "400": _error(),
                        "404": _error(),
                        "409": _error(),
                        "413": _error(),
                        "415": _error(),
                        **common,
                    },
                }
            },
            base + "/{packetCaptureName}/queryStatus": {
                "post": {
                    "operationId": "PacketCaptures_GetStatus",
                    "parameters": params + [pc_name, api_version],
                    "responses": {
                        "200": _json(
                            "#/components/schemas/PacketCaptureQueryStatusResult", "status, with fleetcap's per-instance breakdown"
                        ),
                        "404": _error(),
                        "413": _error(),
                        "415": _error(),
                        **common,
                    },
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a fleetcap token, or an OIDC token the coordinator accepts"}
            },
        },
        "security": [{"bearer": []}],
    }
