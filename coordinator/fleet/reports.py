"""What an agent may say in a report or a hello: every field it supplies is bounded before any of
it reaches etcd, so a compromised agent can neither grow a record without limit nor write words
outside the vocabulary. A report that breaks a rule is refused whole (and logged); an error
message that is too long is cut, since its beginning is what an operator reads.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

from fleetcap.core import limits
from fleetcap.core.vocabulary import CaptureError, Status, StopReason
from fleetcap.v1 import captures_pb2, fleet_pb2

MAX_ERROR_MESSAGE_CHARS = 1024
MAX_ERRORS = len(CaptureError)  # each error word at most once
MAX_FILES = limits.MAX_FILE_COUNT + 2  # a ring's newest files, and the one opening
MAX_PATH_CHARS = 1024
MAX_TIME_CHARS = 40  # RFC 3339 with nanoseconds and an offset is 35
MAX_SHORT_CHARS = 128  # a session id's parts, a version, a hash
MAX_TRIGGER_SOURCE_CHARS = 512  # the caller's identity and a 200-character note
MAX_HOSTNAME_CHARS = 253  # DNS's limit
MAX_INTERFACE_CHARS = 64  # Linux allows 15
MAX_ADDRESSES = 256
MAX_HELLO_CAPTURES = 1024

_STATUSES = frozenset(Status)
_STOP_REASONS = frozenset(StopReason) | {""}
_ERRORS = frozenset(CaptureError)


class ReportRefused(ValueError):
    """A report or hello that breaks a rule; the message names the field and the rule."""


# The text fields of a status, of each of its files and of a hello, with the most characters each.
_STATUS_TEXT = {
    "capture_start_time": MAX_TIME_CHARS,
    "capture_stop_time": MAX_TIME_CHARS,
    "trigger_time": MAX_TIME_CHARS,
    "counters_time": MAX_TIME_CHARS,
    "trigger_source": MAX_TRIGGER_SOURCE_CHARS,
    "agent_version": MAX_SHORT_CHARS,
    "id": MAX_PATH_CHARS,
    "instance_id": MAX_PATH_CHARS,
}
_FILE_TEXT = {
    "file_path": MAX_PATH_CHARS,
    "storage_path": MAX_PATH_CHARS,
    "sha256": MAX_SHORT_CHARS,
    "stored_sha256": MAX_SHORT_CHARS,
    "first_packet_time": MAX_TIME_CHARS,
    "last_packet_time": MAX_TIME_CHARS,
}
_HELLO_TEXT = {"hostname": MAX_HOSTNAME_CHARS, "interface": MAX_INTERFACE_CHARS, "agent_version": MAX_SHORT_CHARS}


def _at_most(value: str, chars: int, field: str) -> None:
    if len(value) > chars:
        raise ReportRefused(f"{field}: {len(value)} characters, at most {chars}")


def _texts(message: Any, bounds: dict[str, int], prefix: str = "") -> None:
    for field, chars in bounds.items():
        _at_most(getattr(message, field), chars, prefix + field)


def _count(items: Sized, most: int, field: str) -> None:
    if len(items) > most:
        raise ReportRefused(f"{field}: {len(items)}, at most {most}")


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
    _texts(status, _STATUS_TEXT)
    _count(status.files, MAX_FILES, "files")
    for f in status.files:
        _texts(f, _FILE_TEXT, "files.")


def check_progress(progress: fleet_pb2.CaptureProgress) -> None:
    """As check_status, for a whole report: its capture's name and session id too."""
    if not limits.CAPTURE_NAME_RE.match(progress.capture_name):
        raise ReportRefused(f"capture_name: '{progress.capture_name[:100]}' is not a capture name")
    _at_most(progress.capture_id, MAX_PATH_CHARS + MAX_TIME_CHARS, "capture_id")
    check_status(progress.status)


def check_hello(hello: fleet_pb2.AgentHello) -> None:
    """Bounds what a hello says about its host, and each report it carries."""
    _texts(hello, _HELLO_TEXT)
    _count(hello.addresses, MAX_ADDRESSES, "addresses")
    for address in hello.addresses:
        _at_most(address, MAX_SHORT_CHARS, "addresses")
    _count(hello.captures, MAX_HELLO_CAPTURES, "captures")
    for progress in hello.captures:
        check_progress(progress)
