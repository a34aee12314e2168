"""Which agents are connected, in etcd: every agent of this replica is registered under one
lease, the replica's, which the replica keeps alive; an agent's heartbeats touch no etcd.

With a lease per agent, 1,000 agents sent 400 lease renewals a second to etcd (one every
quarter lease each), and a slow etcd let leases of agents that were alive and connected expire.
Now the replica renews one lease, and judges its agents itself:
- an agent whose stream ends (it stopped, or reconnects elsewhere) keeps its record for one more
  agent TTL, so that a reconnect within it changes nothing; then the record is removed unless
  the agent registered again (here or with another replica);
- an agent silent for a whole TTL while its stream looks open (a network cut) is closed and its
  record removed at once;
- a replica that dies takes its lease, and so its agents' records, with it after one TTL (the
  agents reconnect to another replica and register there first).
The leader turns a removed record into AgentStopped for the captures still running there
(expiry.py), as a lease expiry did before.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from fleetcap.coordinator.errors import FleetcapError
from fleetcap.coordinator.state.store import Store
from fleetcap.v1 import state_pb2

log = logging.getLogger(__name__)

RENEWALS_PER_TTL = 4
REREGISTER_PER_S = 200
"""After the replica's lease was lost (etcd away longer than a TTL), its agents are registered
again under a new lease at most this fast, in a shuffled order: never a burst on etcd."""


class Presence:
    def __init__(self, store: Store, ttl_s: int):
        self.store = store
        self.ttl_s = ttl_s
        self._lease = 0
        self._lease_lock = asyncio.Lock()
        self._records: dict[str, state_pb2.AgentRecord] = {}  # agents registered by this replica
        self._removals: set[asyncio.Task[None]] = set()

    async def _current_lease(self) -> int:
        async with self._lease_lock:
            if not self._lease:
                self._lease = await self.store.grant_lease(self.ttl_s)
            return self._lease

    async def register(self, instance_key: str, record: state_pb2.AgentRecord) -> None:
        self._records[instance_key] = record
        await self.store.put_agent(instance_key, record, await self._current_lease())

    def release(self, instance_key: str, record: state_pb2.AgentRecord, *, after_s: float) -> None:
        """The agent's stream ended: its record goes after `after_s` seconds unless the agent has
        registered again by then."""
        if self._records.get(instance_key) is record:
            del self._records[instance_key]
        task = asyncio.ensure_future(self._remove_later(instance_key, record, after_s))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _remove_later(self, instance_key: str, record: state_pb2.AgentRecord, after_s: float) -> None:
        await asyncio.sleep(after_s)
        if instance_key in self._records and self._records[instance_key] is not record:
            return  # connected here again
        try:
            if await self.store.remove_agent(instance_key, record):
                log.info("agent %s: gone for a whole TTL; record removed", instance_key)
        except FleetcapError as e:  # etcd away: the replica's lease, or the next removal, settles it
            log.warning("agent %s: could not remove its record: %s", instance_key, e)

    async def run(self, silent: Callable[[float], list[str]]) -> None:
        """Runs for ever: renews the lease RENEWALS_PER_TTL times per TTL and closes agents
        silent for a whole TTL (`silent(ttl)` closes them and returns their keys)."""
        interval = self.ttl_s / RENEWALS_PER_TTL
        while True:
            await asyncio.sleep(interval)
            for key in silent(self.ttl_s):
                log.warning("agent %s: silent for %d s; its stream is closed", key, self.ttl_s)
            try:
                lease = await self._current_lease()
                if not await self.store.refresh_lease(lease):
                    await self._renew_lost_lease()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # etcd unreachable: try again next round
                log.warning("agents' lease: %s", e)

    async def _renew_lost_lease(self) -> None:
        async with self._lease_lock:
            self._lease = await self.store.grant_lease(self.ttl_s)
        keys = list(self._records)
        random.shuffle(keys)
        log.warning("the agents' lease expired (etcd was away); registering %d agents again", len(keys))
        for i, key in enumerate(keys):
            record = self._records.get(key)
            if record is not None:
                await self.store.put_agent(key, record, self._lease)
            if i % 10 == 9:
                await asyncio.sleep(10 / REREGISTER_PER_S)

    async def close(self) -> None:
        """Stops pending removals (the lease settles them once this replica is gone)."""
        for task in list(self._removals):
            task.cancel()
        for task in list(self._removals):
            with contextlib.suppress(asyncio.CancelledError):
                await task
