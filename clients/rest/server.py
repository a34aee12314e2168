"""`fleetcap gateway`: Azure's packetCaptures REST API, the web portal and alert webhooks, in one
HTTP process that reaches the coordinator through the SDK only.

    /subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Network/networkWatchers/{w}/packetCaptures[/{name}[/stop|/queryStatus]]
    /openapi.json               the OpenAPI document of the above
    /                           the portal (static files in portal/)
    /fleetcap/v1/agents         what can be targeted (the portal's target pickers)
    /fleetcap/v1/storage-accounts   what captures can store to (the portal's account picker)
    /fleetcap/v1/captures/{name}/files?instance=ID[&file=PATH]   one stored pcap
    /fleetcap/v1/captures/{name}/merged                          every instance in one pcapng
    /webhooks/azure-monitor, /webhooks/alertmanager             alert-triggered captures (alerts.py)
    /metrics                    the gateway's own counters (requests by route and status)

The subscription, resource group and watcher in an ARM path are accepted as given: a deployment
is one watcher, and capture names are unique in it. The ids in responses are the coordinator's.
"""
from __future__ import annotations

import http.server
import itertools
import json
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from fleetcap.clients import sdk
from fleetcap.clients.rest import arm, openapi
from fleetcap.clients.rest.alerts import AlertRules, handle_alertmanager, handle_azure_monitor
from fleetcap.core import transport
from fleetcap.core.metrics import Registry

log = logging.getLogger(__name__)

PORTAL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "portal")
MAX_BODY = 1 << 20
_ARM = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Network/"
                  r"networkWatchers/([^/]+)/packetCaptures(?:/([^/]+)(?:/(stop|queryStatus))?)?/?$", re.IGNORECASE)


class Gateway:
    def __init__(self, coordinator: str, *, rules: AlertRules | None = None, webhook_token: str = "",
                 credentials: transport.ClientCredentials | None = None):
        c = credentials or transport.ClientCredentials()
        self.client = sdk.Client(coordinator, tls_ca=c.tls_ca, tls_cert=c.tls_cert, tls_key=c.tls_key, token=c.token,
                                 insecure=c.insecure)
        self.rules = rules or AlertRules([])
        self.webhook_token = webhook_token
        self.alert_lock = threading.Lock()  # one alert flow at a time: delete, quota check, create
        self.metrics = Registry()
        self.requests = self.metrics.counter("fleetcap_gateway_requests_total", "HTTP requests by route and status",
                                             ("route", "code"))

    def example_target(self) -> str:
        """A connected VM (or else a scale set) for the OpenAPI example; "" when none is."""
        try:
            ids = [a.id for a in self.client.list_agents()]
        except sdk.FleetcapError:
            return ""
        vms = [i for i in ids if "/virtualMachineScaleSets/" not in i]
        if vms:
            return vms[0]
        return ids[0].rsplit("/virtualMachines/", 1)[0] if ids else ""

    # -- ARM -------------------------------------------------------------------------------------

    def arm(self, method: str, name: str | None, action: str | None, body: Callable[[], Any]) -> tuple[int, Any]:
        c = self.client
        try:
            if name is None:
                if method != "GET":
                    raise arm.HttpError(405, "MethodNotAllowed", f"{method} is not allowed on the collection")
                return 200, {"value": [arm.resource(x) for x in c.list()]}
            if action == "stop":
                _need(method, "POST")
                c.stop(name=name)
                return 200, None
            if action is not None:  # queryStatus
                _need(method, "POST")
                return 200, arm.status(c.get_status(name=name))
            if method == "PUT":
                props = arm.parameters(body())
                return 201, arm.resource(c.create_from(name=name, properties=props))
            if method == "GET":
                return 200, arm.resource(c.get(name=name))
            if method == "DELETE":
                try:
                    c.delete(name=name)
                except sdk.CaptureNotFound:
                    return 204, None
                return 202, None
            raise arm.HttpError(405, "MethodNotAllowed", f"{method} is not allowed on a packet capture")
        except sdk.FleetcapError as e:
            raise arm.from_sdk_error(e) from None


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "fleetcap-gateway"
    protocol_version = "HTTP/1.1"
    gateway: Gateway  # set on the subclass made by serve()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (an unknown method, a malformed request line) in Azure's
        shape instead of its HTML page; an unknown method is 405, not 501."""
        if code == 501:
            code, error = 405, "MethodNotAllowed"
        else:
            error = "InvalidRequestFormat" if 400 <= code < 500 else "InternalServerError"
        self.close_connection = True
        try:
            self._reply_json(code, {"error": {"code": error, "message": message or explain or "request refused"}})
        except (BrokenPipeError, ConnectionError):
            pass

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = urllib.parse.parse_qs(url.query)
        route = "other"
        try:
            m = _ARM.match(url.path)
            if m:
                route = "arm"
                name = urllib.parse.unquote(m.group(4)) if m.group(4) else None
                status, body = self.gateway.arm(method, name, m.group(5) and m.group(5).lower(), self._json_body)
                self._reply_json(status, body)
            elif path.startswith("/webhooks/"):
                route = "webhook"
                self._webhook(method, path, query)
            elif path.startswith("/fleetcap/v1/"):
                route = "fleetcap"
                self._extension(method, path, query)
            elif path == "/openapi.json":
                route = "openapi"
                _need(method, "GET")
                self._reply_json(200, openapi.document(self.gateway.example_target()))
            elif path == "/metrics":
                route = "metrics"
                _need(method, "GET")
                self._reply(200, self.gateway.metrics.render().encode(), "text/plain; version=0.0.4")
            else:
                route = "portal"
                _need(method, "GET")
                self._static(path)
        except arm.HttpError as e:
            self._reply_json(e.status, e.body())
        except BrokenPipeError:
            return
        except Exception:  # a bug: log it, never show a traceback to the client
            log.exception("%s %s", method, self.path)
            self._reply_json(500, {"error": {"code": "InternalServerError", "message": "internal error; see the gateway log"}})
        finally:
            self.gateway.requests.inc(route, str(getattr(self, "_status", 0)))

    # -- bodies and replies -----------------------------------------------------------------------

    def _json_body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise arm.HttpError(411 if length is None else 400, "InvalidRequestFormat",
                                "the request needs a Content-Length")
        if int(length) > MAX_BODY:
            raise arm.HttpError(413, "InvalidRequestFormat", f"the body is over {MAX_BODY} bytes")
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise arm.HttpError(400, "InvalidRequestFormat", f"the body is not valid JSON ({e})") from None

    def _reply(self, status: int, data: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _stream(self, first: bytes, rest, content_type: str, filename: str) -> None:
        """A 200 with chunked transfer encoding: a pcap of any size passes through in pieces."""
        self._status = 200
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Disposition", f'attachment; filename="{filename}"')
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for data in itertools.chain([first], rest):
                if data:
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
        except sdk.FleetcapError as e:  # the headers are out: end the connection without the final chunk
            log.warning("download of %s stopped: %s", filename, e)
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def _reply_json(self, status: int, body: Any) -> None:
        if body is None:
            self._status = status
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._reply(status, json.dumps(body).encode(), "application/json")

    # -- fleetcap extensions ------------------------------------------------------------------------

    def _extension(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        _need(method, "GET")
        c = self.gateway.client
        parts = path.strip("/").split("/")[2:]  # after fleetcap/v1
        try:
            if parts == ["agents"]:
                self._reply_json(200, {"value": [sdk.to_dict(a) for a in c.list_agents()]})
                return
            if parts == ["storage-accounts"]:
                self._reply_json(200, {"value": [sdk.to_dict(a) for a in c.list_storage_accounts()]})
                return
            if len(parts) == 3 and parts[0] == "captures" and parts[2] == "files":
                instance = (query.get("instance") or [""])[0]
                if not instance:
                    raise arm.HttpError(400, "InvalidParameter", "instance: required, an instance id or VM name")
                chunks = c.read_file(name=parts[1], instance_id=instance, file_path=(query.get("file") or [""])[0])
                first = next(chunks, b"")  # NOT_FOUND surfaces here, before any header is sent
                self._stream(first, chunks, "application/vnd.tcpdump.pcap", f"{parts[1]}_{instance}.cap")
                return
            if len(parts) == 3 and parts[0] == "captures" and parts[2] == "merged":
                work = tempfile.mkdtemp(prefix="fleetcap-gw-")
                try:
                    written = c.download(name=parts[1], dest=work, merge=True)
                    merged = [p for p in written if p.endswith(".pcapng")]
                    if not merged:
                        raise arm.HttpError(404, "ResourceNotFound",
                                            f"packet capture '{parts[1]}' has no stored files yet")
                    with open(merged[0], "rb") as f:
                        self._stream(b"", iter(lambda: f.read(1 << 20), b""), "application/x-pcapng",
                                     f"{parts[1]}.pcapng")
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                return
        except sdk.FleetcapError as e:
            raise arm.from_sdk_error(e) from None
        raise arm.HttpError(404, "NotFound", f"no such path: {path}")

    def _webhook(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        _need(method, "POST")
        g = self.gateway
        if g.webhook_token:
            given = (query.get("token") or [""])[0] or self.headers.get("Authorization", "").removeprefix("Bearer ")
            if given != g.webhook_token:
                raise arm.HttpError(401, "Unauthorized", "a valid token is required (?token= or Authorization: Bearer)")
        handler = {"/webhooks/azure-monitor": handle_azure_monitor,
                   "/webhooks/alertmanager": handle_alertmanager}.get(path.rstrip("/"))
        if handler is None:
            raise arm.HttpError(404, "NotFound", f"no such webhook: {path}")
        body = self._json_body()
        with g.alert_lock:
            try:
                results = handler(g.client, g.rules, body)
            except sdk.FleetcapError as e:  # the coordinator is unreachable: the sender retries on 503
                raise arm.from_sdk_error(e) from None
        self._reply_json(200, {"results": [r.as_dict() for r in results]})

    def _static(self, path: str) -> None:
        rel = "index.html" if path in ("/", "") else path.lstrip("/")
        full = os.path.normpath(os.path.join(PORTAL_DIR, rel))
        if not full.startswith(PORTAL_DIR + os.sep) or not os.path.isfile(full):
            raise arm.HttpError(404, "NotFound", f"no such path: {path}")
        with open(full, "rb") as f:
            data = f.read()
        self._reply(200, data, mimetypes.guess_type(full)[0] or "application/octet-stream")


def _need(method: str, allowed: str) -> None:
    if method != allowed:
        raise arm.HttpError(405, "MethodNotAllowed", f"{method} is not allowed here; use {allowed}")


def make_server(gateway: Gateway, host: str, port: int) -> http.server.ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"gateway": gateway})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(coordinator: str, listen: str, *, rules_path: str = "", webhook_token: str = "",
          credentials: transport.ClientCredentials | None = None) -> None:
    host, _, port = listen.rpartition(":")
    rules = AlertRules.load(rules_path) if rules_path else None
    gateway = Gateway(coordinator, rules=rules, webhook_token=webhook_token, credentials=credentials)
    server = make_server(gateway, host or "127.0.0.1", int(port))
    log.info("gateway on http://%s:%d (coordinator %s)", *server.server_address[:2], coordinator)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        gateway.client.close()
