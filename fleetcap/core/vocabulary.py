"""The words fleetcap's status speaks, as enums: the only place they are spelled.

Each is a `StrEnum`, so a member is the wire value itself: it goes into a protobuf string
field as is and compares equal to what comes back (`status.packet_capture_status ==
Status.RUNNING`). docs/stop-reasons.md explains every stop reason.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """packetCaptureStatus, Azure's values."""

    NOT_STARTED = "NotStarted"
    RUNNING = "Running"
    STANDBY = "Standby"  # fleetcap extension: a flight recorder armed, keeping its window
    TRIGGERED = "Triggered"  # fleetcap extension: a flight recorder triggered, recording its after-window
    STOPPED = "Stopped"
    ERROR = "Error"
    UNKNOWN = "Unknown"

    def is_terminal(self) -> bool:
        """Stopped or Error: the capture ran and ended (its upload may still go on)."""
        return self in _TERMINAL

    def is_active(self) -> bool:
        """NotStarted, Running, Standby or Triggered: the capture may still record packets."""
        return self in _ACTIVE


_TERMINAL = frozenset({Status.STOPPED, Status.ERROR})
_ACTIVE = frozenset({Status.NOT_STARTED, Status.RUNNING, Status.STANDBY, Status.TRIGGERED})


def is_terminal(status: str) -> bool:
    """`Status.is_terminal` for a raw wire value; an unknown word is not terminal."""
    return status in _TERMINAL


def is_active(status: str) -> bool:
    """`Status.is_active` for a raw wire value; an unknown word is not active."""
    return status in _ACTIVE


class StopReason(enum.StrEnum):
    """stopReason: one for every way a capture ends."""

    TIME_EXCEEDED = "TimeExceeded"  # timeLimitInSeconds reached (Azure's value)
    TOTAL_BYTES_EXCEEDED = "TotalBytesExceeded"  # the next packet would cross totalBytesPerSession
    STOPPED_BY_USER = "StoppedByUser"  # Stop was called
    DELETED = "Deleted"  # Delete was called while it ran
    SESSION_TIME_EXCEEDED = "SessionTimeExceeded"  # continuous mode: sessionTimeLimitInSeconds
    CAPTURE_FAILED = "CaptureFailed"  # libpcap or the file failed; see packetCaptureError
    AGENT_STOPPED = "AgentStopped"  # the agent went away (its lease expired)
    TRIGGER_WINDOW_ENDED = "TriggerWindowEnded"  # flight recorder: the seconds after the trigger have passed
    FLEET_BYTES_EXCEEDED = "FleetBytesExceeded"  # fleetBytesLimit: the fleet's files together reached it
    MIXED = "Mixed"  # capture level only: instances stopped for different reasons


class CaptureError(enum.StrEnum):
    """packetCaptureError, Azure's values."""

    INTERNAL = "InternalError"
    AGENT_STOPPED = "AgentStopped"
    CAPTURE_FAILED = "CaptureFailed"
    LOCAL_FILE_FAILED = "LocalFileFailed"
    STORAGE_FAILED = "StorageFailed"

    def stop_reason(self) -> StopReason:
        """The stop reason an instance that failed with this error reports."""
        return StopReason.AGENT_STOPPED if self is CaptureError.AGENT_STOPPED else StopReason.CAPTURE_FAILED


class StorageKind(enum.StrEnum):
    """What kind of store a storage account is, as ListStorageAccounts reports it. Each kind has
    one backend module behind the coordinator's storage registry (coordinator/storage/registry.py)."""

    LOCAL = "Local"  # a directory on the coordinator: the built-in account LOCAL_ACCOUNT
    AZURE_BLOB = "AzureBlob"
    S3 = "S3"  # any S3-compatible store: AWS S3, MinIO, Ceph RGW, R2, ...


LOCAL_ACCOUNT = "local"
"""The built-in storage account: the coordinator's own storage directory, always there."""


class TargetType(enum.StrEnum):
    """targetType: what a capture targets."""

    VM = "AzureVM"
    VMSS = "AzureVMSS"
