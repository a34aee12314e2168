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

Registrations are written in batches, one etcd transaction for up to AGENT_BATCH agents: when
10,000 agents connected at once to three replicas, one transaction per agent overloaded etcd
(3,555 calls past their deadline; bench/replicas_bench.py).

A replica judges silence by its own clock, so it must not blame its agents for its own delay:
an event loop too busy to read their heartbeats on time (a reconnect storm on 2 cores) closed
507 live agents as silent. The time the loop itself was late is added to the TTL (see
LoopLag).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Callable

from fleetcap.coordinator.errors import FleetcapError, StoreUnavailable
from fleetcap.coordinator.state.store import AGENT_BATCH, Store
from fleetcap.coordinator.usecases.common import being_cancelled, settle
from fleetcap.core.tasks import TaskSet
from fleetcap.v1 import state_pb2

log = logging.getLogger(__name__)

RENEWALS_PER_TTL = 4
REREGISTER_PER_S = 1000
"""After the replica's lease was lost (etcd away longer than a TTL), its agents are registered
again under a new lease at most this fast, in a shuffled order: never a burst on etcd."""
LAG_TICK_S = 0.25


class LoopLag:
    """How late this replica's event loop has been lately: a task that sleeps LAG_TICK_S and
    measures how much later it woke. `recent()` is the worst lateness within the last `window`
    seconds. A heartbeat read late by as much was not the agent's fault."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._samples: list[tuple[float, float]] = []  # (when, how late), worst-first pruned

    def note(self, at: float, late: float) -> None:
        self._samples = [(t, x) for t, x in self._samples if at - t <= self.window_s and x > late]
        self._samples.append((at, late))

    def recent(self, now: float) -> float:
        return max((x for t, x in self._samples if now - t <= self.window_s), default=0.0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_TICK_S)
            now = loop.time()
            self.note(now, max(0.0, now - before - LAG_TICK_S))


class Presence:
    def __init__(self, store: Store, ttl_s: int):
        self.store = store
        self.ttl_s = ttl_s
        self._lease = 0
        self._lease_lock = asyncio.Lock()
        self._records: dict[str, state_pb2.AgentRecord] = {}  # agents registered by this replica
        self._removals = TaskSet("removing a departed agent's record", log, expected=(FleetcapError,))
        # Registrations waiting for the next transaction, and the one task that writes them.
        self._waiting: collections.deque[tuple[str, state_pb2.AgentRecord, asyncio.Future[None]]] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self.lag = LoopLag(window_s=2 * ttl_s)

    async def _current_lease(self) -> int:
        async with self._lease_lock:
            if not self._lease:
                self._lease = await self.store.leases.grant(self.ttl_s)
            return self._lease

    async def register(self, instance_key: str, record: state_pb2.AgentRecord) -> None:
        """Returns once the record is in etcd, written with others that came meanwhile; raises
        the etcd error of its batch. A registration that fails or is given up (the stream
        closed) is released as a stream that ended."""
        self._records[instance_key] = record
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((instance_key, record, done))
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_registrations())
        try:
            await done
        except BaseException:
            self.release(instance_key, record, after_s=self.ttl_s)
            raise

    async def _write_registrations(self) -> None:
        batch: list[asyncio.Future[None]] = []
        try:
            while self._waiting:
                records: dict[str, state_pb2.AgentRecord] = {}
                while self._waiting and len(records) < AGENT_BATCH:
                    key, record, done = self._waiting.popleft()
                    batch.append(done)
                    records[key] = record  # an agent twice in a batch: its newest record
                try:
                    await self.store.agents.put_many(records, await self._current_lease())
                except (Exception, asyncio.CancelledError) as e:
                    if isinstance(e, asyncio.CancelledError) and being_cancelled():
                        raise
                    for done in batch:
                        settle(done, e if isinstance(e, Exception) else StoreUnavailable("an etcd call was cancelled"))
                else:
                    for done in batch:
                        settle(done)
                batch = []
        finally:
            self._writer = None
            stopping = FleetcapError("the replica is stopping")
            for done in batch + [done for _, _, done in self._waiting]:
                settle(done, stopping)
            self._waiting.clear()

    def release(self, instance_key: str, record: state_pb2.AgentRecord, *, after_s: float) -> None:
        """The agent's stream ended: its record goes after `after_s` seconds unless the agent has
        registered again by then."""
        if self._records.get(instance_key) is record:
            del self._records[instance_key]
        self._removals.start(self._remove_later(instance_key, record, after_s), detail=instance_key)

    async def _remove_later(self, instance_key: str, record: state_pb2.AgentRecord, after_s: float) -> None:
        await asyncio.sleep(after_s)
        if instance_key in self._records and self._records[instance_key] is not record:
            return  # connected here again
        try:
            if await self.store.agents.remove(instance_key, record):
                log.info("agent %s: gone for a whole TTL; record removed", instance_key)
        except FleetcapError as e:  # etcd away: the replica's lease, or the next removal, settles it
            log.warning("agent %s: could not remove its record: %s", instance_key, e)

    async def run(self, silent: Callable[[float], list[str]]) -> None:
        """Runs for ever: renews the lease RENEWALS_PER_TTL times per TTL and closes agents
        silent for a whole TTL, plus however late this replica's loop has lately been
        (`silent(seconds)` closes them and returns their keys)."""
        interval = self.ttl_s / RENEWALS_PER_TTL
        loop = asyncio.get_running_loop()
        lag = asyncio.ensure_future(self.lag.run())
        try:
            while True:
                await asyncio.sleep(interval)
                allowed = self.ttl_s + self.lag.recent(loop.time())
                for key in silent(allowed):
                    log.warning("agent %s: silent for %.1f s; its stream is closed", key, allowed)
                await self._renew()
        finally:
            lag.cancel()

    async def _renew(self) -> None:
        try:
            lease = await self._current_lease()
            if not await self.store.leases.refresh(lease):
                await self._renew_lost_lease()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # etcd unreachable: try again next round
            log.warning("agents' lease: %s", e)

    async def _renew_lost_lease(self) -> None:
        async with self._lease_lock:
            self._lease = await self.store.leases.grant(self.ttl_s)
        keys = list(self._records)
        random.shuffle(keys)
        log.warning("the agents' lease expired (etcd was away); registering %d agents again", len(keys))
        for i in range(0, len(keys), AGENT_BATCH):
            batch = {k: r for k in keys[i : i + AGENT_BATCH] if (r := self._records.get(k)) is not None}
            if batch:
                await self.store.agents.put_many(batch, self._lease)
            await asyncio.sleep(AGENT_BATCH / REREGISTER_PER_S)

    async def close(self) -> None:
        """Stops pending removals (the lease settles them once this replica is gone)."""
        if self._writer is not None:
            self._writer.cancel()
        await self._removals.close()
