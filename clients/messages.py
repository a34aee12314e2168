"""Messages of the API as Python values and back: Azure's JSON names, a create's options, a filter."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict, Unpack

from google.protobuf import descriptor, json_format
from google.protobuf.message import Message

from fleetcap.clients.errors import (
    ErrorCode,
    InvalidCapture,
)
from fleetcap.core.vocabulary import TargetType
from fleetcap.v1 import captures_pb2 as pb


def to_dict(message: Message) -> dict[str, Any]:
    """JSON-ready dict with Azure's field names; 64-bit integers stay numbers."""
    d = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return _ints(message.DESCRIPTOR, d)  # type: ignore[arg-type]  # upb's Descriptor is one


_INT64 = {
    descriptor.FieldDescriptor.TYPE_INT64,
    descriptor.FieldDescriptor.TYPE_UINT64,
    descriptor.FieldDescriptor.TYPE_SINT64,
    descriptor.FieldDescriptor.TYPE_FIXED64,
}


def _ints(desc: descriptor.Descriptor, d: dict[str, Any]) -> dict[str, Any]:
    for f in desc.fields:
        if f.json_name not in d:
            continue
        v = d[f.json_name]
        if f.type in _INT64:
            d[f.json_name] = [int(x) for x in v] if isinstance(v, list) else int(v)
        elif f.message_type is not None:
            if isinstance(v, list):
                d[f.json_name] = [_ints(f.message_type, x) for x in v]
            elif isinstance(v, dict):
                d[f.json_name] = _ints(f.message_type, v)
    return d


def filter_from_dict(index: int, item: Mapping[str, Any]) -> pb.PacketCaptureFilter:
    """An az-style filter object ({"protocol": "TCP", "localPort": "80"}) as a message."""
    if not isinstance(item, Mapping):
        raise InvalidCapture(ErrorCode.INVALID_ARGUMENT, f"filters[{index}]: must be an object")
    try:
        return json_format.ParseDict({k: str(v) for k, v in item.items()}, pb.PacketCaptureFilter())
    except json_format.ParseError as e:
        raise InvalidCapture(ErrorCode.INVALID_ARGUMENT, f"filters[{index}]: {e}") from None


class CreateOptions(TypedDict, total=False):
    """`create`'s optional arguments, the one definition for `Client`, `AsyncClient` and the
    CLI. Unset limits take Azure's defaults (whole packets, 1 GiB, 18000 s)."""

    target_type: str  # "AzureVM" (default) or "AzureVMSS"
    resource_group: str  # of the target, when it is a bare name
    subscription: str  # of the target, when it is a bare name
    include: Iterable[str]  # scale-set instances: ids, names or ARM ids
    exclude: Iterable[str]
    bytes_to_capture_per_packet: int | None  # 0 = whole packet
    total_bytes_per_session: int | None  # per instance, pcap headers included
    time_limit_in_seconds: int | None
    storage_account: str  # "local" or a Blob account of the coordinator
    storage_path: str  # container URI in that account
    file_path: str  # on each instance, /var/captures/....cap
    filters: Iterable[Mapping[str, Any] | pb.PacketCaptureFilter]
    bpf_filter: str  # libpcap expression AND-ed with filters (extension)
    continuous_capture: bool | None  # any non-None value selects the ring, as in Azure
    local_path: str  # continuous: the ring's base name on each instance
    file_count: int | None  # continuous: files kept (10)
    file_size_in_bytes: int | None  # continuous: bytes per file (100 MiB)
    session_time_limit_in_seconds: int | None  # continuous: seconds (86400)
    add_new_instances: bool  # scale sets: instances that join are captured too
    standby_in_seconds: int | None  # flight recorder: seconds kept while armed (extension)
    standby_bytes: int | None  # flight recorder: the ring's bytes per instance (100 MiB)
    fleet_bytes_limit: int | None  # all instances' files together; then FleetBytesExceeded (extension)


def create_request(*, name: str, target: str, **options: Unpack[CreateOptions]) -> pb.CreatePacketCaptureRequest:
    """The Create request for `create`'s arguments."""
    o = options
    params = pb.PacketCaptureParameters(
        target=target,
        target_type=o.get("target_type", TargetType.VM),
        scope=pb.PacketCaptureMachineScope(include=list(o.get("include", ())), exclude=list(o.get("exclude", ()))),
        storage_location=pb.PacketCaptureStorageLocation(
            storage_id=o.get("storage_account", ""),
            storage_path=o.get("storage_path", ""),
            file_path=o.get("file_path", ""),
            local_path=o.get("local_path", ""),
        ),
        filters=[f if isinstance(f, pb.PacketCaptureFilter) else filter_from_dict(i, f) for i, f in enumerate(o.get("filters", ()))],
        bpf_filter=o.get("bpf_filter", ""),
        add_new_instances=o.get("add_new_instances", False),
    )
    for key in (
        "bytes_to_capture_per_packet",
        "total_bytes_per_session",
        "time_limit_in_seconds",
        "continuous_capture",
        "standby_in_seconds",
        "standby_bytes",
        "fleet_bytes_limit",
    ):
        value = o.get(key)
        if value is not None:
            setattr(params, key, value)
    for key in ("file_count", "file_size_in_bytes", "session_time_limit_in_seconds"):
        value = o.get(key)
        if value is not None:
            setattr(params.capture_settings, key, value)
    return pb.CreatePacketCaptureRequest(
        name=name, resource_group=o.get("resource_group", ""), subscription=o.get("subscription", ""), properties=params
    )
