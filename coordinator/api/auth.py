"""Authentication and authorisation: the one enforcement point, a server interceptor.

Every call is authenticated before any of its work starts: a bearer token (checked against the
auth file's hashes, in constant time, or, when it is a JWT and OIDC is configured, by
api/oidc.py) or else the TLS client certificate (its roles are its O
entries; fleetcap.core.auth documents the encoding). The method's role comes from one table;
a caller without a credential gets UNAUTHENTICATED, one without the role PERMISSION_DENIED. Each
decision is one audit log line and a metric. The principal travels to the servicer in a context
variable, so the fleet service can bind an agent to its own identity.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import grpc
import grpc.aio

from fleetcap.coordinator.api.oidc import OidcVerifier
from fleetcap.coordinator.metrics import CoordinatorMetrics
from fleetcap.coordinator.token_bucket import TokenBucket
from fleetcap.core import logs, pki
from fleetcap.core.auth import AuthError, AuthFile, Principal, Role, agent_id_from_uri, parse_roles
from fleetcap.core.transport import AUTHORIZATION_KEY

log = logging.getLogger(__name__)
audit = logging.getLogger("fleetcap.audit")

_API = "/fleetcap.v1.PacketCaptures/"
_FLEET = "/fleetcap.v1.Fleet/"
METHOD_ROLES: dict[str, Role] = {
    **{
        _API + m: Role.READER
        for m in ("Get", "List", "GetStatus", "WatchStatus", "ListAgents", "ListStorageAccounts", "GetManifest", "GetManifestKey")
    },
    _API + "ReadFile": Role.DATA_READER,
    **{_API + m: Role.CONTRIBUTOR for m in ("Create", "Stop", "Trigger", "Delete")},
    _FLEET + "Connect": Role.AGENT,
    _FLEET + "Upload": Role.AGENT,
    # Server reflection describes the API (grpcurl, Postman): a reader's.
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Role.READER,
}
# Health checks say SERVING or NOT_SERVING and nothing else: probes and load balancers call them
# without a credential.
PUBLIC_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", "/grpc.health.v1.Health/List"})
# Creates per principal: a burst of CREATE_BURST, refilled at CREATE_PER_S. Generous for any
# operator or alert rule; it bounds what one leaked token can make the fleet do.
CREATE_BURST, CREATE_PER_S = 30, 5.0

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("fleetcap_principal", default=None)


def current_principal() -> Principal | None:
    """The authenticated caller of the call being served (None outside a call)."""
    return _principal.get()


def serve_as(principal: Principal) -> None:
    """Makes `principal` the caller for the rest of this task: what the interceptor does for a
    call, for code that drives a servicer in-process (tests)."""
    _principal.set(principal)


class Authenticator:
    """Turns a call's credentials into a Principal. The auth file is reloaded on SIGHUP
    (`reload`); a reload that fails keeps the previous file and logs why."""

    def __init__(self, auth_file: str = "", *, tls: bool = False, oidc: OidcVerifier | None = None):
        self.path = auth_file
        self.tls = tls
        self.oidc = oidc
        self.file = AuthFile.load(auth_file) if auth_file else AuthFile()

    def reload(self) -> None:
        if not self.path:
            return
        try:
            self.file = AuthFile.load(self.path)
            log.info(
                "auth file %s reloaded: %d token(s), %d revoked certificate(s)",
                self.path,
                len(self.file.tokens),
                len(self.file.revoked_certificates),
            )
        except (OSError, AuthError) as e:
            log.error("auth file %s not reloaded, the previous one stays in force: %s", self.path, e)

    async def authenticate_call(self, metadata: Any, auth_context: Mapping[str, Iterable[bytes]]) -> Principal | None:
        """As `authenticate`, with OIDC: a JWT is checked off the event loop (it may fetch the JWKS)."""
        if self.oidc is not None:
            token = _bearer(metadata)
            if token and OidcVerifier.looks_like_jwt(token):
                return await asyncio.to_thread(self.oidc.principal, token)
        return self.authenticate(metadata, auth_context)

    def authenticate(self, metadata: Any, auth_context: Mapping[str, Iterable[bytes]]) -> Principal | None:
        for key, value in metadata or ():
            if key == AUTHORIZATION_KEY:
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, token = text.partition(" ")
                return self.file.principal_for_token(token.strip()) if scheme.lower() == "bearer" else None
        pem = list(auth_context.get("x509_pem_cert", ()))
        if not pem:
            return None
        identity = pki.read_identity(pem[0])
        if identity.common_name in self.file.revoked_certificates:
            return None
        roles = parse_roles([o for o in identity.organizations if o in set(Role)], "certificate")
        agent_ids = [a for a in (agent_id_from_uri(u) for u in identity.agent_uris) if a]
        if Role.AGENT in roles and len(agent_ids) != 1:
            roles = roles - {Role.AGENT}  # an agent certificate must name exactly one instance
        return Principal(identity.common_name, roles, "certificate", agent_ids[0] if agent_ids else "")


def _bearer(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY:
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


class _RateLimit:
    def __init__(self, burst: float, per_s: float):
        self.burst, self.per_s = burst, per_s
        self._buckets: dict[str, TokenBucket] = {}  # principal -> its bucket

    def take(self, who: str) -> bool:
        now = time.monotonic()
        return self._buckets.setdefault(who, TokenBucket(self.burst, self.per_s)).when(now) <= now


# A valid capture name has at most 80 characters (Azure's rule); the audit line keeps a few more
# of an invalid one, escaped, so a forged name can neither start a line nor fill the disk.
AUDIT_NAME_CHARS = 100


def _capture_of(request: Any) -> str:
    name = getattr(request, "name", "")
    return logs.safe(name, AUDIT_NAME_CHARS) if isinstance(name, str) and name else "-"


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, metrics: CoordinatorMetrics):
        self.authenticator = authenticator
        self.metrics = metrics
        self._creates = _RateLimit(CREATE_BURST, CREATE_PER_S)

    async def _admit(self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        """Authenticates and authorises one call, logs the decision, or aborts it."""
        short = method.rsplit("/", 1)[-1]
        needed = METHOD_ROLES.get(method)
        principal = await self.authenticator.authenticate_call(context.invocation_metadata(), context.auth_context())
        capture = _capture_of(request)
        if principal is None:
            decision, code, message = (
                "unauthenticated",
                grpc.StatusCode.UNAUTHENTICATED,
                "no valid credential: present a client certificate from the trusted CA or a bearer token",
            )
        elif needed is None or not principal.allows(needed):
            decision, code = "denied", grpc.StatusCode.PERMISSION_DENIED
            message = f"{principal} ({', '.join(sorted(principal.roles)) or 'no role'}) may not call {short}" + (
                f"; it needs the role {needed}" if needed else ""
            )
        elif needed is Role.AGENT and principal.via == "token" and self.authenticator.tls:
            decision, code = "denied", grpc.StatusCode.PERMISSION_DENIED
            message = "agents prove their identity with a certificate when the coordinator serves TLS"
        elif short == "Create" and not self._creates.take(principal.name):
            decision, code = "rate-limited", grpc.StatusCode.RESOURCE_EXHAUSTED
            message = f"{principal} creates faster than {CREATE_PER_S:g} per second; retry shortly"
        else:
            audit.info("principal=%s method=%s capture=%s decision=allowed", principal or "-", short, capture)
            self.metrics.auth_decision(short, "allowed")
            return principal
        audit.warning("principal=%s method=%s capture=%s decision=%s", principal or "-", short, capture, decision)
        self.metrics.auth_decision(short, decision)
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or details.method in PUBLIC_METHODS:
            return handler
        method = details.method
        admit = self._admit

        if handler.unary_unary:
            inner_uu: Any = handler.unary_unary  # grpc's stubs type the aio behaviours as sync ones

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                _principal.set(await admit(method, request, context))
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            inner_us: Any = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                _principal.set(await admit(method, request, context))
                async for response in inner_us(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer, handler.response_serializer)
        if handler.stream_stream:
            inner_ss: Any = handler.stream_stream

            async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                _principal.set(await admit(method, None, context))
                async for response in inner_ss(requests, context):
                    yield response

            return grpc.stream_stream_rpc_method_handler(stream_stream, handler.request_deserializer, handler.response_serializer)
        raise RuntimeError(f"{method}: client-streaming methods are not served")
