from fleetcap.v1 import captures_pb2 as _captures_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentIdentity(_message.Message):
    __slots__ = ("subscription", "resource_group", "vm_name", "vmss_name", "instance_id")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_GROUP_FIELD_NUMBER: _ClassVar[int]
    VM_NAME_FIELD_NUMBER: _ClassVar[int]
    VMSS_NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    subscription: str
    resource_group: str
    vm_name: str
    vmss_name: str
    instance_id: str
    def __init__(self, subscription: _Optional[str] = ..., resource_group: _Optional[str] = ..., vm_name: _Optional[str] = ..., vmss_name: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class AgentHello(_message.Message):
    __slots__ = ("identity", "hostname", "agent_version", "interface", "addresses", "captures")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    CAPTURES_FIELD_NUMBER: _ClassVar[int]
    identity: AgentIdentity
    hostname: str
    agent_version: str
    interface: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    captures: _containers.RepeatedCompositeFieldContainer[CaptureProgress]
    def __init__(self, identity: _Optional[_Union[AgentIdentity, _Mapping]] = ..., hostname: _Optional[str] = ..., agent_version: _Optional[str] = ..., interface: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., captures: _Optional[_Iterable[_Union[CaptureProgress, _Mapping]]] = ...) -> None: ...

class InterfaceCounters(_message.Message):
    __slots__ = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    RX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    TX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    def __init__(self, rx_bytes: _Optional[int] = ..., tx_bytes: _Optional[int] = ..., rx_packets: _Optional[int] = ..., tx_packets: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("counters",)
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    counters: InterfaceCounters
    def __init__(self, counters: _Optional[_Union[InterfaceCounters, _Mapping]] = ...) -> None: ...

class CaptureProgress(_message.Message):
    __slots__ = ("capture_name", "capture_id", "status")
    CAPTURE_NAME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    capture_name: str
    capture_id: str
    status: _captures_pb2.InstanceStatus
    def __init__(self, capture_name: _Optional[str] = ..., capture_id: _Optional[str] = ..., status: _Optional[_Union[_captures_pb2.InstanceStatus, _Mapping]] = ...) -> None: ...

class ClockProbe(_message.Message):
    __slots__ = ("seq", "agent_send_ns")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AGENT_SEND_NS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    agent_send_ns: int
    def __init__(self, seq: _Optional[int] = ..., agent_send_ns: _Optional[int] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "progress", "clock_probe", "budget_request", "budget_return")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_PROBE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REQUEST_FIELD_NUMBER: _ClassVar[int]
    BUDGET_RETURN_FIELD_NUMBER: _ClassVar[int]
    hello: AgentHello
    heartbeat: Heartbeat
    progress: CaptureProgress
    clock_probe: ClockProbe
    budget_request: BudgetRequest
    budget_return: BudgetReturn
    def __init__(self, hello: _Optional[_Union[AgentHello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., progress: _Optional[_Union[CaptureProgress, _Mapping]] = ..., clock_probe: _Optional[_Union[ClockProbe, _Mapping]] = ..., budget_request: _Optional[_Union[BudgetRequest, _Mapping]] = ..., budget_return: _Optional[_Union[BudgetReturn, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("instance_resource_id", "heartbeat_interval_ms")
    INSTANCE_RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    instance_resource_id: str
    heartbeat_interval_ms: int
    def __init__(self, instance_resource_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class StartCapture(_message.Message):
    __slots__ = ("capture_name", "capture_id", "file_path", "snaplen", "total_bytes", "time_limit_s", "filters", "bpf_filter", "upload", "keep_local", "continuous", "file_size", "file_count", "standby_s", "standby_bytes", "fleet_allowance")
    CAPTURE_NAME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    SNAPLEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_S_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    BPF_FILTER_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    KEEP_LOCAL_FIELD_NUMBER: _ClassVar[int]
    CONTINUOUS_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    STANDBY_S_FIELD_NUMBER: _ClassVar[int]
    STANDBY_BYTES_FIELD_NUMBER: _ClassVar[int]
    FLEET_ALLOWANCE_FIELD_NUMBER: _ClassVar[int]
    capture_name: str
    capture_id: str
    file_path: str
    snaplen: int
    total_bytes: int
    time_limit_s: int
    filters: _containers.RepeatedCompositeFieldContainer[_captures_pb2.PacketCaptureFilter]
    bpf_filter: str
    upload: bool
    keep_local: bool
    continuous: bool
    file_size: int
    file_count: int
    standby_s: int
    standby_bytes: int
    fleet_allowance: int
    def __init__(self, capture_name: _Optional[str] = ..., capture_id: _Optional[str] = ..., file_path: _Optional[str] = ..., snaplen: _Optional[int] = ..., total_bytes: _Optional[int] = ..., time_limit_s: _Optional[int] = ..., filters: _Optional[_Iterable[_Union[_captures_pb2.PacketCaptureFilter, _Mapping]]] = ..., bpf_filter: _Optional[str] = ..., upload: _Optional[bool] = ..., keep_local: _Optional[bool] = ..., continuous: _Optional[bool] = ..., file_size: _Optional[int] = ..., file_count: _Optional[int] = ..., standby_s: _Optional[int] = ..., standby_bytes: _Optional[int] = ..., fleet_allowance: _Optional[int] = ...) -> None: ...

class BudgetRequest(_message.Message):
    __slots__ = ("capture_name", "capture_id", "used", "need")
    CAPTURE_NAME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    NEED_FIELD_NUMBER: _ClassVar[int]
    capture_name: str
    capture_id: str
    used: int
    need: int
    def __init__(self, capture_name: _Optional[str] = ..., capture_id: _Optional[str] = ..., used: _Optional[int] = ..., need: _Optional[int] = ...) -> None: ...

class BudgetReturn(_message.Message):
    __slots__ = ("capture_name", "capture_id", "returned")
    CAPTURE_NAME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    RETURNED_FIELD_NUMBER: _ClassVar[int]
    capture_name: str
    capture_id: str
    returned: int
    def __init__(self, capture_name: _Optional[str] = ..., capture_id: _Optional[str] = ..., returned: _Optional[int] = ...) -> None: ...

class BudgetGrant(_message.Message):
    __slots__ = ("capture_name", "capture_id", "granted", "exhausted")
    CAPTURE_NAME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    capture_name: str
    capture_id: str
    granted: int
    exhausted: bool
    def __init__(self, capture_name: _Optional[str] = ..., capture_id: _Optional[str] = ..., granted: _Optional[int] = ..., exhausted: _Optional[bool] = ...) -> None: ...

class TriggerCapture(_message.Message):
    __slots__ = ("capture_name", "capture_id", "trigger_time_ms", "after_s", "source")
    CAPTURE_NAME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    AFTER_S_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    capture_name: str
    capture_id: str
    trigger_time_ms: int
    after_s: int
    source: str
    def __init__(self, capture_name: _Optional[str] = ..., capture_id: _Optional[str] = ..., trigger_time_ms: _Optional[int] = ..., after_s: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class StopCapture(_message.Message):
    __slots__ = ("capture_name", "capture_id", "reason")
    CAPTURE_NAME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    capture_name: str
    capture_id: str
    reason: str
    def __init__(self, capture_name: _Optional[str] = ..., capture_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class FetchFile(_message.Message):
    __slots__ = ("capture_name", "capture_id", "file_path", "fetch_id")
    CAPTURE_NAME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    FETCH_ID_FIELD_NUMBER: _ClassVar[int]
    capture_name: str
    capture_id: str
    file_path: str
    fetch_id: str
    def __init__(self, capture_name: _Optional[str] = ..., capture_id: _Optional[str] = ..., file_path: _Optional[str] = ..., fetch_id: _Optional[str] = ...) -> None: ...

class ClockEcho(_message.Message):
    __slots__ = ("seq", "agent_send_ns", "coordinator_receive_ns", "coordinator_send_ns")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AGENT_SEND_NS_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_RECEIVE_NS_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_SEND_NS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    agent_send_ns: int
    coordinator_receive_ns: int
    coordinator_send_ns: int
    def __init__(self, seq: _Optional[int] = ..., agent_send_ns: _Optional[int] = ..., coordinator_receive_ns: _Optional[int] = ..., coordinator_send_ns: _Optional[int] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("welcome", "start", "stop", "fetch", "trigger", "clock_echo", "budget_grant")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    FETCH_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    CLOCK_ECHO_FIELD_NUMBER: _ClassVar[int]
    BUDGET_GRANT_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    start: StartCapture
    stop: StopCapture
    fetch: FetchFile
    trigger: TriggerCapture
    clock_echo: ClockEcho
    budget_grant: BudgetGrant
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., start: _Optional[_Union[StartCapture, _Mapping]] = ..., stop: _Optional[_Union[StopCapture, _Mapping]] = ..., fetch: _Optional[_Union[FetchFile, _Mapping]] = ..., trigger: _Optional[_Union[TriggerCapture, _Mapping]] = ..., clock_echo: _Optional[_Union[ClockEcho, _Mapping]] = ..., budget_grant: _Optional[_Union[BudgetGrant, _Mapping]] = ...) -> None: ...

class UploadOpen(_message.Message):
    __slots__ = ("identity", "capture_name", "capture_id", "file_path", "restart", "fetch_id")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_NAME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    FETCH_ID_FIELD_NUMBER: _ClassVar[int]
    identity: AgentIdentity
    capture_name: str
    capture_id: str
    file_path: str
    restart: bool
    fetch_id: str
    def __init__(self, identity: _Optional[_Union[AgentIdentity, _Mapping]] = ..., capture_name: _Optional[str] = ..., capture_id: _Optional[str] = ..., file_path: _Optional[str] = ..., restart: _Optional[bool] = ..., fetch_id: _Optional[str] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("offset", "data", "crc32", "crc32c")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    crc32: int
    crc32c: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., crc32: _Optional[int] = ..., crc32c: _Optional[int] = ...) -> None: ...

class UploadFinish(_message.Message):
    __slots__ = ("size_bytes", "sha256")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    sha256: str
    def __init__(self, size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("open", "chunk", "finish")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    open: UploadOpen
    chunk: UploadChunk
    finish: UploadFinish
    def __init__(self, open: _Optional[_Union[UploadOpen, _Mapping]] = ..., chunk: _Optional[_Union[UploadChunk, _Mapping]] = ..., finish: _Optional[_Union[UploadFinish, _Mapping]] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("acked_offset", "committed", "storage_path", "stored_sha256")
    ACKED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    STORAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    STORED_SHA256_FIELD_NUMBER: _ClassVar[int]
    acked_offset: int
    committed: bool
    storage_path: str
    stored_sha256: str
    def __init__(self, acked_offset: _Optional[int] = ..., committed: _Optional[bool] = ..., storage_path: _Optional[str] = ..., stored_sha256: _Optional[str] = ...) -> None: ...
