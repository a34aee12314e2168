"""An in-process KV backend with etcd's semantics (revisions, leases, watches), for unit
tests and for trying the coordinator without etcd (`fleetcap coordinator --store memory`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fleetcap.coordinator.state.store import KV, KVBackend, WatchEvent, WatchKind

# How often expired leases are swept; etcd itself checks about every 500 ms.
LEASE_SWEEP_S = 0.05


class MemoryKV(KVBackend):
    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, int, int]] = {}  # key -> (value, mod_revision, lease)
        self._revision = 0
        self._leases: dict[int, tuple[float, float]] = {}  # id -> (ttl, deadline)
        self._next_lease = 1
        self._watchers: list[tuple[str, asyncio.Queue[WatchEvent]]] = []
        self._sweeper: asyncio.Task[None] | None = None

    def _emit(self, kind: WatchKind, key: str, value: bytes) -> None:
        for prefix, queue in self._watchers:
            if key.startswith(prefix):
                queue.put_nowait(WatchEvent(kind, key, value))

    async def get(self, key: str) -> KV | None:
        if key not in self._data:
            return None
        value, rev, _ = self._data[key]
        return KV(key, value, rev)

    async def get_prefix(self, prefix: str) -> list[KV]:
        return [KV(k, v, r) for k, (v, r, _) in sorted(self._data.items()) if k.startswith(prefix)]

    async def get_page(self, prefix: str, after: str, limit: int) -> tuple[list[KV], bool]:
        keys = [k for k in sorted(self._data) if k.startswith(prefix) and (not after or k > prefix + after)]
        return [KV(k, self._data[k][0], self._data[k][1]) for k in keys[:limit]], len(keys) > limit

    async def get_many(self, keys: list[str]) -> dict[str, KV]:
        return {k: KV(k, self._data[k][0], self._data[k][1]) for k in keys if k in self._data}

    async def put_if(self, puts: list[tuple[str, bytes]], expect: dict[str, int], lease: int = 0) -> bool:
        for key, rev in expect.items():
            current = self._data.get(key)
            if (current[1] if current else 0) != rev:
                return False
        if lease and lease not in self._leases:
            raise ValueError(f"lease {lease} not found")
        self._revision += 1
        for key, value in puts:
            self._data[key] = (value, self._revision, lease)
            self._emit(WatchKind.PUT, key, value)
        return True

    async def delete_prefix(self, prefix: str) -> None:
        for key in [k for k in self._data if k.startswith(prefix)]:
            await self.delete(key)

    async def delete(self, key: str) -> None:
        if self._data.pop(key, None) is not None:
            self._revision += 1
            self._emit(WatchKind.DELETE, key, b"")

    async def delete_if(self, key: str, mod_revision: int) -> bool:
        current = self._data.get(key)
        if current is None or current[1] != mod_revision:
            return False
        await self.delete(key)
        return True

    async def grant_lease(self, ttl_s: int) -> int:
        lease = self._next_lease
        self._next_lease += 1
        self._leases[lease] = (ttl_s, time.monotonic() + ttl_s)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return lease

    async def refresh_lease(self, lease: int) -> bool:
        if lease not in self._leases:
            return False
        ttl, _ = self._leases[lease]
        self._leases[lease] = (ttl, time.monotonic() + ttl)
        return True

    async def revoke_lease(self, lease: int) -> None:
        self._leases.pop(lease, None)
        for key in [k for k, (_, _, held_by) in self._data.items() if held_by == lease]:
            await self.delete(key)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(LEASE_SWEEP_S)
            now = time.monotonic()
            for lease in [lease_id for lease_id, (_, deadline) in self._leases.items() if deadline <= now]:
                await self.revoke_lease(lease)

    async def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        entry = (prefix, queue)
        self._watchers.append(entry)
        try:
            yield WatchEvent(WatchKind.READY, prefix, b"")
            while True:
                yield await queue.get()
        finally:
            self._watchers.remove(entry)

    async def close(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            self._sweeper = None
