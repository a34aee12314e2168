from fleetcap.v1 import captures_pb2 as _captures_pb2
from fleetcap.v1 import fleet_pb2 as _fleet_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CaptureRecord(_message.Message):
    __slots__ = ("resource", "stop_requested", "instance_keys", "local_path", "container", "trigger_time", "trigger_source", "trigger_after_s")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    STOP_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_KEYS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PATH_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_TIME_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    resource: _captures_pb2.PacketCaptureResult
    stop_requested: str
    instance_keys: _containers.RepeatedScalarFieldContainer[str]
    local_path: str
    container: str
    trigger_time: str
    trigger_source: str
    trigger_after_s: int
    def __init__(self, resource: _Optional[_Union[_captures_pb2.PacketCaptureResult, _Mapping]] = ..., stop_requested: _Optional[str] = ..., instance_keys: _Optional[_Iterable[str]] = ..., local_path: _Optional[str] = ..., container: _Optional[str] = ..., trigger_time: _Optional[str] = ..., trigger_source: _Optional[str] = ..., trigger_after_s: _Optional[int] = ...) -> None: ...

class InstanceRecord(_message.Message):
    __slots__ = ("instance_key", "identity", "status")
    INSTANCE_KEY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    instance_key: str
    identity: _fleet_pb2.AgentIdentity
    status: _captures_pb2.InstanceStatus
    def __init__(self, instance_key: _Optional[str] = ..., identity: _Optional[_Union[_fleet_pb2.AgentIdentity, _Mapping]] = ..., status: _Optional[_Union[_captures_pb2.InstanceStatus, _Mapping]] = ...) -> None: ...

class AgentRecord(_message.Message):
    __slots__ = ("identity", "hostname", "interface", "addresses", "connected_time", "coordinator")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_TIME_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    identity: _fleet_pb2.AgentIdentity
    hostname: str
    interface: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    connected_time: str
    coordinator: str
    def __init__(self, identity: _Optional[_Union[_fleet_pb2.AgentIdentity, _Mapping]] = ..., hostname: _Optional[str] = ..., interface: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., connected_time: _Optional[str] = ..., coordinator: _Optional[str] = ...) -> None: ...

class FetchRecord(_message.Message):
    __slots__ = ("fetch_id", "capture_name", "capture_id", "instance_key", "file_path")
    FETCH_ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_NAME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_KEY_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    fetch_id: str
    capture_name: str
    capture_id: str
    instance_key: str
    file_path: str
    def __init__(self, fetch_id: _Optional[str] = ..., capture_name: _Optional[str] = ..., capture_id: _Optional[str] = ..., instance_key: _Optional[str] = ..., file_path: _Optional[str] = ...) -> None: ...

class BudgetRecord(_message.Message):
    __slots__ = ("limit", "granted", "allowance", "exhausted")
    class AllowanceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    ALLOWANCE_FIELD_NUMBER: _ClassVar[int]
    EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    limit: int
    granted: int
    allowance: _containers.ScalarMap[str, int]
    exhausted: bool
    def __init__(self, limit: _Optional[int] = ..., granted: _Optional[int] = ..., allowance: _Optional[_Mapping[str, int]] = ..., exhausted: _Optional[bool] = ...) -> None: ...
