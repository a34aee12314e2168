"""A capture's fleet-wide byte budget (fleetBytesLimit): one pool in etcd, allowances granted
from it to the instances, given back by idle ones.

Every instance starts with an allowance (its share of half the pool, at most 1 MiB) and writes
only within it, exactly as it keeps a byte limit. Before it runs out it asks for more; when the
next record does not fit it pauses (packets wait in the kernel's ring) until a grant comes. A
grant is what the instance needs or a share of what is left (half of it over the instances, at
most 16 MiB), so grants shrink as the pool does. An instance idle for a second gives back what
it holds. A request the pool cannot meet waits RETURN_WAIT_S for those returns; if it still
cannot be met, the budget is exhausted and the capture stops everywhere with
FleetBytesExceeded. Every instance is then short of a next record, and the idle ones gave back
theirs: the fleet's files hold the limit to less than one record per instance, and never more.
Allowances and returns are counted as amounts added and taken away, so a grant and a return
that cross on the wire add up the same in either order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fleetcap.coordinator.state.store import Store
from fleetcap.v1 import state_pb2

log = logging.getLogger(__name__)

INITIAL_GRANT_MAX = 1 << 20
GRANT_MAX = 16 << 20
# How long a request the pool cannot meet waits for idle instances to give back: the agent
# gives back after 1 s idle (node_agent), noticed within its 1 s tick, plus the way here.
RETURN_WAIT_S = 3.0


def share(limit: int, instances: int) -> int:
    """Each instance's first allowance: its share of half the pool, at most INITIAL_GRANT_MAX."""
    return min(limit // (2 * max(1, instances)), INITIAL_GRANT_MAX)


def initial(limit: int, instance_keys: list[str]) -> state_pb2.BudgetRecord:
    share_each = share(limit, len(instance_keys))
    return state_pb2.BudgetRecord(limit=limit, granted=share_each * len(instance_keys), allowance=dict.fromkeys(instance_keys, share_each))


class Budgets:
    def __init__(self, store: Store, grant: Callable[[str, str, str, int, bool], None], exhausted: Callable[[str], Awaitable[None]]):
        """grant(capture, capture id, instance key, bytes, exhausted) sends a BudgetGrant to
        that agent; exhausted(capture) stops the capture everywhere."""
        self.store = store
        self._grant = grant
        self._exhausted = exhausted

    async def _take(self, name: str, instance_key: str, instances: int, need: int) -> tuple[int, bool]:
        """(bytes granted, exhausted) after one compare-and-swap on the pool."""
        got = [0, False]

        def change(b: state_pb2.BudgetRecord) -> bool:
            got[0], got[1] = 0, b.exhausted
            remaining = b.limit - b.granted
            if b.exhausted or remaining <= 0 or remaining < need:
                return False
            g = min(remaining, max(need, min(remaining // (2 * instances), GRANT_MAX)))
            if g <= 0:
                return False
            b.allowance[instance_key] = b.allowance.get(instance_key, 0) + g
            b.granted += g
            got[0] = g
            return True

        await self.store.update_budget(name, change)
        return got[0], bool(got[1])

    async def request(self, name: str, capture_id: str, instance_key: str, instances: int, need: int) -> None:
        granted, exhausted = await self._take(name, instance_key, instances, need)
        if granted or exhausted:
            self._grant(name, capture_id, instance_key, granted, exhausted)
            return
        if need <= 0:
            return  # asking ahead of time, and nothing left: it asks again when it must
        await asyncio.sleep(RETURN_WAIT_S)  # idle instances give back meanwhile
        granted, exhausted = await self._take(name, instance_key, instances, need)
        if not granted and not exhausted:

            def spend(b: state_pb2.BudgetRecord) -> bool:
                if b.exhausted:
                    return False
                b.exhausted = True
                return True

            b = await self.store.update_budget(name, spend)
            log.info("capture %s: fleet budget of %d bytes spent (%d granted); stopping it everywhere", name, b.limit, b.granted)
            exhausted = True
            await self._exhausted(name)
        self._grant(name, capture_id, instance_key, granted, exhausted)

    async def give_back(self, name: str, instance_key: str, returned: int) -> None:
        def change(b: state_pb2.BudgetRecord) -> bool:
            amount = min(max(0, returned), b.allowance.get(instance_key, 0))  # never more than it holds
            if amount <= 0:
                return False
            b.allowance[instance_key] -= amount
            b.granted -= amount
            return True

        await self.store.update_budget(name, change)
