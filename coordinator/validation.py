"""Create-request validation: Azure's rules, defaults and ranges (reference §1, §6).

`validate` returns a normalized copy of the parameters with every default filled in, or
raises InvalidArgument naming the field (Azure's JSON name) and the rule. Nothing is written
before validation passes, so a bad request leaves no state behind.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping

from fleetcap.coordinator.errors import InvalidArgument
from fleetcap.coordinator.storage.sink import ContainerRule
from fleetcap.core import filters
from fleetcap.core.limits import (
    CAPTURE_NAME_RE,
    DEFAULT_STANDBY_BYTES,
    MAX_BPF_CHARS,
    MAX_FILE_COUNT,
    MAX_FILTER_FIELD_CHARS,
    MAX_FILTERS,
    MAX_FLEET_BYTES,
    MAX_SCOPE_ENTRIES,
    MAX_SESSION_S,
    MAX_STANDBY_S,
    MAX_TIME_LIMIT_S,
    MAX_TRIGGER_NOTE_CHARS,
    MIN_FILE_SIZE,
    MIN_FLEET_BYTES,
    MIN_STANDBY_BYTES,
    MIN_TOTAL_BYTES,
    U32_MAX,
    capture_path_problem,
)
from fleetcap.core.logs import bounded
from fleetcap.core.vocabulary import TargetType
from fleetcap.v1 import captures_pb2

DEFAULT_TOTAL_BYTES = 1073741824
DEFAULT_TIME_LIMIT_S = 18000
DEFAULT_CONTAINER = "network-watcher-logs"
DEFAULT_FILE_COUNT = 10
DEFAULT_FILE_SIZE = 104857600
DEFAULT_SESSION_S = 86400
TARGET_TYPES = {t.lower(): t for t in TargetType}
# An error repeats at most this much of a value the caller sent (a 7 MiB name is not sent back).
SHOWN_CHARS = 100


def validate_name(name: str) -> str:
    if not CAPTURE_NAME_RE.match(name or ""):
        raise InvalidArgument(
            "name",
            f"'{bounded(name, SHOWN_CHARS)}' must be 1-80 characters of letters, digits, '_', '.', '-', "
            "start with a letter or digit and end with a letter, digit or '_'",
        )
    return name


def _range(field: str, value: int, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise InvalidArgument(field, f"{value} is out of range {lo}..{hi}")
    return value


def validate_capture_path(field: str, path: str) -> str:
    """A Linux capture path: absolute, under /var/captures, ending in .cap, not escaping."""
    problem = capture_path_problem(path)
    if problem:
        raise InvalidArgument(field, problem)
    return posixpath.normpath(path)


def _validate_continuous(p: captures_pb2.PacketCaptureParameters) -> None:
    """Continuous (ring-buffer) mode: Azure PowerShell's mutual exclusions, then the settings.
    A value of 0 takes the default, as an unset one does."""
    if p.storage_location.file_path:
        raise InvalidArgument("storageLocation.filePath", "is invalid with continuousCapture; use localPath")
    if p.HasField("total_bytes_per_session"):
        raise InvalidArgument("totalBytesPerSession", "is not supported with continuousCapture; use captureSettings.fileSizeInBytes")
    if p.HasField("time_limit_in_seconds"):
        raise InvalidArgument(
            "timeLimitInSeconds", "is not supported with continuousCapture; use captureSettings.sessionTimeLimitInSeconds"
        )
    s = p.capture_settings
    s.file_count = _range("captureSettings.fileCount", s.file_count, 0, MAX_FILE_COUNT) or DEFAULT_FILE_COUNT
    s.file_size_in_bytes = _range("captureSettings.fileSizeInBytes", s.file_size_in_bytes, 0, U32_MAX) or DEFAULT_FILE_SIZE
    if s.file_size_in_bytes < MIN_FILE_SIZE:
        raise InvalidArgument(
            "captureSettings.fileSizeInBytes",
            f"{s.file_size_in_bytes} is below {MIN_FILE_SIZE}: a file must hold its header and one packet",
        )
    s.session_time_limit_in_seconds = (
        _range("captureSettings.sessionTimeLimitInSeconds", s.session_time_limit_in_seconds, 0, MAX_SESSION_S) or DEFAULT_SESSION_S
    )
    p.continuous_capture = True


def _validate_standby(p: captures_pb2.PacketCaptureParameters) -> None:
    """The flight recorder (fleetcap's): a window in seconds and a ring size; not a ring of files."""
    if not p.standby_in_seconds:
        if p.HasField("standby_bytes"):
            raise InvalidArgument("standbyBytes", "needs standbyInSeconds")
        p.ClearField("standby_in_seconds")
        return
    _range("standbyInSeconds", p.standby_in_seconds, 1, MAX_STANDBY_S)
    if p.continuous_capture or p.HasField("continuous_capture"):
        raise InvalidArgument("standbyInSeconds", "is not supported with continuousCapture: the flight recorder keeps its own ring")
    ring = p.standby_bytes if p.HasField("standby_bytes") and p.standby_bytes else DEFAULT_STANDBY_BYTES
    p.standby_bytes = _range("standbyBytes", ring, MIN_STANDBY_BYTES, U32_MAX)


def _validate_fleet_budget(p: captures_pb2.PacketCaptureParameters) -> None:
    if not p.fleet_bytes_limit:
        p.ClearField("fleet_bytes_limit")
        return
    _range("fleetBytesLimit", p.fleet_bytes_limit, MIN_FLEET_BYTES, MAX_FLEET_BYTES)
    if p.HasField("continuous_capture") or p.standby_in_seconds:
        raise InvalidArgument("fleetBytesLimit", "applies to standard captures only (not with continuousCapture or standbyInSeconds)")
    if p.add_new_instances:
        raise InvalidArgument(
            "fleetBytesLimit", "is not supported with addNewInstances: the budget is shared by the instances the capture starts with"
        )


def validate_trigger(after_s: int, note: str) -> int:
    """A trigger's seconds after (the range of timeLimitInSeconds) and its note."""
    _range("afterInSeconds", after_s, 0, MAX_TIME_LIMIT_S)
    if len(note) > MAX_TRIGGER_NOTE_CHARS or not note.isprintable():
        raise InvalidArgument("note", f"must be at most {MAX_TRIGGER_NOTE_CHARS} printable characters")
    return after_s


def container_of(storage_path: str) -> str:
    """The container a storagePath names: its last path segment ("https://acct.blob.core.
    windows.net/captures" or plain "captures"); empty = Azure's default container."""
    return storage_path.rstrip("/").rsplit("/", 1)[-1] if storage_path.strip() else DEFAULT_CONTAINER


def parse_filters(items: Iterable[captures_pb2.PacketCaptureFilter]) -> list[filters.Filter]:
    try:
        return filters.parse_filters(items)
    except filters.FilterError as e:
        raise InvalidArgument(e.field, e.rule) from None


def validate(
    params: captures_pb2.PacketCaptureParameters, *, storage_accounts: Mapping[str, ContainerRule]
) -> captures_pb2.PacketCaptureParameters:
    """The parameters with Azure's defaults filled in, or InvalidArgument naming the field and the
    rule. `storage_accounts`: each configured account's rule for container names."""
    p = captures_pb2.PacketCaptureParameters()
    p.CopyFrom(params)

    if not p.target.strip():
        raise InvalidArgument("target", "is required: a VM or scale-set name or ARM id")
    target_type = TARGET_TYPES.get((p.target_type or TargetType.VM).lower())
    if target_type is None:
        raise InvalidArgument("targetType", f"'{p.target_type}' is not one of {', '.join(TargetType)}")
    p.target_type = target_type
    if target_type == TargetType.VM and (p.scope.include or p.scope.exclude):
        raise InvalidArgument("scope", "include/exclude apply only to targetType AzureVMSS")
    if target_type == TargetType.VM and p.add_new_instances:
        raise InvalidArgument("addNewInstances", "applies only to targetType AzureVMSS")
    for field, entries in (("scope.include", p.scope.include), ("scope.exclude", p.scope.exclude)):
        if len(entries) > MAX_SCOPE_ENTRIES:
            raise InvalidArgument(field, f"{len(entries)} entries; at most {MAX_SCOPE_ENTRIES}")
    if len(p.filters) > MAX_FILTERS:
        raise InvalidArgument("filters", f"{len(p.filters)} filters; at most {MAX_FILTERS}")
    for i, f in enumerate(p.filters):
        for name, value in (
            ("localIPAddress", f.local_ip_address),
            ("remoteIPAddress", f.remote_ip_address),
            ("localPort", f.local_port),
            ("remotePort", f.remote_port),
        ):
            if len(value) > MAX_FILTER_FIELD_CHARS:
                raise InvalidArgument(f"filters[{i}].{name}", f"{len(value)} characters; at most {MAX_FILTER_FIELD_CHARS}")
    if len(p.bpf_filter) > MAX_BPF_CHARS:
        raise InvalidArgument("bpfFilter", f"{len(p.bpf_filter)} characters; at most {MAX_BPF_CHARS}")

    p.bytes_to_capture_per_packet = _range("bytesToCapturePerPacket", p.bytes_to_capture_per_packet, 0, U32_MAX)
    loc = p.storage_location
    if p.HasField("continuous_capture"):
        _validate_continuous(p)
        local_field, local = "storageLocation.localPath", loc.local_path
    else:
        if loc.local_path:
            raise InvalidArgument("storageLocation.localPath", "is valid only with continuousCapture; use filePath")
        if p.HasField("capture_settings"):
            raise InvalidArgument("captureSettings", "is valid only with continuousCapture")
        total = p.total_bytes_per_session if p.HasField("total_bytes_per_session") else DEFAULT_TOTAL_BYTES
        _range("totalBytesPerSession", total, 0, U32_MAX)
        if 0 < total < MIN_TOTAL_BYTES:
            raise InvalidArgument(
                "totalBytesPerSession", f"{total} is below {MIN_TOTAL_BYTES}, the size of the pcap file header; use 0 for no byte limit"
            )
        p.total_bytes_per_session = total
        limit = p.time_limit_in_seconds if p.HasField("time_limit_in_seconds") else DEFAULT_TIME_LIMIT_S
        p.time_limit_in_seconds = _range("timeLimitInSeconds", limit, 0, MAX_TIME_LIMIT_S)
        local_field, local = "storageLocation.filePath", loc.file_path

    accounts = storage_accounts
    if not (loc.storage_id or local):
        raise InvalidArgument("storageLocation", f"needs a storageId, a {local_field.split('.')[1]}, or both")
    if loc.storage_path and not loc.storage_id:
        raise InvalidArgument("storageLocation.storagePath", "needs storageLocation.storageId")
    if loc.storage_id:
        account = loc.storage_id.rstrip("/").rsplit("/", 1)[-1]
        if account not in accounts:
            raise InvalidArgument(
                "storageLocation.storageId",
                f"'{loc.storage_id}' is not a configured storage account (configured: {', '.join(sorted(accounts))})",
            )
        loc.storage_id = account
        rule = accounts[account]
        if loc.storage_path and not rule.allows(container_of(loc.storage_path)):
            raise InvalidArgument(
                "storageLocation.storagePath", f"'{container_of(loc.storage_path)}' is not a container name ({rule.text})"
            )
    if loc.file_path:
        loc.file_path = validate_capture_path("storageLocation.filePath", loc.file_path)
    if loc.local_path:
        loc.local_path = validate_capture_path("storageLocation.localPath", loc.local_path)

    _validate_standby(p)
    _validate_fleet_budget(p)
    parse_filters(p.filters)
    for f in p.filters:
        f.protocol = filters.PROTOCOLS[(f.protocol or "Any").lower()]
    return p


def expressions_to_compile(p: captures_pb2.PacketCaptureParameters) -> list[tuple[str, str, str]]:
    """(field, expression, what libpcap's rejection means) for each expression the create must
    compile before it starts: the raw BPF filter alone, then the whole expression as an agent
    will build it. The compile runs in a worker process (filter_compiler.py)."""
    checks = []
    if p.bpf_filter.strip():
        checks.append(("bpfFilter", p.bpf_filter, "libpcap rejects it"))
    combined = filters.capture_expression(parse_filters(p.filters), filters.PLACEHOLDER_LOCALS, bpf_filter=p.bpf_filter)
    checks.append(("filters", combined, "libpcap rejects the combined filter"))
    return checks
