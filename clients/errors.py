"""The SDK's errors, and fleetcap's own error code enum they carry.

A caller matches on `ErrorCode`, never on gRPC's: the CLI's exit codes (clients/cli) and the
gateway's Azure errors (clients/rest/arm.py) are tables keyed on it, so the transport could
change under them without a caller noticing. The values are gRPC's numbers (as Temporal's SDK
does with its RPCStatusCode), so `int(e.code)` is the code on the wire.
"""

from __future__ import annotations

import builtins
import enum

import grpc


class ErrorCode(enum.IntEnum):
    """Why a call failed."""

    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def of(cls, code: grpc.StatusCode | None) -> ErrorCode:
        """The code of a gRPC status; UNKNOWN for OK or none (a failed call never has them)."""
        number = code.value[0] if code is not None else 0
        return cls(number) if number in cls._value2member_map_ else cls.UNKNOWN


class FleetcapError(Exception):
    """A failed call. `code` is an ErrorCode, `message` the server's explanation."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class InvalidCapture(FleetcapError):
    """INVALID_ARGUMENT: the message names the field and the rule."""


class CaptureNotFound(FleetcapError):
    """NOT_FOUND: the capture, or the target, does not exist."""


class CaptureAlreadyExists(FleetcapError):
    """ALREADY_EXISTS: the name is taken; captures cannot be updated."""


class QuotaExceeded(FleetcapError):
    """RESOURCE_EXHAUSTED: too many concurrent captures."""


class CoordinatorUnavailable(FleetcapError):
    """UNAVAILABLE: the coordinator (or its etcd) cannot be reached."""


class Unauthenticated(FleetcapError):
    """UNAUTHENTICATED: no valid credential (a client certificate or a bearer token)."""


class PermissionDenied(FleetcapError):
    """PERMISSION_DENIED: the caller's role does not allow the call."""


class IncompleteDownload(FleetcapError):
    """A download wrote what it could, but some files could not be had (an instance offline, a
    file still being written). `written` lists the paths written; `missing` has one
    (instance id, file path, error) per file that is not there. `code` is the first error's."""

    def __init__(self, written: builtins.list[str], missing: builtins.list[tuple[str, str, FleetcapError]]):
        super().__init__(missing[0][2].code, "; ".join(f"instance {i}: {path}: {e.message}" for i, path, e in missing))
        self.written = written
        self.missing = missing


ERROR_BY_CODE: dict[ErrorCode, type[FleetcapError]] = {
    ErrorCode.INVALID_ARGUMENT: InvalidCapture,
    ErrorCode.NOT_FOUND: CaptureNotFound,
    ErrorCode.ALREADY_EXISTS: CaptureAlreadyExists,
    ErrorCode.RESOURCE_EXHAUSTED: QuotaExceeded,
    ErrorCode.UNAVAILABLE: CoordinatorUnavailable,
    ErrorCode.UNAUTHENTICATED: Unauthenticated,
    ErrorCode.PERMISSION_DENIED: PermissionDenied,
}


def from_rpc_error(e: grpc.RpcError) -> FleetcapError:
    """The SDK's error for a failed gRPC call."""
    code = ErrorCode.of(e.code())
    return ERROR_BY_CODE.get(code, FleetcapError)(code, e.details() or "")
