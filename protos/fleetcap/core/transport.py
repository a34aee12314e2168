"""Every gRPC channel and server fleetcap opens is built here, so that TLS credentials and
an auth interceptor (DESIGN: security comes next) slot in at one place.

Addresses are "host:port" or "unix:/path" (gRPC's own syntax); a unix socket lets a client
in one network namespace reach a coordinator in another.
"""
from __future__ import annotations

import socket
from typing import Any

import grpc
import grpc.aio

DEFAULT_ADDRESS = "127.0.0.1:7770"
"""Where a coordinator listens, and clients and agents dial, when nobody says otherwise."""
ERROR_REASON_KEY = "fleetcap-error-reason"
"""Trailing-metadata key of a machine-readable error reason (a CaptureError value), for the
errors a peer must tell apart by more than the status code."""
# Capture chunks are up to 4 MiB (node_agent/upload/uploader.py); leave room for the envelope.
MAX_MESSAGE_BYTES = 8 << 20
# Keepalive: notice a dead peer (a cut network, a killed process) within about 20 s, even on
# an idle stream, without tripping gRPC's too_many_pings guard (servers allow 5 s).
_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
_SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
]


def _channel_options(dedicated: bool) -> list[tuple[str, int]]:
    opts = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), *_KEEPALIVE]
    if dedicated:
        # Its own TCP connection: the data path must not share HTTP/2 flow control with the
        # control path.
        opts.append(("grpc.use_local_subchannel_pool", 1))
    return opts


def aio_channel(address: str, *, dedicated: bool = False) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=_channel_options(dedicated))


def sync_channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=_channel_options(False))


def aio_server() -> grpc.aio.Server:
    return grpc.aio.server(options=_SERVER_OPTIONS)


def error_reason(error: grpc.RpcError) -> str:
    """The error reason a failed call carries in its trailing metadata; "" for none."""
    trailers: Any = error.trailing_metadata() if isinstance(error, (grpc.Call, grpc.aio.AioRpcError)) else None
    for key, value in trailers or ():  # pairs (grpc.aio's Metadata iterates as pairs)
        if key == ERROR_REASON_KEY:
            return str(value)
    return ""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (for embedded etcd, tests and benchmarks)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def add_listen(server: grpc.aio.Server, address: str) -> int:
    """Binds an address; returns the port (0 for unix sockets). Raises OSError on failure."""
    port = server.add_insecure_port(address)
    if port == 0 and not address.startswith("unix:"):
        raise OSError(f"cannot listen on {address}")
    return port
