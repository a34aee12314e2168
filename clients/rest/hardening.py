"""The gateway's hardening, ahead of every route: request heads and bodies bounded, requests and
event streams shared out per token, slow clients cut off, and the counters by route."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetcap.clients.rest import arm
from fleetcap.clients.rest.gateway import GatewaySettings

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


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
            await error_response(refusal)(scope, receive, self._untimed(send))
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
                    await error_response(arm.HttpError(504, "GatewayTimeout", "the request took too long"))(
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


def error_response(e: arm.HttpError) -> JSONResponse:
    return JSONResponse(e.body(), e.status, headers=e.headers)
