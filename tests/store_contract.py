"""The state-store contract, run over the memory backend (tests/unit/test_store_contract.py) and
over a real etcd (tests/integration/test_etcd_store.py): same class, different backend."""

from __future__ import annotations

import asyncio

import pytest

from fleetcap.coordinator.errors import AlreadyExists, NotFound
from fleetcap.coordinator.state import keys
from fleetcap.coordinator.state import store as store_module
from fleetcap.coordinator.state.store import Store, WatchKind
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import fleet_pb2, state_pb2


def capture(name: str, *instance_keys: str):
    rec = state_pb2.CaptureRecord(resource=pb.PacketCaptureResult(name=name, id=f"/x/{name}"), instance_keys=list(instance_keys))
    insts = [state_pb2.InstanceRecord(instance_key=k, status=pb.InstanceStatus(packet_capture_status="NotStarted")) for k in instance_keys]
    return rec, insts


class StoreContract:
    __test__ = False

    async def make_kv(self):
        raise NotImplementedError

    def run(self, coro_fn):
        async def go():
            store = Store(await self.make_kv())
            try:
                await coro_fn(store)
            finally:
                await store.close()

        asyncio.run(go())

    def test_create_get_list_delete(self):
        async def body(s: Store):
            rec, insts = capture("c1", "a/b/vmss/w/0", "a/b/vmss/w/1")
            await s.create_capture(rec, insts)
            assert (await s.get_capture("c1")) == rec
            assert [c.resource.name for c in await s.list_captures()] == ["c1"]
            assert sorted(i.instance_key for i in await s.get_instances("c1")) == ["a/b/vmss/w/0", "a/b/vmss/w/1"]
            assert await s.get_instance("c1", "a/b/vmss/w/1") == insts[1]
            assert await s.get_instance("c1", "a/b/vmss/w/2") is None
            assert await s.get_instance("c", "a/b/vmss/w/1") is None  # a name that prefixes another
            await s.delete_capture("c1")
            assert await s.get_capture("c1") is None
            assert await s.get_instances("c1") == []
            assert await s.get_instance("c1", "a/b/vmss/w/1") is None

        self.run(body)

    def test_captures_page_in_name_order_without_a_prefix_neighbour(self, monkeypatch):
        monkeypatch.setattr(store_module, "SCAN_PAGE", 3)  # whole-prefix reads page too: 4 captures, 2 reads

        async def body(s: Store):
            for name in ("b", "a", "ab", "c"):
                rec, insts = capture(name, f"k/{name}")
                await s.create_capture(rec, insts)
            page, more = await s.list_captures_page("", 2)
            assert ([c.resource.name for c in page], more) == (["a", "ab"], True)
            page, more = await s.list_captures_page("ab", 2)
            assert ([c.resource.name for c in page], more) == (["b", "c"], False)
            page, more = await s.list_captures_page("a", 1)  # strictly after "a": "ab" is next
            assert ([c.resource.name for c in page], more) == (["ab"], True)
            assert await s.list_captures_page("c", 5) == ([], False)
            # Instance records (another prefix) never show as captures.
            assert [c.resource.name for c in (await s.list_captures_page("", 10))[0]] == ["a", "ab", "b", "c"]
            assert [c.resource.name for c in await s.list_captures()] == ["a", "ab", "b", "c"]
            assert await s.running_captures() == {"a", "ab", "b", "c"}

        self.run(body)

    def test_duplicate_name_fails_and_changes_nothing(self):
        async def body(s: Store):
            rec, insts = capture("dup", "k/0")
            await s.create_capture(rec, insts)
            other, other_insts = capture("dup", "k/9")
            with pytest.raises(AlreadyExists):
                await s.create_capture(other, other_insts)
            assert [i.instance_key for i in await s.get_instances("dup")] == ["k/0"]

        self.run(body)

    def test_a_scale_set_larger_than_one_transaction(self):
        async def body(s: Store):
            big = [f"k/{i}" for i in range(300)]  # etcd allows 128 operations per transaction
            await s.create_capture(*capture("big", *big))
            assert len(await s.get_instances("big")) == 300
            with pytest.raises(AlreadyExists):
                await s.create_capture(*capture("big", "k/x"))
            assert len(await s.get_instances("big")) == 300

        self.run(body)

    def test_instances_of_one_capture_do_not_leak_into_a_longer_name(self):
        async def body(s: Store):
            await s.create_capture(*capture("c", "k/0"))
            await s.create_capture(*capture("c2", "k/1"))
            assert [i.instance_key for i in await s.get_instances("c")] == ["k/0"]

        self.run(body)

    def test_update_is_compare_and_swap(self):
        async def body(s: Store):
            await s.create_capture(*capture("u", "k/0"))
            calls = []

            def bump(rec):
                calls.append(1)
                rec.status.packets_captured += 1
                return True

            await asyncio.gather(*(s.update_instance("u", "k/0", bump) for _ in range(10)))
            (inst,) = await s.get_instances("u")
            assert inst.status.packets_captured == 10  # no update lost
            unchanged = await s.update_instance("u", "k/0", lambda rec: False)
            assert unchanged.status.packets_captured == 10
            with pytest.raises(NotFound):
                await s.update_instance("u", "k/missing", bump)
            with pytest.raises(NotFound):
                await s.update_capture("missing", lambda rec: True)

        self.run(body)

    def test_a_deleted_capture_leaves_nothing_in_the_decode_cache(self):
        """Deleted here, or by another replica (seen by the capture watch): its records are
        dropped from the cache; a capture whose name extends it keeps its own."""

        async def body(s: Store):
            other = Store(s.kv)
            for name in ("c", "c2", "d"):
                await s.create_capture(*capture(name, "k/0", "k/1"))
            for st in (s, other):
                await st.get_capture("c")
                await st.get_instances("c")
                await st.get_instances("c2")
                await st.get_instances("d")
            watching, gone = asyncio.Event(), asyncio.Event()

            async def watch():
                async for ev in other.watch_captures():
                    if ev.kind == WatchKind.READY:
                        watching.set()
                    elif ev.kind == WatchKind.DELETE and ev.name == "d":
                        gone.set()

            watcher = asyncio.ensure_future(watch())
            await asyncio.wait_for(watching.wait(), 10)
            await s.delete_capture("c")
            await s.delete_capture("d")
            await asyncio.wait_for(gone.wait(), 10)
            watcher.cancel()
            assert sorted(s._decoded) == sorted(keys.instance("c2", k) for k in ("k/0", "k/1"))
            assert sorted(other._decoded) == sorted(keys.instance("c2", k) for k in ("k/0", "k/1"))

        self.run(body)

    def test_get_many_reads_exactly_the_keys_that_exist(self):
        async def body(s: Store):
            await s.create_capture(*capture("g", "k/0", "k/1", "k/2"))
            wanted = [keys.instance("g", k) for k in ("k/2", "k/missing", "k/0")]
            found = await s.kv.get_many(wanted)
            assert sorted(found) == sorted([wanted[0], wanted[2]])
            for key, kv in found.items():
                assert (kv.key, kv.value, kv.mod_revision) == (key, (await s.kv.get(key)).value, (await s.kv.get(key)).mod_revision)
            assert await s.kv.get_many([]) == {}

        self.run(body)

    def test_update_instances_beyond_one_read_and_one_write(self):
        """300 reports at once (more than one get_many and one transaction), one of them for an
        instance that does not exist: each applied, in order per key; the missing one NotFound."""

        async def body(s: Store):
            big = [f"k/{i}" for i in range(300)]
            await s.create_capture(*capture("many", *big))

            def to(status):
                def change(rec):
                    rec.status.packet_capture_status = status
                    return True

                return change

            items = [("many", k, to("Running")) for k in big] + [("many", "k/0", to("Stopped")), ("many", "k/none", to("Running"))]
            results = await s.update_instances(items)
            assert [type(r).__name__ for r in results[-1:]] == ["NotFound"]
            statuses = {i.instance_key: i.status.packet_capture_status for i in await s.get_instances("many")}
            assert statuses == {**dict.fromkeys(big, "Running"), "k/0": "Stopped"}

        self.run(body)

    def test_agent_lives_as_long_as_its_lease(self):
        async def body(s: Store):
            ident = fleet_pb2.AgentIdentity(vm_name="vm1")
            key = keys.instance_key(ident)
            events = []
            watching = asyncio.Event()

            async def watch():
                async for ev in s.agents.watch():
                    if ev.kind == WatchKind.READY:
                        watching.set()
                        continue
                    events.append((ev.kind, ev.instance_key))
                    if ev.kind == WatchKind.DELETE:
                        return

            watcher = asyncio.ensure_future(watch())
            await asyncio.wait_for(watching.wait(), timeout=10)
            lease = await s.agents.register(key, state_pb2.AgentRecord(identity=ident), ttl_s=1)
            for _ in range(4):
                await asyncio.sleep(0.4)
                assert await s.leases.refresh(lease)
            assert list(await s.agents.list()) == [key]
            await asyncio.wait_for(watcher, timeout=10)  # stops refreshing: the lease expires
            assert events == [(WatchKind.PUT, key), (WatchKind.DELETE, key)]
            assert await s.agents.list() == {}
            assert not await s.leases.refresh(lease)

        self.run(body)

    def test_agents_listed_under_a_prefix(self):
        async def body(s: Store):
            lease = await s.leases.grant(30)
            idents = [
                fleet_pb2.AgentIdentity(vmss_name="web", instance_id="0"),
                fleet_pb2.AgentIdentity(vmss_name="web2", instance_id="0"),
                fleet_pb2.AgentIdentity(vm_name="web"),
            ]
            await s.agents.put_many({keys.instance_key(i): state_pb2.AgentRecord(identity=i) for i in idents}, lease)
            assert list(await s.agents.list(under="local/default/vmss/web/")) == ["local/default/vmss/web/0"]
            assert len(await s.agents.list()) == 3

        self.run(body)

    def test_a_record_a_previous_version_wrote_as_json_is_read_and_rewritten_binary(self):
        """Coordinators before 2026-12-03 stored JSON: an upgraded one reads such a record and
        writes it back binary on its next change."""
        from google.protobuf import json_format

        async def body(s: Store):
            rec, insts = capture("old", "k1")
            await s.create_capture(rec, [])
            key = keys.instance("old", "k1")
            await s.kv.put_if([(key, json_format.MessageToJson(insts[0], indent=None).encode())], {key: 0})
            assert (await s.get_instances("old")) == insts

            def run(r):
                r.status.packet_capture_status = "Running"
                return True

            await s.update_instance("old", "k1", run)
            stored = (await s.kv.get(key)).value
            assert stored[:1] != b"{"
            assert store_module.decode(state_pb2.InstanceRecord, stored).status.packet_capture_status == "Running"

        self.run(body)

    def test_reregistering_moves_the_record_to_the_new_lease(self):
        async def body(s: Store):
            ident = fleet_pb2.AgentIdentity(vm_name="vm2")
            key = keys.instance_key(ident)
            old = await s.agents.register(key, state_pb2.AgentRecord(identity=ident, hostname="a"), ttl_s=30)
            await s.agents.register(key, state_pb2.AgentRecord(identity=ident, hostname="b"), ttl_s=30)
            await s.kv.revoke_lease(old)  # the old lease ends: the record stays, on the new one
            assert (await s.agents.list())[key].hostname == "b"

        self.run(body)
