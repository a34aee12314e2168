"""The error reason a failed call carries in its trailing metadata (fleetcap.core.transport)."""

from __future__ import annotations

import grpc
import grpc.aio

from fleetcap.core import transport
from fleetcap.core.vocabulary import CaptureError


def aio_error(*trailers: tuple[str, str]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details="storage: account down"
    )


def test_a_storage_failure_is_told_by_its_reason_not_its_message():
    failed = aio_error(("other", "x"), (transport.ERROR_REASON_KEY, CaptureError.STORAGE_FAILED))
    assert transport.error_reason(failed) == CaptureError.STORAGE_FAILED


def test_no_reason_is_empty_whatever_the_message_says():
    assert transport.error_reason(aio_error()) == ""
    assert transport.error_reason(aio_error(("other", "StorageFailed"))) == ""


def test_free_port_is_bindable():
    import socket

    port = transport.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        assert s.getsockname()[1] == port
