"""Presence (coordinator/fleet/presence.py): registrations written in batches, and silence judged
net of the replica's own lateness."""

from __future__ import annotations

import asyncio

import pytest

from fleetcap.coordinator.errors import StoreUnavailable
from fleetcap.coordinator.fleet import presence as presence_module
from fleetcap.coordinator.fleet.presence import LoopLag, Presence
from fleetcap.coordinator.state import keys
from fleetcap.coordinator.state.memory_store import MemoryKV
from fleetcap.coordinator.state.store import AGENT_BATCH, Store
from fleetcap.v1 import state_pb2
from tests.waiting import let_time_pass


class CountingKV(MemoryKV):
    """A MemoryKV that counts transactions, and fails the next `failures` of them."""

    def __init__(self) -> None:
        super().__init__()
        self.transactions = 0
        self.failures = 0

    async def put_if(self, puts, expect, lease=0):
        self.transactions += 1
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("etcd unreachable")
        return await super().put_if(puts, expect, lease)


def record(i: int) -> state_pb2.AgentRecord:
    return state_pb2.AgentRecord(hostname=f"host{i}", coordinator="r1")


def test_a_storm_of_registrations_is_a_few_transactions():
    """250 agents connecting at once: every record in etcd, under the replica's one lease, in
    ceil(250 / AGENT_BATCH) = 3 transactions (one per agent overloaded etcd at 10,000)."""

    async def body():
        kv = CountingKV()
        presence = Presence(Store(kv), ttl_s=10)
        await asyncio.gather(*(presence.register(f"local/rg/vmss/web/{i}", record(i)) for i in range(250)))
        assert kv.transactions == -(-250 // AGENT_BATCH) == 3
        stored = await Store(kv).agents.list()
        assert stored == {f"local/rg/vmss/web/{i}": record(i) for i in range(250)}
        assert {kv._data[keys.agent(k)][2] for k in stored} == {presence._lease}
        await presence.close()

    asyncio.run(body())


def test_a_failed_batch_fails_its_agents_and_the_next_one_is_written():
    """etcd fails one transaction: each agent of that batch gets the error (its stream is refused,
    it reconnects), its record is released; the agents after it are registered."""

    async def body():
        kv = CountingKV()
        kv.failures = 1
        presence = Presence(Store(kv), ttl_s=10)
        results = await asyncio.gather(
            *(presence.register(f"local/rg/vmss/web/{i}", record(i)) for i in range(150)), return_exceptions=True
        )
        assert [type(r).__name__ for r in results[:AGENT_BATCH]] == ["StoreUnavailable"] * AGENT_BATCH
        assert results[AGENT_BATCH:] == [None] * (150 - AGENT_BATCH)
        assert sorted(await Store(kv).agents.list()) == sorted(f"local/rg/vmss/web/{i}" for i in range(AGENT_BATCH, 150))
        assert sorted(presence._records) == sorted(f"local/rg/vmss/web/{i}" for i in range(AGENT_BATCH, 150))
        await presence.close()

    asyncio.run(body())


def test_an_agent_twice_in_one_batch_keeps_its_newest_record():
    async def body():
        kv = CountingKV()
        presence = Presence(Store(kv), ttl_s=10)
        await asyncio.gather(presence.register("local/rg/vm/a", record(1)), presence.register("local/rg/vm/a", record(2)))
        assert kv.transactions == 1
        assert await Store(kv).agents.list() == {"local/rg/vm/a": record(2)}
        await presence.close()

    asyncio.run(body())


def test_loop_lag_keeps_the_worst_lateness_of_its_window():
    lag = LoopLag(window_s=10)
    lag.note(100.0, 0.1)
    lag.note(101.0, 3.0)
    lag.note(102.0, 0.5)
    assert lag.recent(105.0) == 3.0
    assert lag.recent(111.5) == 0.5  # the 3 s sample left the window, the later 0.5 s did not
    assert lag.recent(112.5) == 0.0


def test_a_replica_late_by_its_own_fault_gives_its_agents_that_much_longer(monkeypatch):
    """The loop blocked for 1.5 s (a CPU-starved replica): the next silence check allows the TTL
    plus at least that lateness, so agents whose heartbeats it could not read are not closed."""
    monkeypatch.setattr(presence_module, "LAG_TICK_S", 0.05)
    allowed: list[float] = []

    async def body():
        presence = Presence(Store(MemoryKV()), ttl_s=1)

        def silent(seconds: float) -> list[str]:
            allowed.append(seconds)
            return []

        runner = asyncio.ensure_future(presence.run(silent))
        await asyncio.sleep(0.4)
        let_time_pass(1.5, why="the whole event loop stalls")  # noqa: ASYNC251 (the point)
        await asyncio.sleep(0.6)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await presence.close()

    asyncio.run(body())
    assert 1.0 <= allowed[0] < 1.2  # before the stall: the TTL (and timer jitter)
    assert max(allowed) >= 1.0 + 1.4  # after it: the TTL and the stall
