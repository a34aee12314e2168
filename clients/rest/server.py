"""Serves the gateway (app.py) with uvicorn: HTTPS when given a certificate, IPv4 or IPv6,
idle connections closed, a graceful shutdown on SIGTERM and SIGINT. uvloop and httptools (the
gateway extra installs both) when present: they serve a download with half the CPU of asyncio
and h11 (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from fleetcap.clients.rest.app import create_app
from fleetcap.clients.rest.gateway import GatewaySettings, listen_host_port
from fleetcap.core import transport

log = logging.getLogger(__name__)
GRACEFUL_SHUTDOWN_S = 10
# A request's line and headers together: room for any browser's and an Entra ID token with many
# groups (about 8 KB), far below what lets one connection hold the parser (docs/security.md).
MAX_HEAD_BYTES = 64 * 1024
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 39\r\nconnection: close\r\n\r\nthe request's headers exceed 64 KiB\r\n\r\n"
)


class _IdleTimeout:
    """For uvicorn's HTTP protocols: also close a connection that has not sent a complete
    request within `idle_timeout_s` of opening or of its last response (uvicorn itself times
    out only an idle keep-alive, and a byte every few seconds would hold that open)."""

    idle_timeout_s = 10.0
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _request_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._request_deadline = self.loop.call_later(self.idle_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _waiting(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _expired(self) -> None:
        self._request_deadline = None
        if self._waiting() and not self.transport.is_closing():
            self.timeout_keep_alive_handler()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if not self._waiting():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]


class _HeadLimit:
    """For uvicorn's httptools protocol, which has no limit of its own (h11 has
    h11_max_incomplete_event_size): a connection whose request line and headers pass
    MAX_HEAD_BYTES gets 431 and is closed before the parser sees more. The parser joins a long
    header's pieces one by one, so without this one huge header stalls every other request."""

    transport: asyncio.Transport
    _reading_head = True
    _head_bytes = 0

    _refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:  # still sending after its 431: cut it off, so that no more is read
            self.transport.abort()
            return
        if self._reading_head:
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end
            if self._head_bytes > MAX_HEAD_BYTES:
                self._reading_head, self._refused = False, True
                log.warning("a request's headers passed %d bytes; connection closed", MAX_HEAD_BYTES)
                self.transport.write(_TOO_LARGE)
                self.transport.close()
                # TLS's close waits for the peer while discarding what it sends: a second at most.
                asyncio.get_running_loop().call_later(1.0, self.transport.abort)
                return
            if end >= 0:
                self._reading_head, self._head_bytes = False, 0
        if not self.transport.is_closing():
            super().data_received(data)  # type: ignore[misc]

    def on_message_complete(self) -> None:
        super().on_message_complete()  # type: ignore[misc]
        self._reading_head, self._head_bytes = True, 0


class H11IdleProtocol(_IdleTimeout, H11Protocol):  # type: ignore[misc]
    pass


def _protocol() -> type[asyncio.Protocol]:
    """httptools (C, faster) when it is installed, else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return H11IdleProtocol
    return type("HttpToolsIdleProtocol", (_HeadLimit, _IdleTimeout, HttpToolsProtocol), {})


def uvicorn_config(settings: GatewaySettings) -> uvicorn.Config:
    host, port = listen_host_port(settings.listen)
    protocol = type("GatewayProtocol", (_protocol(),), {"idle_timeout_s": settings.idle_timeout_s})
    tls: dict[str, Any] = {}
    if settings.tls_cert:
        tls = {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key, "ssl_version": ssl.PROTOCOL_TLS_SERVER}
    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        http=protocol,
        ws="none",
        lifespan="on",
        loop="auto",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        backlog=2048,
        server_header=False,
        date_header=True,
        proxy_headers=False,
        access_log=False,
        log_config=None,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        **tls,
    )  # (httptools: _HeadLimit)


def check(settings: GatewaySettings, *, insecure_listen: bool) -> None:
    """Refuses settings that would expose the gateway. Raises ValueError naming the flag."""
    host, _ = listen_host_port(settings.listen)
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    local = transport.is_local(settings.listen)
    if not local and not settings.tls_cert and not insecure_listen:
        raise ValueError(
            f"--listen: {settings.listen} is beyond loopback; serve HTTPS with --tls-cert and "
            "--tls-key, or pass --insecure-listen to serve plain HTTP there"
        )
    if not local and not settings.webhook_token:
        raise ValueError(f"--webhook-token: required when the gateway listens beyond loopback ({settings.listen})")


def serve(settings: GatewaySettings) -> None:
    config = uvicorn_config(settings)
    scheme = "https" if settings.tls_cert else "http"
    host, port = listen_host_port(settings.listen)
    # Bound here rather than by uvicorn, so that the line below names the port the OS gave a
    # --listen of port 0 (tests, and anyone who lets the system choose).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=config.backlog)
    shown = f"[{host}]" if ":" in host else host
    log.info("gateway on %s://%s:%d (coordinator %s)", scheme, shown, sock.getsockname()[1], settings.coordinator)
    uvicorn.Server(config).run(sockets=[sock])
