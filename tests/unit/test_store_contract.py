"""The state-store contract (tests/store_contract.py) over the memory backend."""

from __future__ import annotations

from fleetcap.coordinator.state.memory_store import MemoryKV
from tests.store_contract import StoreContract


class TestMemoryStore(StoreContract):
    __test__ = True

    async def make_kv(self):
        return MemoryKV()
