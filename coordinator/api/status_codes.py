"""The one table from domain error to gRPC status code, for every servicer.

Anything not in the table is a bug: it becomes INTERNAL with a short message and is logged
here, never sent as a traceback. An error with a machine-readable reason (StorageFailed)
also carries it in the trailing metadata, so that a client never parses a message.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import grpc.aio

from fleetcap.coordinator import errors
from fleetcap.core.transport import ERROR_REASON_KEY
from fleetcap.core.vocabulary import CaptureError

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
"""A servicer's context, whatever its messages."""

STATUS_BY_ERROR: dict[type[Exception], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
    errors.Superseded: grpc.StatusCode.ABORTED,
    errors.StorageFailed: grpc.StatusCode.UNAVAILABLE,
}
REASON_BY_ERROR: dict[type[Exception], str] = {
    errors.StorageFailed: CaptureError.STORAGE_FAILED,
}


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """(code, message, trailing metadata) for an exception."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            reason = REASON_BY_ERROR.get(cls)
            return STATUS_BY_ERROR[cls], str(exc), (((ERROR_REASON_KEY, reason),) if reason else ())
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the coordinator log", ()


async def abort(context: Context, exc: Exception) -> None:
    """Ends the call with the status the table gives `exc`; never returns."""
    code, message, metadata = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.error("internal error", exc_info=exc)
    await context.abort(code, message, trailing_metadata=metadata)
