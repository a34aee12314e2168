"""The state-store contract over a real etcd."""

from __future__ import annotations

import uuid

import pytest

from fleetcap.coordinator.state import keys
from fleetcap.coordinator.state.etcd_store import EtcdAccess, EtcdKV
from tests.store_contract import StoreContract

pytestmark = pytest.mark.integration


class TestEtcdStore(StoreContract):
    __test__ = True

    @pytest.fixture(autouse=True)
    def _etcd(self, etcd_endpoint, monkeypatch):
        # Each test gets its own key space inside the shared etcd.
        root = f"/fleetcap-test-{uuid.uuid4().hex[:8]}/v1/"
        suffixes = {name: getattr(keys, name)[len(keys.ROOT) :] for name in ("ROOT", "CAPTURES", "INSTANCES", "AGENTS")}
        for name, suffix in suffixes.items():
            monkeypatch.setattr(keys, name, root + suffix)
        self.etcd = etcd_endpoint

    async def make_kv(self):
        tls = self.etcd.client_tls
        return EtcdKV([self.etcd.endpoint], access=EtcdAccess(tls.ca, tls.cert, tls.key))
