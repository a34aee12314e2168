from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PacketCaptureFilter(_message.Message):
    __slots__ = ("protocol", "local_ip_address", "remote_ip_address", "local_port", "remote_port")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    LOCAL_IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_FIELD_NUMBER: _ClassVar[int]
    protocol: str
    local_ip_address: str
    remote_ip_address: str
    local_port: str
    remote_port: str
    def __init__(self, protocol: _Optional[str] = ..., local_ip_address: _Optional[str] = ..., remote_ip_address: _Optional[str] = ..., local_port: _Optional[str] = ..., remote_port: _Optional[str] = ...) -> None: ...

class PacketCaptureMachineScope(_message.Message):
    __slots__ = ("include", "exclude")
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    include: _containers.RepeatedScalarFieldContainer[str]
    exclude: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, include: _Optional[_Iterable[str]] = ..., exclude: _Optional[_Iterable[str]] = ...) -> None: ...

class PacketCaptureStorageLocation(_message.Message):
    __slots__ = ("storage_id", "storage_path", "file_path", "local_path")
    STORAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STORAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PATH_FIELD_NUMBER: _ClassVar[int]
    storage_id: str
    storage_path: str
    file_path: str
    local_path: str
    def __init__(self, storage_id: _Optional[str] = ..., storage_path: _Optional[str] = ..., file_path: _Optional[str] = ..., local_path: _Optional[str] = ...) -> None: ...

class PacketCaptureSettings(_message.Message):
    __slots__ = ("file_count", "file_size_in_bytes", "session_time_limit_in_seconds")
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_IN_BYTES_FIELD_NUMBER: _ClassVar[int]
    SESSION_TIME_LIMIT_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    file_count: int
    file_size_in_bytes: int
    session_time_limit_in_seconds: int
    def __init__(self, file_count: _Optional[int] = ..., file_size_in_bytes: _Optional[int] = ..., session_time_limit_in_seconds: _Optional[int] = ...) -> None: ...

class PacketCaptureParameters(_message.Message):
    __slots__ = ("target", "target_type", "scope", "bytes_to_capture_per_packet", "total_bytes_per_session", "time_limit_in_seconds", "storage_location", "filters", "continuous_capture", "capture_settings", "bpf_filter", "add_new_instances", "standby_in_seconds", "standby_bytes", "fleet_bytes_limit")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TARGET_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TO_CAPTURE_PER_PACKET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_PER_SESSION_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_LOCATION_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    CONTINUOUS_CAPTURE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    BPF_FILTER_FIELD_NUMBER: _ClassVar[int]
    ADD_NEW_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    STANDBY_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STANDBY_BYTES_FIELD_NUMBER: _ClassVar[int]
    FLEET_BYTES_LIMIT_FIELD_NUMBER: _ClassVar[int]
    target: str
    target_type: str
    scope: PacketCaptureMachineScope
    bytes_to_capture_per_packet: int
    total_bytes_per_session: int
    time_limit_in_seconds: int
    storage_location: PacketCaptureStorageLocation
    filters: _containers.RepeatedCompositeFieldContainer[PacketCaptureFilter]
    continuous_capture: bool
    capture_settings: PacketCaptureSettings
    bpf_filter: str
    add_new_instances: bool
    standby_in_seconds: int
    standby_bytes: int
    fleet_bytes_limit: int
    def __init__(self, target: _Optional[str] = ..., target_type: _Optional[str] = ..., scope: _Optional[_Union[PacketCaptureMachineScope, _Mapping]] = ..., bytes_to_capture_per_packet: _Optional[int] = ..., total_bytes_per_session: _Optional[int] = ..., time_limit_in_seconds: _Optional[int] = ..., storage_location: _Optional[_Union[PacketCaptureStorageLocation, _Mapping]] = ..., filters: _Optional[_Iterable[_Union[PacketCaptureFilter, _Mapping]]] = ..., continuous_capture: _Optional[bool] = ..., capture_settings: _Optional[_Union[PacketCaptureSettings, _Mapping]] = ..., bpf_filter: _Optional[str] = ..., add_new_instances: _Optional[bool] = ..., standby_in_seconds: _Optional[int] = ..., standby_bytes: _Optional[int] = ..., fleet_bytes_limit: _Optional[int] = ...) -> None: ...

class PacketCaptureResult(_message.Message):
    __slots__ = ("name", "id", "etag", "provisioning_state", "properties", "created_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    PROVISIONING_STATE_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    etag: str
    provisioning_state: str
    properties: PacketCaptureParameters
    created_time: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., etag: _Optional[str] = ..., provisioning_state: _Optional[str] = ..., properties: _Optional[_Union[PacketCaptureParameters, _Mapping]] = ..., created_time: _Optional[str] = ...) -> None: ...

class CaptureFile(_message.Message):
    __slots__ = ("file_path", "storage_path", "size_bytes", "uploaded_bytes", "sha256", "stored_sha256", "upload_complete", "packets", "first_packet_time", "last_packet_time")
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    STORAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    STORED_SHA256_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    FIRST_PACKET_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_PACKET_TIME_FIELD_NUMBER: _ClassVar[int]
    file_path: str
    storage_path: str
    size_bytes: int
    uploaded_bytes: int
    sha256: str
    stored_sha256: str
    upload_complete: bool
    packets: int
    first_packet_time: str
    last_packet_time: str
    def __init__(self, file_path: _Optional[str] = ..., storage_path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., uploaded_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., stored_sha256: _Optional[str] = ..., upload_complete: _Optional[bool] = ..., packets: _Optional[int] = ..., first_packet_time: _Optional[str] = ..., last_packet_time: _Optional[str] = ...) -> None: ...

class InstanceStatus(_message.Message):
    __slots__ = ("id", "instance_id", "packet_capture_status", "stop_reason", "packet_capture_error", "error_message", "capture_start_time", "capture_stop_time", "packets_captured", "bytes_captured", "kernel_drops", "interface_drops", "files", "trigger_time", "trigger_source", "packets_received", "agent_version", "clock_offset_us", "clock_uncertainty_us", "counters_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PACKET_CAPTURE_STATUS_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    PACKET_CAPTURE_ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_START_TIME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_STOP_TIME_FIELD_NUMBER: _ClassVar[int]
    PACKETS_CAPTURED_FIELD_NUMBER: _ClassVar[int]
    BYTES_CAPTURED_FIELD_NUMBER: _ClassVar[int]
    KERNEL_DROPS_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_DROPS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_TIME_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PACKETS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_US_FIELD_NUMBER: _ClassVar[int]
    CLOCK_UNCERTAINTY_US_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    instance_id: str
    packet_capture_status: str
    stop_reason: str
    packet_capture_error: _containers.RepeatedScalarFieldContainer[str]
    error_message: str
    capture_start_time: str
    capture_stop_time: str
    packets_captured: int
    bytes_captured: int
    kernel_drops: int
    interface_drops: int
    files: _containers.RepeatedCompositeFieldContainer[CaptureFile]
    trigger_time: str
    trigger_source: str
    packets_received: int
    agent_version: str
    clock_offset_us: int
    clock_uncertainty_us: int
    counters_time: str
    def __init__(self, id: _Optional[str] = ..., instance_id: _Optional[str] = ..., packet_capture_status: _Optional[str] = ..., stop_reason: _Optional[str] = ..., packet_capture_error: _Optional[_Iterable[str]] = ..., error_message: _Optional[str] = ..., capture_start_time: _Optional[str] = ..., capture_stop_time: _Optional[str] = ..., packets_captured: _Optional[int] = ..., bytes_captured: _Optional[int] = ..., kernel_drops: _Optional[int] = ..., interface_drops: _Optional[int] = ..., files: _Optional[_Iterable[_Union[CaptureFile, _Mapping]]] = ..., trigger_time: _Optional[str] = ..., trigger_source: _Optional[str] = ..., packets_received: _Optional[int] = ..., agent_version: _Optional[str] = ..., clock_offset_us: _Optional[int] = ..., clock_uncertainty_us: _Optional[int] = ..., counters_time: _Optional[str] = ...) -> None: ...

class PacketCaptureQueryStatusResult(_message.Message):
    __slots__ = ("name", "id", "capture_start_time", "packet_capture_status", "stop_reason", "packet_capture_error", "instances", "trigger_time", "trigger_source", "trigger_after_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_START_TIME_FIELD_NUMBER: _ClassVar[int]
    PACKET_CAPTURE_STATUS_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    PACKET_CAPTURE_ERROR_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_TIME_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    capture_start_time: str
    packet_capture_status: str
    stop_reason: str
    packet_capture_error: _containers.RepeatedScalarFieldContainer[str]
    instances: _containers.RepeatedCompositeFieldContainer[InstanceStatus]
    trigger_time: str
    trigger_source: str
    trigger_after_seconds: int
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., capture_start_time: _Optional[str] = ..., packet_capture_status: _Optional[str] = ..., stop_reason: _Optional[str] = ..., packet_capture_error: _Optional[_Iterable[str]] = ..., instances: _Optional[_Iterable[_Union[InstanceStatus, _Mapping]]] = ..., trigger_time: _Optional[str] = ..., trigger_source: _Optional[str] = ..., trigger_after_seconds: _Optional[int] = ...) -> None: ...

class CreatePacketCaptureRequest(_message.Message):
    __slots__ = ("name", "resource_group", "subscription", "properties", "dry_run")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_GROUP_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    name: str
    resource_group: str
    subscription: str
    properties: PacketCaptureParameters
    dry_run: bool
    def __init__(self, name: _Optional[str] = ..., resource_group: _Optional[str] = ..., subscription: _Optional[str] = ..., properties: _Optional[_Union[PacketCaptureParameters, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class DryRunInstance(_message.Message):
    __slots__ = ("id", "instance_id", "connected", "measured", "interface_bytes_per_second", "interface_packets_per_second", "estimated_bytes_per_second")
    ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    MEASURED_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_PACKETS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    id: str
    instance_id: str
    connected: bool
    measured: bool
    interface_bytes_per_second: int
    interface_packets_per_second: int
    estimated_bytes_per_second: int
    def __init__(self, id: _Optional[str] = ..., instance_id: _Optional[str] = ..., connected: _Optional[bool] = ..., measured: _Optional[bool] = ..., interface_bytes_per_second: _Optional[int] = ..., interface_packets_per_second: _Optional[int] = ..., estimated_bytes_per_second: _Optional[int] = ...) -> None: ...

class DryRunResult(_message.Message):
    __slots__ = ("instances", "estimated_bytes_per_second")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[DryRunInstance]
    estimated_bytes_per_second: int
    def __init__(self, instances: _Optional[_Iterable[_Union[DryRunInstance, _Mapping]]] = ..., estimated_bytes_per_second: _Optional[int] = ...) -> None: ...

class CreatePacketCaptureResponse(_message.Message):
    __slots__ = ("capture", "dry_run")
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    capture: PacketCaptureResult
    dry_run: DryRunResult
    def __init__(self, capture: _Optional[_Union[PacketCaptureResult, _Mapping]] = ..., dry_run: _Optional[_Union[DryRunResult, _Mapping]] = ...) -> None: ...

class GetPacketCaptureRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPacketCaptureResponse(_message.Message):
    __slots__ = ("capture",)
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    capture: PacketCaptureResult
    def __init__(self, capture: _Optional[_Union[PacketCaptureResult, _Mapping]] = ...) -> None: ...

class ListPacketCapturesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPacketCapturesResponse(_message.Message):
    __slots__ = ("value", "next_page_token")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    value: _containers.RepeatedCompositeFieldContainer[PacketCaptureResult]
    next_page_token: str
    def __init__(self, value: _Optional[_Iterable[_Union[PacketCaptureResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StopPacketCaptureRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StopPacketCaptureResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TriggerPacketCaptureRequest(_message.Message):
    __slots__ = ("name", "after_in_seconds", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_in_seconds: int
    note: str
    def __init__(self, name: _Optional[str] = ..., after_in_seconds: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class TriggerPacketCaptureResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: PacketCaptureQueryStatusResult
    def __init__(self, status: _Optional[_Union[PacketCaptureQueryStatusResult, _Mapping]] = ...) -> None: ...

class GetCaptureManifestRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCaptureManifestResponse(_message.Message):
    __slots__ = ("manifest_json",)
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    manifest_json: bytes
    def __init__(self, manifest_json: _Optional[bytes] = ...) -> None: ...

class GetManifestKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetManifestKeyResponse(_message.Message):
    __slots__ = ("public_key_pem", "key_id")
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    public_key_pem: str
    key_id: str
    def __init__(self, public_key_pem: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class DeletePacketCaptureRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePacketCaptureResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPacketCaptureStatusRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPacketCaptureStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: PacketCaptureQueryStatusResult
    def __init__(self, status: _Optional[_Union[PacketCaptureQueryStatusResult, _Mapping]] = ...) -> None: ...

class WatchPacketCaptureStatusRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WatchPacketCaptureStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: PacketCaptureQueryStatusResult
    def __init__(self, status: _Optional[_Union[PacketCaptureQueryStatusResult, _Mapping]] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("id", "hostname", "interface", "addresses", "connected_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    hostname: str
    interface: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    connected_time: str
    def __init__(self, id: _Optional[str] = ..., hostname: _Optional[str] = ..., interface: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., connected_time: _Optional[str] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

class StorageAccountInfo(_message.Message):
    __slots__ = ("name", "kind", "endpoint")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    endpoint: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., endpoint: _Optional[str] = ...) -> None: ...

class ListStorageAccountsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListStorageAccountsResponse(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: _containers.RepeatedCompositeFieldContainer[StorageAccountInfo]
    def __init__(self, value: _Optional[_Iterable[_Union[StorageAccountInfo, _Mapping]]] = ...) -> None: ...

class ReadCaptureFileRequest(_message.Message):
    __slots__ = ("name", "instance_id", "file_path", "offset", "follow")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    instance_id: str
    file_path: str
    offset: int
    follow: bool
    def __init__(self, name: _Optional[str] = ..., instance_id: _Optional[str] = ..., file_path: _Optional[str] = ..., offset: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class ReadCaptureFileResponse(_message.Message):
    __slots__ = ("offset", "data", "complete")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    complete: bool
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., complete: _Optional[bool] = ...) -> None: ...
