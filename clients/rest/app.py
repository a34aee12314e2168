"""`fleetcap gateway` as an ASGI application (Starlette): Azure's packetCaptures REST API, the
web portal, downloads and the alert webhooks, reaching the coordinator through the SDK only.

    /subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Network/networkWatchers/{w}/packetCaptures[/{name}[/stop|/trigger|/queryStatus]]
    /subscriptions/{s}/providers/Microsoft.Network/locations/{l}/operations[Results]/{id}   ARM's long-running operations
    /openapi.json               the OpenAPI document of the above
    /                           the portal (static files in portal/)
    /fleetcap/v1/agents         what can be targeted (the portal's target pickers)
    /fleetcap/v1/storage-accounts   what captures can store to (the portal's account picker)
    /fleetcap/v1/captures/{name}/files?instance=ID[&file=PATH]   one stored pcap (Range honoured)
    /fleetcap/v1/captures/{name}/merged                          every instance in one pcapng, streamed
    /fleetcap/v1/captures/{name}/events                          the status stream (server-sent events)
    /webhooks/azure-monitor, /webhooks/alertmanager             alert-triggered captures (alerts.py)
    /metrics                    the gateway's own counters (requests by route and status)

Who may do what is the coordinator's decision: every call carries the caller's own bearer token,
which the gateway passes on unchanged; the gateway holds no role table. The webhooks are the
exception: their senders prove themselves with the webhook token, and the rules' actions run
with the gateway's own credential (see docs/rest-api.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetcap.clients import pcapng, sdk
from fleetcap.clients.rest import arm, openapi
from fleetcap.clients.rest.alerts import AlertRules, handle_alertmanager, handle_azure_monitor
from fleetcap.core import transport
from fleetcap.core.metrics import FAST_BUCKETS, exposition, new_registry
from fleetcap.core.naming import instance_name
from fleetcap.core.vocabulary import Status

log = logging.getLogger(__name__)

PORTAL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "portal")
MAX_BODY = 1 << 20
# Azure's packet-capture body nests four levels, an alert payload about six: far more is an attack on
# the parser or on whatever walks the result.
MAX_BODY_DEPTH = 32
# RFC 6750's b64token: what a bearer token may be made of (anything else is refused before it
# reaches a log line or the coordinator).
_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]{1,4096}=*$")
_ARM = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Network/"
    r"networkWatchers/([^/]+)/packetCaptures(?:/([^/]+)(?:/(stop|trigger|queryStatus))?)?/?$",
    re.IGNORECASE,
)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
KEEPALIVE_S = 15.0  # a comment on the event stream when nothing changed, so proxies keep it open
EVENT_INTERVAL_S = 1.0  # at most one status event a second: a 1,000-instance status is ~300 KB of JSON


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
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
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


# -- middleware ---------------------------------------------------------------------------------------


class Hardening:
    """Security headers on every response, bounded concurrency, and the request and send
    timeouts. A plain ASGI middleware, so that it covers streamed responses too."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings):
        self.app = app
        self.settings = settings
        self.tls = bool(settings.tls_cert)
        self._slots = asyncio.Semaphore(settings.max_requests)
        self._streams = 0
        self._held: collections.Counter[tuple[str, str]] = collections.Counter()  # (kind, caller) -> in progress

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                deadline.reschedule(None)  # the response has begun: from now on only writes are timed
                message = self._secured(message)
            async with asyncio.timeout(self.settings.send_timeout_s):
                await send(message)

        kind, caller = _kind_and_caller(scope)
        refusal = self._refusal(kind, caller)
        if refusal is not None:
            await _error_response(refusal)(scope, receive, self._untimed(send))
            return
        self._held[kind, caller] += 1
        if kind == "stream":
            self._streams += 1
        try:
            async with contextlib.AsyncExitStack() as stack:
                if kind == "request":
                    await stack.enter_async_context(self._slots)
                try:
                    async with asyncio.timeout(self.settings.request_timeout_s) as deadline:
                        await self.app(scope, receive, guarded_send)
                except TimeoutError:
                    if started:
                        log.warning("%s %s: the client stopped reading; connection closed", scope["method"], scope["path"])
                        return
                    await _error_response(arm.HttpError(504, "GatewayTimeout", "the request took too long"))(
                        scope, receive, self._untimed(send)
                    )
        finally:
            self._held[kind, caller] -= 1
            if not self._held[kind, caller]:
                del self._held[kind, caller]
            if kind == "stream":
                self._streams -= 1

    def _refusal(self, kind: str, caller: str) -> arm.HttpError | None:
        """Why a request may not start now (the gateway's share, then the caller's), or None."""
        s = self.settings
        if kind == "stream":
            if self._streams >= s.max_streams:
                return arm.HttpError(
                    503,
                    "ServiceUnavailable",
                    f"the gateway already serves {s.max_streams} event streams; retry shortly",
                    {"Retry-After": "5"},
                )
            if caller and self._held[kind, caller] >= s.max_streams_per_caller:
                return arm.HttpError(
                    429,
                    "TooManyRequests",
                    f"this token already has {s.max_streams_per_caller} event streams open; close one first",
                    {"Retry-After": "5"},
                )
            return None
        if self._slots.locked():
            return arm.HttpError(503, "ServiceUnavailable", "the gateway is busy; retry shortly", {"Retry-After": "1"})
        if caller and self._held[kind, caller] >= s.max_requests_per_caller:
            return arm.HttpError(
                429,
                "TooManyRequests",
                f"this token already has {s.max_requests_per_caller} requests in progress; retry shortly",
                {"Retry-After": "1"},
            )
        return None

    def _secured(self, start: Message) -> Message:
        """A response start with the security headers every response carries."""
        headers = [
            *start.get("headers", []),
            (b"content-security-policy", CSP.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store"),
        ]
        if self.tls:
            headers.append((b"strict-transport-security", b"max-age=31536000"))
        return {**start, "headers": headers}

    def _untimed(self, send: Send) -> Send:
        """`send` with the security headers and no timeout: the gateway's own 503 and 504."""

        async def secured(message: Message) -> None:
            await send(self._secured(message) if message["type"] == "http.response.start" else message)

        return secured


def _kind_and_caller(scope: Scope) -> tuple[str, str]:
    """("stream" for an event stream, else "request"; a digest of the Authorization header, ""
    without one). The digest only groups a caller's requests: the coordinator judges the token."""
    kind = "stream" if scope["path"].endswith("/events") else "request"
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            return kind, hashlib.sha256(value).hexdigest()
    return kind, ""


def _error_response(e: arm.HttpError) -> JSONResponse:
    return JSONResponse(e.body(), e.status, headers=e.headers)


# -- the application ----------------------------------------------------------------------------------


def create_app(settings: GatewaySettings) -> Starlette:
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.open()
        try:
            yield
        finally:
            await gateway.close()

    def route(name: str, handler: Callable[[Gateway, Request], Awaitable[Response]]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            status, started = 500, time.perf_counter()
            try:
                response = await handler(gateway, request)
                status = response.status_code
                return response
            except arm.HttpError as e:
                status = e.status
                return _error_response(e)
            except sdk.FleetcapError as e:
                err = arm.from_sdk_error(e)
                status = err.status
                return _error_response(err)
            finally:
                gateway.requests.labels(name, str(status)).inc()
                gateway.latency.labels(name).observe(time.perf_counter() - started)

        return endpoint

    methods = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE"]
    routes = [
        Route("/subscriptions/{rest:path}", route("arm", arm_endpoint), methods=methods),
        Route("/openapi.json", route("openapi", openapi_endpoint), methods=methods),
        Route("/metrics", route("metrics", metrics_endpoint), methods=methods),
        Route("/fleetcap/v1/agents", route("fleetcap", agents_endpoint), methods=methods),
        Route("/fleetcap/v1/storage-accounts", route("fleetcap", accounts_endpoint), methods=methods),
        Route("/fleetcap/v1/captures/{name}/files", route("fleetcap", file_endpoint), methods=methods),
        Route("/fleetcap/v1/captures/{name}/merged", route("fleetcap", merged_endpoint), methods=methods),
        Route("/fleetcap/v1/captures/{name}/events", route("fleetcap", events_endpoint), methods=methods),
        Route("/fleetcap/{rest:path}", route("fleetcap", not_found), methods=methods),
        Route("/webhooks/{kind}", route("webhook", webhook_endpoint), methods=methods),
        Mount("/", StaticFiles(directory=PORTAL_DIR, html=True)),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "InvalidRequestFormat")
        message = f"no such path: {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return _error_response(arm.HttpError(exc.status_code, code, message))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)  # never to the client
        return _error_response(arm.HttpError(500, "InternalServerError", "internal error; see the gateway log"))

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(Hardening, settings=settings),
            Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings), www_redirect=False),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


def _need(request: Request, *allowed: str) -> None:
    if request.method not in allowed:
        raise arm.HttpError(405, "MethodNotAllowed", f"{request.method} is not allowed here; use {' or '.join(allowed)}")


async def _json_body(request: Request) -> Any:
    """The request's JSON body. PUT and POST bodies must be application/json: a browser sends
    a cross-site text/plain POST without asking first, and that must never act."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise arm.HttpError(415, "UnsupportedMediaType", "Content-Type: the body must be application/json")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise arm.HttpError(413, "InvalidRequestFormat", f"the body is over {MAX_BODY} bytes")
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise arm.HttpError(413, "InvalidRequestFormat", f"the body is over {MAX_BODY} bytes")
    except ClientDisconnect:  # nobody is left to answer: an expected event, not a failure
        raise arm.HttpError(400, "InvalidRequestFormat", "the client closed the connection before its body came") from None
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise arm.HttpError(400, "InvalidRequestFormat", f"the body is not valid JSON ({e})") from None
    except RecursionError:
        body = None  # nested deeper than the parser goes: refused below as too deep
    if body is None and raw.strip() != b"null" or _depth(body) > MAX_BODY_DEPTH:
        raise arm.HttpError(400, "InvalidRequestFormat", f"the body nests objects and arrays deeper than {MAX_BODY_DEPTH} levels")
    return body


def _depth(value: Any) -> int:
    """How deep objects and arrays nest in a parsed body (iteratively: a deep one cannot
    exhaust the stack here)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_BODY_DEPTH:
                stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


async def _no_body(request: Request) -> None:
    """An action without a body (stop, queryStatus): any body must still be JSON, never a form."""
    if request.headers.get("content-length", "0") not in ("", "0") or request.headers.get("transfer-encoding"):
        await _json_body(request)


async def _trigger_body(request: Request) -> tuple[int, str]:
    """A trigger's optional body: {"afterInSeconds": int, "note": str}; the coordinator checks the ranges."""
    if request.headers.get("content-length", "0") in ("", "0") and not request.headers.get("transfer-encoding"):
        return 0, ""
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise arm.HttpError(400, "InvalidRequestFormat", "the request body must be a JSON object")
    unknown = sorted(set(body) - {"afterInSeconds", "note"})
    if unknown:
        raise arm.HttpError(400, "InvalidRequestFormat", f"{unknown[0]}: unknown member of the request body")
    after, note = body.get("afterInSeconds", 0), body.get("note", "")
    if not isinstance(after, int) or isinstance(after, bool):
        raise arm.HttpError(400, "InvalidParameter", "afterInSeconds: must be a whole number of seconds")
    if not isinstance(note, str):
        raise arm.HttpError(400, "InvalidParameter", "note: must be a string")
    return after, note


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if body is None:
        return Response(status_code=status, headers=headers)
    return JSONResponse(body, status, headers=headers)


# -- ARM ------------------------------------------------------------------------------------------------

LIST_PAGE_SIZE = 100
"""Captures per page of the ARM list when the caller gives no $top; its nextLink has the rest."""


async def _list_page(c: sdk.AsyncClient, request: Request) -> Response:
    """A page of the ARM list, as ARM pages: `value`, and `nextLink` (the same URL with a
    `$skipToken`) while more follow. Azure's SDKs follow nextLink by themselves."""
    q = request.query_params
    top_text = q.get("$top", str(LIST_PAGE_SIZE))
    if not top_text.isdigit() or not 1 <= int(top_text) <= sdk.LIST_PAGE_SIZE:
        raise arm.HttpError(400, "InvalidParameter", f"$top: must be a whole number from 1 to {sdk.LIST_PAGE_SIZE}")
    try:
        page, token = await c.list_page(page_size=int(top_text), page_token=q.get("$skipToken", ""))
    except sdk.InvalidCapture:
        raise arm.HttpError(
            400, "InvalidParameter", "$skipToken: is not a token this service issued (follow nextLink as it came)"
        ) from None
    body: dict[str, Any] = {"value": [arm.resource(x) for x in page]}
    if token:
        kept = [(k, v) for k, v in q.multi_items() if k != "$skipToken"]
        body["nextLink"] = str(request.url.replace(query=urllib.parse.urlencode(kept + [("$skipToken", token)])))
    return _json(200, body)


async def arm_endpoint(gateway: Gateway, request: Request) -> Response:
    path = request.url.path
    m = _ARM.match(path)
    if m is None:
        found = arm.OPERATION_PATH.match(path)
        if found is None:
            raise arm.HttpError(404, "NotFound", f"no such path: {path}")
        _need(request, "GET")
        return await operation(
            gateway.caller(request),
            arm.Operation.parse(found.group(4)),
            found.group(3).lower() == "operationresults",
            request,
            found.group(1),
        )
    name = urllib.parse.unquote(m.group(4)) if m.group(4) else None
    action = m.group(5) and m.group(5).lower()
    c = gateway.caller(request)
    base = str(request.base_url).rstrip("/")
    if name is None:
        _need(request, "GET")
        return await _list_page(c, request)
    if action == "stop":
        _need(request, "POST")
        await _no_body(request)
        await c.stop(name=name)
        return _json(200, None)
    if action == "trigger":
        _need(request, "POST")
        after, note = await _trigger_body(request)
        return _json(200, arm.status(await c.trigger(name=name, after_in_seconds=after, note=note)))
    if action is not None:  # queryStatus
        _need(request, "POST")
        await _no_body(request)
        return _json(200, arm.status(await c.get_status(name=name)))
    if request.method == "PUT":
        props = arm.parameters(await _json_body(request))
        created = await c.create_from(name=name, properties=props)
        op = arm.Operation("create", name)
        return _json(201, arm.resource(created), {"Azure-AsyncOperation": op.url(base, m.group(1), False), "Retry-After": "1"})
    if request.method == "GET":
        return _json(200, arm.resource(await c.get(name=name)))
    if request.method == "DELETE":
        try:
            await c.delete(name=name)
        except sdk.CaptureNotFound:
            return _json(204, None)
        op = arm.Operation("delete", name)
        return _json(202, None, {"Location": op.url(base, m.group(1), True), "Retry-After": "1"})
    raise arm.HttpError(405, "MethodNotAllowed", f"{request.method} is not allowed on a packet capture")


async def operation(c: sdk.AsyncClient, op: arm.Operation, results: bool, request: Request, subscription: str) -> Response:
    """A long-running operation's state, as ARM serves it: for a create, its status resource
    (InProgress until the capture has left NotStarted); for a delete, its result (204 once the
    capture is gone)."""
    if op.kind == "delete":
        try:
            await c.get(name=op.name)
        except sdk.CaptureNotFound:
            return _json(204, None)
        base = str(request.base_url).rstrip("/")
        return _json(202, None, {"Location": op.url(base, subscription, True), "Retry-After": "1"})
    status = await c.get_status(name=op.name)
    state = status.packet_capture_status
    body: dict[str, Any] = {"name": op.id(), "status": "InProgress" if state == Status.NOT_STARTED else "Succeeded"}
    if state == Status.ERROR:
        body["status"] = "Failed"
        body["error"] = {
            "code": ",".join(status.packet_capture_error) or "PacketCaptureFailed",
            "message": f"packet capture '{op.name}' failed on every instance",
        }
    if results and body["status"] == "Succeeded":
        return _json(200, arm.resource(await c.get(name=op.name)))
    headers = {"Retry-After": "1"} if body["status"] == "InProgress" else None
    return _json(200, body, headers)


async def openapi_endpoint(gateway: Gateway, request: Request) -> Response:
    _need(request, "GET", "HEAD")
    example = ""
    if bearer_token(request):  # a caller who may list agents gets an example that works here
        with contextlib.suppress(sdk.FleetcapError):
            ids = [a.id for a in await gateway.caller(request).list_agents()]
            vms = [i for i in ids if "/virtualMachineScaleSets/" not in i]
            example = vms[0] if vms else (ids[0].rsplit("/virtualMachines/", 1)[0] if ids else "")
    return _json(200, openapi.document(example))


async def metrics_endpoint(gateway: Gateway, request: Request) -> Response:
    _need(request, "GET", "HEAD")
    await gateway.caller(request).list_storage_accounts()  # the caller's token must hold a role (reader)
    body, content_type = exposition(gateway.metrics, request.headers.get("accept", ""))
    return Response(body, 200, media_type=content_type)


async def not_found(gateway: Gateway, request: Request) -> Response:
    raise arm.HttpError(404, "NotFound", f"no such path: {request.url.path}")


# -- fleetcap extensions ----------------------------------------------------------------------------------


async def agents_endpoint(gateway: Gateway, request: Request) -> Response:
    _need(request, "GET")
    return _json(200, {"value": [sdk.to_dict(a) for a in await gateway.caller(request).list_agents()]})


async def accounts_endpoint(gateway: Gateway, request: Request) -> Response:
    _need(request, "GET")
    return _json(200, {"value": [sdk.to_dict(a) for a in await gateway.caller(request).list_storage_accounts()]})


def attachment(*parts: str) -> str:
    """A Content-Disposition whose file name holds only [A-Za-z0-9._-]: no quote, no path, no
    header injection, whatever the capture, instance or file is called."""
    name = "_".join(_UNSAFE_FILENAME.sub("-", p).strip(".-") for p in parts if p) or "capture"
    return f'attachment; filename="{name[:200]}"'


async def file_endpoint(gateway: Gateway, request: Request) -> Response:
    """One stored file. Honours a single `Range: bytes=a-b` (206, or 416 when it lies beyond the
    file), with the file's SHA-256 as its ETag and If-Range, so an interrupted download resumes."""
    _need(request, "GET", "HEAD")
    name = request.path_params["name"]
    instance = request.query_params.get("instance", "")
    if not instance:
        raise arm.HttpError(400, "InvalidParameter", "instance: required, an instance id or VM name")
    c = gateway.caller(request)
    wanted = request.query_params.get("file", "")
    status = await c.get_status(name=name)
    found = [
        (inst, f)
        for inst in status.instances
        for f in inst.files
        if instance in (inst.instance_id, inst.id, instance_name(inst.id))
        and sdk.downloadable(inst, f)
        and (not wanted or f.file_path == wanted)
    ]
    if not found:
        raise arm.HttpError(
            404, "ResourceNotFound", f"packet capture '{name}' has no stored file{' ' + wanted if wanted else ''} for instance '{instance}'"
        )
    inst, f = found[0]
    size = f.size_bytes
    etag = f'"{f.stored_sha256 or f.sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Disposition": attachment(name, instance_name(inst.id), os.path.basename(f.file_path)),
    }
    start, end, code = 0, size - 1, 200
    spec = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if spec and (if_range is None or if_range == etag):
        m = _RANGE.match(spec.strip())
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # the last N bytes
                start = max(0, size - int(m.group(2)))
            if start >= size or start > end:
                raise arm.HttpError(
                    416, "InvalidRange", f"Range: {spec} lies beyond the file's {size} bytes", {"Content-Range": f"bytes */{size}"}
                )
            code = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=code, headers=headers, media_type="application/vnd.tcpdump.pcap")
    chunks = c.read_file(name=name, instance_id=inst.instance_id, file_path=f.file_path, offset=start)
    first = await anext(chunks, b"")  # a NOT_FOUND surfaces here, before any header is sent
    return StreamingResponse(_limit(first, chunks, end - start + 1, name), code, headers=headers, media_type="application/vnd.tcpdump.pcap")


async def _limit(first: bytes, rest: AsyncIterator[bytes], length: int, what: str) -> AsyncIterator[bytes]:
    """Exactly `length` bytes of first + rest. A stream that ends early ends the response early,
    which the client sees as a short body (Content-Length says how much was promised)."""
    left = length
    try:
        data = first
        while left > 0:
            if data:
                piece = data[:left]
                left -= len(piece)
                yield piece
            if left > 0:
                data = await anext(rest)
    except StopAsyncIteration:
        log.warning("download of %s ended %d bytes short", what, left)
    except sdk.FleetcapError as e:
        log.warning("download of %s stopped: %s", what, e)
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def merged_endpoint(gateway: Gateway, request: Request) -> Response:
    """Every instance's stored files in one pcapng, merged while it streams: nothing is staged
    on disk, and memory is one chunk and one record per instance."""
    _need(request, "GET")
    name = request.path_params["name"]
    c = gateway.caller(request)
    status = await c.get_status(name=name)
    sources, offline = [], []
    connected = {a.id.lower() for a in await c.list_agents()}
    for inst in status.instances:
        files = [f.file_path for f in inst.files if sdk.downloadable(inst, f)]
        if files and any(not f.upload_complete for f in inst.files) and inst.id.lower() not in connected:
            offline.append(inst.instance_id)  # only the instance holds them, and its agent is away
            continue
        if files:
            sources.append(
                pcapng.StreamSource(
                    name=instance_name(inst.id),
                    description=inst.id,
                    files=[_opener(c, name, inst.instance_id, path) for path in files],
                    stats=sdk.interface_stats(inst),
                    clock=sdk.clock_correction(inst),
                )
            )
    if not sources:
        raise arm.HttpError(
            404,
            "ResourceNotFound",
            f"packet capture '{name}' has no files to merge yet" + (f" (instances offline: {', '.join(offline)})" if offline else ""),
        )
    stream = pcapng.merge_stream(sources)
    first = await anext(stream)  # every instance's first read has begun: errors surface before the headers
    headers = {"Content-Disposition": attachment(name + ".pcapng")}
    if offline:  # merged without them; the header names them
        headers["Fleetcap-Missing-Instances"] = ",".join(offline)
    return StreamingResponse(_chain(first, stream, name), 200, media_type="application/x-pcapng", headers=headers)


def _opener(c: sdk.AsyncClient, name: str, instance_id: str, path: str) -> Callable[[], AsyncIterator[bytes]]:
    return lambda: c.read_file(name=name, instance_id=instance_id, file_path=path)


async def _chain(first: bytes, rest: AsyncIterator[bytes], what: str) -> AsyncIterator[bytes]:
    yield first
    try:
        async for data in rest:
            yield data
    except sdk.FleetcapError as e:  # the headers are out: end the response without its last chunk
        log.warning("merged download of %s stopped: %s", what, e)


async def events_endpoint(gateway: Gateway, request: Request) -> Response:
    """The capture's status as server-sent events: one `data:` line of JSON at once and on every
    change, until the capture has finished; a comment every KEEPALIVE_S seconds in between. The
    portal reads it with fetch(), so the credential stays in a header."""
    _need(request, "GET")
    name = request.path_params["name"]
    # The first status is a request like any other; only the watch rides the streams' connection.
    first = await gateway.caller(request).get_status(name=name)  # NOT_FOUND, PERMISSION_DENIED before the headers
    c = gateway.caller(request, stream=True)
    return StreamingResponse(_events(c, name, first), 200, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


async def _events(c: sdk.AsyncClient, name: str, first: Any) -> AsyncIterator[bytes]:
    """The coordinator's watch is read continuously by a task of its own, which keeps only the
    newest status; the stream sends that at most every EVENT_INTERVAL_S. So a slow reader never
    holds the watch back, and a status is never older than the interval (each carries its
    instances' countersTime, from which the portal takes rates)."""
    loop = asyncio.get_running_loop()
    yield b"data: " + json.dumps(arm.status(first)).encode() + b"\n\n"
    newest: list[Any] = []  # the newest status not yet sent (at most one)
    ended: list[bytes] = []  # the stream's last event, once the watch has ended
    changed = asyncio.Event()

    async def read() -> None:
        try:
            async for status in c.watch(name=name):
                newest[:] = [status]
                changed.set()
            ended.append(b"event: end\ndata: {}\n\n")
        except sdk.FleetcapError as e:
            ended.append(b"event: error\ndata: " + json.dumps(arm.from_sdk_error(e).body()).encode() + b"\n\n")
        changed.set()

    reader = asyncio.ensure_future(read())
    sent = loop.time()
    try:
        while True:
            try:
                await asyncio.wait_for(changed.wait(), timeout=KEEPALIVE_S)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            await asyncio.sleep(max(0.0, sent + EVENT_INTERVAL_S - loop.time()))
            changed.clear()
            if newest:
                status = newest.pop()
                yield b"data: " + json.dumps(arm.status(status)).encode() + b"\n\n"
                sent = loop.time()
            if ended and not newest:
                yield ended[0]
                return
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


# -- webhooks ----------------------------------------------------------------------------------------------


async def webhook_endpoint(gateway: Gateway, request: Request) -> Response:
    """Alert webhooks. The sender presents the webhook token as `Authorization: Bearer` (never in
    the URL, where logs and proxies keep it); it is compared in constant time. The rules then act
    with the gateway's own credential."""
    _need(request, "POST")
    handler = {"azure-monitor": handle_azure_monitor, "alertmanager": handle_alertmanager}.get(request.path_params["kind"].rstrip("/"))
    if handler is None:
        raise arm.HttpError(404, "NotFound", f"no such webhook: {request.url.path}")
    expected = gateway.settings.webhook_token
    if not expected:  # the rules act with the gateway's own credential: never for an anonymous caller
        raise arm.HttpError(
            404, "NotFound", "webhooks are off: start the gateway with --webhook-token (FLEETCAP_WEBHOOK_TOKEN) to serve them"
        )
    given = bearer_token(request)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise arm.HttpError(
            401,
            "Unauthorized",
            "the webhook token is required as Authorization: Bearer",
            {"WWW-Authenticate": 'Bearer realm="fleetcap-webhooks"'},
        )
    body = await _json_body(request)
    rules, client = gateway.rules, gateway.alert_client()
    async with gateway.alert_lock:
        results = await run_in_threadpool(handler, client, rules, body)
    return _json(200, {"results": [r.as_dict() for r in results]})
