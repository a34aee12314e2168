"""The gateway's settings and state: one connection to the coordinator for requests and one for
event streams (each call carries its caller's own bearer token), the alert rules, the counters."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re

from prometheus_client import Counter, Histogram
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from fleetcap.clients import sdk
from fleetcap.clients.rest import arm
from fleetcap.clients.rest.alerts import AlertRules
from fleetcap.core import transport
from fleetcap.core.metrics import FAST_BUCKETS, new_registry

log = logging.getLogger(__name__)


# RFC 6750's b64token: what a bearer token may be made of (anything else is refused before it
# reaches a log line or the coordinator).
_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]{1,4096}=*$")


@dataclasses.dataclass(frozen=True)
class GatewaySettings:
    coordinator: str = transport.DEFAULT_ADDRESS
    listen: str = "127.0.0.1:8080"
    tls_cert: str = ""
    tls_key: str = ""
    public_hosts: tuple[str, ...] = ()  # Host names served beyond the listen address's own
    webhook_token: str = ""
    alert_rules: str = ""
    # The gateway's own credential: TLS to the coordinator, and the identity that runs alert rules.
    credentials: transport.ClientCredentials = dataclasses.field(default_factory=transport.ClientCredentials)
    max_requests: int = 256  # requests in progress at once; the next ones get 503
    # One caller (one bearer token) holds at most this many requests in progress, so that no token
    # can take every slot; the next one gets 429.
    max_requests_per_caller: int = 64
    # Event streams (/events) live as long as their capture. They hold no request slot and ride a
    # connection to the coordinator of their own (the requests' one allows 128 streams): at most
    # max_streams at once, max_streams_per_caller of them per token; beyond, 429.
    max_streams: int = 64
    max_streams_per_caller: int = 4
    request_timeout_s: float = 60.0  # from the request to the first byte of the response
    send_timeout_s: float = 60.0  # one write to a client that has stopped reading
    idle_timeout_s: float = 10.0  # a connection that sends no (complete) request


def listen_host_port(listen: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or ':port'. Raises ValueError naming --listen."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: the system chooses (logged)
        raise ValueError(f"--listen: '{listen}' is not host:port (IPv6 as [addr]:port)")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def allowed_hosts(settings: GatewaySettings) -> list[str]:
    """The Host header values served: the listen address, loopback names when it is local,
    and --public-host. Anything else (DNS rebinding) gets 400."""
    host, _ = listen_host_port(settings.listen)
    hosts = {host, *settings.public_hosts}
    if transport.is_local(settings.listen) or host in ("0.0.0.0", "::"):
        hosts |= {"localhost", "127.0.0.1", "::1"}
    return sorted({h.lower() for h in hosts} | {f"[{h}]" for h in hosts if ":" in h})


class Gateway:
    """The gateway's state: one connection to the coordinator, the alert rules, the counters."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.rules = AlertRules.load(settings.alert_rules) if settings.alert_rules else AlertRules([])
        self.metrics = new_registry("gateway")
        self.requests = Counter("fleetcap_gateway_requests", "HTTP requests by route and status", ("route", "code"), registry=self.metrics)
        self.latency = Histogram(
            "fleetcap_gateway_request_duration_seconds",
            "Time to answer an HTTP request, by route, up to the start of the response (a download's or event stream's first byte)",
            ("route",),
            buckets=FAST_BUCKETS,
            registry=self.metrics,
        )
        self.alert_lock = asyncio.Lock()  # one alert flow at a time: delete, quota check, create
        self._client: sdk.AsyncClient | None = None
        self._stream_client: sdk.AsyncClient | None = None
        self._alert_client: sdk.Client | None = None

    async def open(self) -> None:
        c = self.settings.credentials
        # The shared connections carry no token of their own: each call carries its caller's.
        # Requests and event streams use two, so that streams can never take the requests' share.
        self._client, self._stream_client = (
            sdk.AsyncClient(
                self.settings.coordinator,
                tls_ca=c.tls_ca,
                tls_cert=c.tls_cert,
                tls_key=c.tls_key,
                token="",
                insecure=c.insecure,
                dedicated=True,
            )
            for _ in range(2)
        )

    async def close(self) -> None:
        for client in (self._client, self._stream_client):
            if client is not None:
                await client.close()
        if self._alert_client is not None:
            await run_in_threadpool(self._alert_client.close)

    def caller(self, request: Request, *, stream: bool = False) -> sdk.AsyncClient:
        """A client that acts as the request's caller (on the event streams' connection when
        `stream`). Raises HttpError 401 without a bearer token."""
        token = bearer_token(request)
        if not token:
            raise arm.HttpError(
                401,
                "AuthenticationFailed",
                "Authorization: Bearer <token> is required (a fleetcap token, or an OIDC token the coordinator accepts)",
                {"WWW-Authenticate": 'Bearer realm="fleetcap"'},
            )
        client = self._stream_client if stream else self._client
        assert client is not None
        return client.as_caller(token)

    def alert_client(self) -> sdk.Client:
        """The gateway's own client, for alert rules (a blocking client, used off the event loop)."""
        if self._alert_client is None:
            c = self.settings.credentials
            self._alert_client = sdk.Client(
                self.settings.coordinator, tls_ca=c.tls_ca, tls_cert=c.tls_cert, tls_key=c.tls_key, token=c.token, insecure=c.insecure
            )
        return self._alert_client


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and _TOKEN.match(token) else ""


def need_method(request: Request, *allowed: str) -> None:
    if request.method not in allowed:
        raise arm.HttpError(405, "MethodNotAllowed", f"{request.method} is not allowed here; use {' or '.join(allowed)}")
