"""Every gRPC channel and server fleetcap opens is built here, with its TLS and credentials.

Addresses are "host:port" or "unix:/path" (gRPC's own syntax); a unix socket lets a client
in one network namespace reach a coordinator in another. The rule for plaintext is the same on
both ends: without TLS, only a unix socket or a loopback address, unless the operator says
`--insecure` (docs/security.md).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

DEFAULT_ADDRESS = "127.0.0.1:7770"
"""Where a coordinator listens, and clients and agents dial, when nobody says otherwise."""
AUTHORIZATION_KEY = "authorization"
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
    # Streams one connection may have open at once: an agent needs a control stream and a few
    # uploads, a client a few watches (a gateway, one per open portal view); more is a caller
    # hoarding the server. Beyond it, new streams wait for one to end.
    ("grpc.max_concurrent_streams", 128),
]


class PlaintextRefused(ValueError):
    """A plaintext channel or listener beyond loopback was asked for without --insecure."""


def is_local(address: str) -> bool:
    """A unix socket, or a loopback host ("localhost", 127.0.0.0/8, ::1)."""
    if address.startswith("unix:"):
        return True
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{flag}: cannot read {path}: {e.strerror}") from None


@dataclasses.dataclass(frozen=True)
class ClientCredentials:
    """How a client or an agent proves itself and checks the coordinator.

    tls_ca: the CA the coordinator's certificate must chain to; set, the channel is TLS with no
    fallback to plaintext. tls_cert/tls_key: a client certificate (agents must have one).
    token: a bearer token, sent as `authorization: Bearer ...` on every call.
    server_name: the name the coordinator's certificate must carry, checked instead of the host
    dialled (agents: auth.COORDINATOR_SERVER_NAME, which only coordinator certificates hold).
    """

    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    token: str = ""
    insecure: bool = False
    server_name: str = ""

    @classmethod
    def from_env(
        cls,
        *,
        tls_ca: str = "",
        tls_cert: str = "",
        tls_key: str = "",
        token: str = "",
        insecure: bool = False,
        environ: Mapping[str, str] = os.environ,
    ) -> ClientCredentials:
        """What is given wins over FLEETCAP_TLS_CA, FLEETCAP_TLS_CERT, FLEETCAP_TLS_KEY and
        FLEETCAP_TOKEN."""
        return cls(
            tls_ca or environ.get("FLEETCAP_TLS_CA", ""),
            tls_cert or environ.get("FLEETCAP_TLS_CERT", ""),
            tls_key or environ.get("FLEETCAP_TLS_KEY", ""),
            token or environ.get("FLEETCAP_TOKEN", ""),
            insecure,
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((AUTHORIZATION_KEY, f"Bearer {self.token}"),) if self.token else ()

    def channel_credentials(self, address: str) -> grpc.ChannelCredentials | None:
        """TLS credentials, or None for plaintext (allowed only to a local address or with
        insecure). Raises ValueError naming the flag at fault."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if not self.tls_ca:
            if self.tls_cert:
                raise ValueError("--tls-cert needs --tls-ca, the CA the coordinator's certificate chains to")
            if not is_local(address) and not self.insecure:
                raise PlaintextRefused(
                    f"{address} is not a local address: give --tls-ca (FLEETCAP_TLS_CA) to "
                    "connect with TLS, or --insecure to send plaintext anyway"
                )
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.tls_ca, "--tls-ca"),
            private_key=_read(self.tls_key, "--tls-key") if self.tls_key else None,
            certificate_chain=_read(self.tls_cert, "--tls-cert") if self.tls_cert else None,
        )


@dataclasses.dataclass(frozen=True)
class ServerTls:
    """The coordinator's certificate; with client_ca, a listener that requires every peer to
    present a certificate chaining to it (mutual TLS: agents, and clients with certificates).

    gRPC's Python API can require a client certificate or not ask for one, but not ask without
    requiring; so a TLS listener is either server-authenticated (its callers bring tokens) or
    mutual (docs/decisions.md)."""

    cert: str
    key: str
    client_ca: str = ""

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(_read(self.key, "--tls-key"), _read(self.cert, "--tls-cert"))],
            root_certificates=_read(self.client_ca, "--tls-client-ca") if self.client_ca else None,
            require_client_auth=bool(self.client_ca),
        )


def _channel_options(dedicated: bool) -> list[tuple[str, Any]]:
    opts: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        *_KEEPALIVE,
    ]
    if dedicated:
        # Its own TCP connection: the data path must not share HTTP/2 flow control with the
        # control path.
        opts.append(("grpc.use_local_subchannel_pool", 1))
    return opts


def aio_channel(address: str, *, credentials: ClientCredentials = ClientCredentials(), dedicated: bool = False) -> grpc.aio.Channel:
    """A channel to `address`: TLS when the credentials name a CA, else plaintext to a local
    address only (ValueError otherwise). The token travels per call (`credentials.metadata()`)."""
    tls = credentials.channel_credentials(address)
    if tls is None:
        return grpc.aio.insecure_channel(address, options=_channel_options(dedicated))
    options = _channel_options(dedicated)
    if credentials.server_name:
        options.append(("grpc.ssl_target_name_override", credentials.server_name))
    return grpc.aio.secure_channel(address, tls, options=options)


def aio_server(interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> grpc.aio.Server:
    return grpc.aio.server(options=_SERVER_OPTIONS, interceptors=list(interceptors))


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


def add_listen(server: grpc.aio.Server, address: str, *, tls: ServerTls | None = None, insecure: bool = False) -> int:
    """Binds an address, with TLS when given; returns the port (0 for unix sockets). Plaintext
    beyond loopback is refused unless `insecure` (PlaintextRefused names --tls-cert). Raises
    OSError when the address cannot be bound."""
    if tls is None and not is_local(address) and not insecure:
        raise PlaintextRefused(
            f"--listen {address}: not a local address, and there is no --tls-cert; give "
            "--tls-cert and --tls-key (and --tls-client-ca for agents), or --insecure"
        )
    port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    if port == 0 and not address.startswith("unix:"):
        raise OSError(f"cannot listen on {address}")
    return int(port)
