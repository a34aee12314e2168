"""The etcd KV backend, over aetcd (asyncio; see docs/decisions.md for the choice).

Every call is retried with backoff while etcd is unreachable, up to `retry_s`, so that a
restarting etcd is an expected pause and not a crash; past that StoreUnavailable is raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aetcd
import aetcd.client
import aetcd.exceptions
import aetcd.watcher
import grpc
import grpc.aio
from aetcd import rpc
from aetcd.utils import prefix_range_end

from fleetcap.coordinator.errors import StoreUnavailable
from fleetcap.coordinator.state.store import KV, KVBackend, WatchEvent, WatchKind

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRYABLE = (aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError)
# What an etcd that is shutting down answers a call in flight: the connection closes before any
# status ("No status received"), or the call is cancelled with its channel. aetcd raises these
# as a bare ClientError.
_CUT_OFF = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED)


def retryable(e: Exception) -> bool:
    """Whether an etcd call's failure is etcd being away (retried, then StoreUnavailable), not
    a refusal. Every write here is a compare-and-swap or idempotent, so a call that may have
    been applied before the connection closed is safe to send again."""
    if isinstance(e, _RETRYABLE):
        return True
    cause = e.__cause__
    return type(e) is aetcd.exceptions.ClientError and isinstance(cause, grpc.aio.AioRpcError) and cause.code() in _CUT_OFF


def _b(s: str) -> bytes:
    return s.encode()


@aetcd.client._handle_errors  # type: ignore[untyped-decorator]
async def _range(client: aetcd.Client, start: bytes, end: bytes, limit: int) -> Any:
    """A range read with a limit, which aetcd 1.0.0's get_range does not pass on (its own
    request builder, then etcd's Range)."""
    await client.connect()
    request = rpc.RangeRequest(key=start, range_end=end, limit=limit, sort_order=rpc.RangeRequest.ASCEND, sort_target=rpc.RangeRequest.KEY)
    return await client.kvstub.Range(request, timeout=client._timeout, metadata=client.metadata)


class _TlsClient(aetcd.Client):  # type: ignore[misc]  # aetcd has no type information
    """aetcd's client over TLS. aetcd 1.0.0 opens only plaintext channels; this is its
    `connect`, unchanged but for the channel (docs/decisions.md)."""

    _is_connecting: bool
    _connected: asyncio.Event

    def __init__(self, *, credentials: grpc.ChannelCredentials, **kwargs: Any):
        super().__init__(**kwargs)
        self._credentials = credentials

    @aetcd.client._handle_errors  # type: ignore[untyped-decorator]
    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # another task is connecting: wait for it
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            target = f"{self._host}:{self._port}"
            self.channel = grpc.aio.secure_channel(target, self._credentials, options=list(self._options.items()))
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                resp = await self.auth_stub.Authenticate(
                    rpc.AuthenticateRequest(name=self._username, password=self._password), timeout=self._timeout
                )
                self.metadata = (("token", resp.token),)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False


@dataclasses.dataclass(frozen=True)
class EtcdAccess:
    """How to reach etcd: TLS material (a CA, and a client certificate when etcd requires one),
    and etcd's own user and password (from the environment, never a flag)."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.ca:
            return None

        def read(path: str) -> bytes:
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key) if self.key else None, read(self.cert) if self.cert else None)


class EtcdKV(KVBackend):
    def __init__(self, endpoints: list[str], *, access: EtcdAccess | None = None, retry_s: float = 30.0, timeout_s: int = 5):
        """endpoints: "host:port" strings; the first reachable one is used."""
        self._endpoints = endpoints
        self._access = access or EtcdAccess()
        self._credentials = self._access.credentials()
        self._retry_s = retry_s
        self._timeout_s = timeout_s
        self._client: aetcd.Client | None = None
        self._next = 0

    def _connect(self) -> aetcd.Client:
        if self._client is None:
            host, _, port = self._endpoints[self._next % len(self._endpoints)].rpartition(":")
            user = {"username": self._access.username, "password": self._access.password} if self._access.username else {}
            if self._credentials is None:
                self._client = aetcd.Client(host=host, port=int(port), timeout=self._timeout_s, **user)
            else:
                self._client = _TlsClient(credentials=self._credentials, host=host, port=int(port), timeout=self._timeout_s, **user)
        return self._client

    async def _call(self, fn: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        deadline = asyncio.get_running_loop().time() + self._retry_s
        delay = 0.05
        while True:
            try:
                return await fn(self._connect())
            except aetcd.exceptions.ClientError as e:
                if not retryable(e):
                    raise
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise StoreUnavailable(f"etcd unreachable at {', '.join(self._endpoints)}: {e}") from None
                log.warning("etcd call failed (%s); retrying in %.2fs", e, delay)
                if len(self._endpoints) > 1:  # try the next member
                    await self._reset()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _reset(self) -> None:
        client, self._client = self._client, None
        self._next += 1
        if client is not None:
            try:
                await client.close()
            except Exception:  # closing a broken channel may fail; it is gone either way
                pass

    async def get(self, key: str) -> KV | None:
        r = await self._call(lambda c: c.get(_b(key)))
        return KV(key, r.value, r.mod_revision) if r else None

    async def get_prefix(self, prefix: str) -> list[KV]:
        r = await self._call(lambda c: c.get_prefix(_b(prefix)))
        return [KV(kv.key.decode(), kv.value, kv.mod_revision) for kv in r.kvs]

    async def get_page(self, prefix: str, after: str, limit: int) -> tuple[list[KV], bool]:
        start = _b(prefix + after) + b"\0" if after else _b(prefix)
        r = await self._call(lambda c: _range(c, start, prefix_range_end(_b(prefix)), limit))
        return [KV(kv.key.decode(), kv.value, kv.mod_revision) for kv in r.kvs], bool(r.more)

    async def get_many(self, keys: list[str]) -> dict[str, KV]:
        async def txn(c: aetcd.Client) -> dict[str, KV]:
            _, responses = await c.transaction(compare=[], success=[c.transactions.get(_b(k)) for k in keys], failure=[])
            return {key: KV(key, found[0][0], found[0][1].mod_revision) for key, found in zip(keys, responses) if found}

        return await self._call(txn)

    async def put_if(self, puts: list[tuple[str, bytes]], expect: dict[str, int], lease: int = 0) -> bool:
        async def txn(c: aetcd.Client) -> bool:
            compare = [c.transactions.mod(_b(k)) == rev for k, rev in expect.items()]
            success = [c.transactions.put(_b(k), v, lease=lease or None) for k, v in puts]
            ok, _ = await c.transaction(compare=compare, success=success, failure=[])
            return bool(ok)

        return await self._call(txn)

    async def delete_prefix(self, prefix: str) -> None:
        await self._call(lambda c: c.delete_prefix(_b(prefix)))

    async def delete(self, key: str) -> None:
        await self._call(lambda c: c.delete(_b(key)))

    async def delete_if(self, key: str, mod_revision: int) -> bool:
        async def txn(c: aetcd.Client) -> bool:
            ok, _ = await c.transaction(
                compare=[c.transactions.mod(_b(key)) == mod_revision], success=[c.transactions.delete(_b(key))], failure=[]
            )
            return bool(ok)

        return await self._call(txn)

    async def grant_lease(self, ttl_s: int) -> int:
        lease = await self._call(lambda c: c.lease(ttl_s))
        return int(lease.id)

    async def refresh_lease(self, lease: int) -> bool:
        reply = await self._call(lambda c: c.refresh_lease(lease))
        return reply is not None and int(reply.TTL) > 0

    async def revoke_lease(self, lease: int) -> None:
        try:
            await self._call(lambda c: c.revoke_lease(lease))
        except aetcd.exceptions.ClientError as e:  # already expired: nothing to revoke
            log.debug("revoke of lease %x: %s", lease, e)

    async def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        watch = await self._call(lambda c: c.watch_prefix(_b(prefix)))
        try:
            yield WatchEvent(WatchKind.READY, prefix, b"")
            async for event in watch:
                yield WatchEvent(WatchKind(str(event.kind)), event.kv.key.decode(), event.kv.value)
        finally:
            try:
                await watch.cancel()
            except Exception:  # the channel may already be gone
                pass

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
