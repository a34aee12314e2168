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

import contextlib
import hmac
import json
import logging
import os
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fleetcap.clients import sdk
from fleetcap.clients.rest import arm, openapi
from fleetcap.clients.rest.alerts import handle_alertmanager, handle_azure_monitor
from fleetcap.clients.rest.downloads import events_endpoint, file_endpoint, merged_endpoint
from fleetcap.clients.rest.gateway import Gateway, GatewaySettings, allowed_hosts, bearer_token, need_method
from fleetcap.clients.rest.hardening import Hardening, error_response
from fleetcap.core.metrics import exposition
from fleetcap.core.vocabulary import Status

log = logging.getLogger(__name__)

PORTAL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "portal")
MAX_BODY = 1 << 20
# Azure's packet-capture body nests four levels, an alert payload about six: far more is an attack on
# the parser or on whatever walks the result.
MAX_BODY_DEPTH = 32
_ARM = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Network/"
    r"networkWatchers/([^/]+)/packetCaptures(?:/([^/]+)(?:/(stop|trigger|queryStatus))?)?/?$",
    re.IGNORECASE,
)


# -- middleware ---------------------------------------------------------------------------------------


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
                return error_response(e)
            except sdk.FleetcapError as e:
                err = arm.from_sdk_error(e)
                status = err.status
                return error_response(err)
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
        return error_response(arm.HttpError(exc.status_code, code, message))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)  # never to the client
        return error_response(arm.HttpError(500, "InternalServerError", "internal error; see the gateway log"))

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(Hardening, settings=settings),
            Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings), www_redirect=False),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


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
        need_method(request, "GET")
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
        need_method(request, "GET")
        return await _list_page(c, request)
    if action == "stop":
        need_method(request, "POST")
        await _no_body(request)
        await c.stop(name=name)
        return _json(200, None)
    if action == "trigger":
        need_method(request, "POST")
        after, note = await _trigger_body(request)
        return _json(200, arm.status(await c.trigger(name=name, after_in_seconds=after, note=note)))
    if action is not None:  # queryStatus
        need_method(request, "POST")
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
    need_method(request, "GET", "HEAD")
    example = ""
    if bearer_token(request):  # a caller who may list agents gets an example that works here
        with contextlib.suppress(sdk.FleetcapError):
            ids = [a.id for a in await gateway.caller(request).list_agents()]
            vms = [i for i in ids if "/virtualMachineScaleSets/" not in i]
            example = vms[0] if vms else (ids[0].rsplit("/virtualMachines/", 1)[0] if ids else "")
    return _json(200, openapi.document(example))


async def metrics_endpoint(gateway: Gateway, request: Request) -> Response:
    need_method(request, "GET", "HEAD")
    await gateway.caller(request).list_storage_accounts()  # the caller's token must hold a role (reader)
    body, content_type = exposition(gateway.metrics, request.headers.get("accept", ""))
    return Response(body, 200, media_type=content_type)


async def not_found(gateway: Gateway, request: Request) -> Response:
    raise arm.HttpError(404, "NotFound", f"no such path: {request.url.path}")


# -- fleetcap extensions ----------------------------------------------------------------------------------


async def agents_endpoint(gateway: Gateway, request: Request) -> Response:
    need_method(request, "GET")
    return _json(200, {"value": [sdk.to_dict(a) for a in await gateway.caller(request).list_agents()]})


async def accounts_endpoint(gateway: Gateway, request: Request) -> Response:
    need_method(request, "GET")
    return _json(200, {"value": [sdk.to_dict(a) for a in await gateway.caller(request).list_storage_accounts()]})


# -- webhooks ----------------------------------------------------------------------------------------------


async def webhook_endpoint(gateway: Gateway, request: Request) -> Response:
    """Alert webhooks. The sender presents the webhook token as `Authorization: Bearer` (never in
    the URL, where logs and proxies keep it); it is compared in constant time. The rules then act
    with the gateway's own credential."""
    need_method(request, "POST")
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
