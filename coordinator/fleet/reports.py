"""What an agent may say in a report or a hello: every field it supplies is bounded before any of
it reaches etcd, so a compromised agent can neither grow a record without limit nor write words
outside the vocabulary. A report that breaks a rule is refused whole (and logged); an error
message that is too long is cut, since its beginning is what an operator reads.
"""
from __future__ import annotations

from fleetcap.core import limits
from fleetcap.core.vocabulary import CaptureError, Status, StopReason
from fleetcap.v1 import captures_pb2, fleet_pb2

MAX_ERROR_MESSAGE_CHARS = 1024
MAX_ERRORS = len(CaptureError)       # each error word at most once
MAX_FILES = limits.MAX_FILE_COUNT + 2  # a ring's newest files, and the one opening
MAX_PATH_CHARS = 1024
MAX_TIME_CHARS = 40                  # RFC 3339 with nanoseconds and an offset is 35
MAX_SHORT_CHARS = 128                # a session id's parts, a version, a hash
MAX_TRIGGER_SOURCE_CHARS = 512       # the caller's identity and a 200-character note
MAX_HOSTNAME_CHARS = 253             # DNS's limit
MAX_INTERFACE_CHARS = 64             # Linux allows 15
MAX_ADDRESSES = 256
MAX_HELLO_CAPTURES = 1024

_STATUSES = frozenset(Status)
_STOP_REASONS = frozenset(StopReason) | {""}
_ERRORS = frozenset(CaptureError)


class ReportRefused(ValueError):
    """A report or hello that breaks a rule; the message names the field and the rule."""


def _at_most(value: str, chars: int, field: str) -> None:
    if len(value) > chars:
        raise ReportRefused(f"{field}: {len(value)} characters, at most {chars}")


def check_status(status: captures_pb2.InstanceStatus) -> None:
    """Bounds an instance status from an agent in place (the error message is cut); raises
    ReportRefused for anything else out of bounds."""
    if status.packet_capture_status not in _STATUSES:
        raise ReportRefused(f"packetCaptureStatus: '{status.packet_capture_status[:40]}' is not a status")
    if status.stop_reason not in _STOP_REASONS:
        raise ReportRefused(f"stopReason: '{status.stop_reason[:40]}' is not a stop reason")
    errors = list(status.packet_capture_error)
    if len(errors) > MAX_ERRORS or len(set(errors)) != len(errors) or not set(errors) <= _ERRORS:
        raise ReportRefused("packetCaptureError: each a known error word, at most once")
    if len(status.error_message) > MAX_ERROR_MESSAGE_CHARS:
        status.error_message = status.error_message[:MAX_ERROR_MESSAGE_CHARS] + "..."
    for field in ("capture_start_time", "capture_stop_time", "trigger_time", "counters_time"):
        _at_most(getattr(status, field), MAX_TIME_CHARS, field)
    _at_most(status.trigger_source, MAX_TRIGGER_SOURCE_CHARS, "trigger_source")
    _at_most(status.agent_version, MAX_SHORT_CHARS, "agent_version")
    _at_most(status.id, MAX_PATH_CHARS, "id")
    _at_most(status.instance_id, MAX_PATH_CHARS, "instance_id")
    if len(status.files) > MAX_FILES:
        raise ReportRefused(f"files: {len(status.files)}, at most {MAX_FILES}")
    for f in status.files:
        _at_most(f.file_path, MAX_PATH_CHARS, "files.file_path")
        _at_most(f.storage_path, MAX_PATH_CHARS, "files.storage_path")
        for field in ("sha256", "stored_sha256"):
            _at_most(getattr(f, field), MAX_SHORT_CHARS, f"files.{field}")
        for field in ("first_packet_time", "last_packet_time"):
            _at_most(getattr(f, field), MAX_TIME_CHARS, f"files.{field}")


def check_progress(progress: fleet_pb2.CaptureProgress) -> None:
    """As check_status, for a whole report: its capture's name and session id too."""
    if not limits.CAPTURE_NAME_RE.match(progress.capture_name):
        raise ReportRefused(f"capture_name: '{progress.capture_name[:100]}' is not a capture name")
    _at_most(progress.capture_id, MAX_PATH_CHARS + MAX_TIME_CHARS, "capture_id")
    check_status(progress.status)


def check_hello(hello: fleet_pb2.AgentHello) -> None:
    """Bounds what a hello says about its host, and each report it carries."""
    _at_most(hello.hostname, MAX_HOSTNAME_CHARS, "hostname")
    _at_most(hello.interface, MAX_INTERFACE_CHARS, "interface")
    _at_most(hello.agent_version, MAX_SHORT_CHARS, "agent_version")
    if len(hello.addresses) > MAX_ADDRESSES:
        raise ReportRefused(f"addresses: {len(hello.addresses)}, at most {MAX_ADDRESSES}")
    for address in hello.addresses:
        _at_most(address, MAX_SHORT_CHARS, "addresses")
    if len(hello.captures) > MAX_HELLO_CAPTURES:
        raise ReportRefused(f"captures: {len(hello.captures)}, at most {MAX_HELLO_CAPTURES}")
    for progress in hello.captures:
        check_progress(progress)
