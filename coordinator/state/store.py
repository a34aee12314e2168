"""The state store contract, written once over a small key-value backend.

A backend (memory_store.MemoryKV, etcd_store.EtcdKV) offers revisioned gets, a multi-key
compare-and-put transaction, leases and prefix watches. `Store` builds the capture, instance
and agent operations on top, so both backends run the same logic and the same contract tests
(tests/unit/test_store_contract.py, tests/integration/test_etcd_store.py).

Contract:
- create_capture MUST fail with AlreadyExists when the name exists, and writes the capture
  and all its instances atomically, or nothing.
- update_capture / update_instance are compare-and-swap on the key's mod revision: two
  coordinators can never both advance one record from the same state.
- An agent record lives exactly as long as its lease; when the lease expires the record is
  deleted and watchers see a DELETE.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import dataclasses
import enum
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from fleetcap.coordinator.errors import AlreadyExists, Conflict, FleetcapError, NotFound
from fleetcap.coordinator.state import keys
from fleetcap.core.vocabulary import is_terminal
from fleetcap.v1 import state_pb2

# Compare-and-swap attempts before giving up; conflicts only happen between replicas.
CAS_ATTEMPTS = 50
# Keys per transaction: etcd allows 128 operations (--max-txn-ops), compares included.
TXN_BATCH = 60
# Instance batches of one create written at once.
CREATE_TXNS_AT_ONCE = 4
# Agent records per transaction (puts alone, no compares).
AGENT_BATCH = 100


@dataclasses.dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    mod_revision: int


class WatchKind(enum.StrEnum):
    PUT = "PUT"
    DELETE = "DELETE"
    READY = "READY"  # the watch is established: nothing written from now on can be missed


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    kind: WatchKind
    key: str
    value: bytes


@dataclasses.dataclass(frozen=True)
class AgentEvent:
    """An agent's registration was written (PUT) or went with its lease (DELETE); READY
    (with no instance) once the watch is established."""

    kind: WatchKind
    instance_key: str


@dataclasses.dataclass(frozen=True)
class CaptureEvent:
    """A capture record was written (PUT, with the record) or deleted (DELETE, record None);
    READY (no name, no record) once the watch is established."""

    kind: WatchKind
    name: str
    record: state_pb2.CaptureRecord | None


class KVBackend(abc.ABC):
    @abc.abstractmethod
    async def get(self, key: str) -> KV | None: ...

    @abc.abstractmethod
    async def get_prefix(self, prefix: str) -> list[KV]: ...

    @abc.abstractmethod
    async def get_page(self, prefix: str, after: str, limit: int) -> tuple[list[KV], bool]:
        """Up to `limit` keys under prefix, in key order, from the first key after
        prefix + after ("" = from the start); and whether more follow."""
        ...

    @abc.abstractmethod
    async def get_many(self, keys: list[str]) -> dict[str, KV]:
        """The keys that exist among `keys` (at most GET_MANY of them), read at one revision."""
        ...

    @abc.abstractmethod
    async def put_if(self, puts: list[tuple[str, bytes]], expect: dict[str, int], lease: int = 0) -> bool:
        """Writes every put iff each key in `expect` has that mod revision (0 = absent)."""

    @abc.abstractmethod
    async def delete_prefix(self, prefix: str) -> None: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    async def delete_if(self, key: str, mod_revision: int) -> bool:
        """Deletes the key iff it still has that mod revision."""

    @abc.abstractmethod
    async def grant_lease(self, ttl_s: int) -> int: ...

    @abc.abstractmethod
    async def refresh_lease(self, lease: int) -> bool:
        """False when the lease has already expired."""

    @abc.abstractmethod
    async def revoke_lease(self, lease: int) -> None: ...

    @abc.abstractmethod
    def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        """Yields WatchEvent(WatchKind.READY, prefix, b"") once the watch is established (so a
        caller can read state knowing no later change will be missed), then every PUT and DELETE."""

    async def close(self) -> None:
        return None


def encode(message: Message) -> bytes:
    """A record as stored in etcd: protobuf's binary form (docs/decisions.md, "Records in etcd
    are binary"; `fleetcap state` prints them as JSON)."""
    return message.SerializeToString()


M = TypeVar("M", bound=Message)


def decode(cls: type[M], data: bytes) -> M:
    """A stored record. Coordinators before 2026-12-03 wrote JSON: such a record (it starts with
    "{", which no binary record can, since tag 0x7b would be a proto2 group) is still read, and
    rewritten binary on its next change."""
    message = cls()
    if data[:1] == b"{":
        json_format.Parse(data, message, ignore_unknown_fields=True)
    else:
        message.ParseFromString(data)
    return message


UPDATE_BATCH = 64
"""Keys per transaction of update_instances (a put and a compare each: under etcd's 128 operations)."""
GET_MANY = 120
"""Keys one get_many reads (one etcd transaction of reads, under its 128 operations)."""
DECODED_CACHE = 100_000
"""Decoded records kept (least recently used go first): every record of a full deployment."""
SCAN_PAGE = 500
"""Keys per read when the store reads a whole prefix."""


class _Records:
    """Reading records of one kind: decoded once per revision, scanned a page at a time."""

    def __init__(self, kv: KVBackend):
        self.kv = kv
        # Decoded records by key, with the mod revision they were decoded at. Records are JSON
        # (readable with etcdctl), and protobuf's JSON parser is slow: a capture record of a
        # 1,000-instance scale set took 1 ms, read on every progress report, and the 1,000
        # instance records of a GetStatus 45 ms. A record decodes once per revision; callers get
        # a copy (CopyFrom, in C), never the cached message.
        self._decoded: collections.OrderedDict[str, tuple[int, Message]] = collections.OrderedDict()

    def _decode(self, cls: type[M], kv: KV) -> M:
        out = cls()
        out.CopyFrom(self._peek(cls, kv))
        return out

    def _peek(self, cls: type[M], kv: KV) -> M:
        """The cached decoded message itself: for reading only, never to change or hand out."""
        hit = self._decoded.get(kv.key)
        if hit is not None and hit[0] == kv.mod_revision and isinstance(hit[1], cls):
            self._decoded.move_to_end(kv.key)
            return hit[1]
        message = decode(cls, kv.value)
        self._decoded[kv.key] = (kv.mod_revision, message)
        if len(self._decoded) > DECODED_CACHE:
            self._decoded.popitem(last=False)
        return message

    async def _scan(self, prefix: str) -> list[KV]:
        """Every key under a prefix, read SCAN_PAGE keys at a time: one read of a large prefix
        (10,000 captures, or the instances of several full-size scale sets) would outgrow a gRPC
        message, and etcd answers smaller reads without holding up its other clients."""
        out: list[KV] = []
        after = ""
        while True:
            page, more = await self.kv.get_page(prefix, after, SCAN_PAGE)
            out.extend(page)
            if not more or not page:
                return out
            after = page[-1].key[len(prefix) :]


class AgentRecords(_Records):
    """Agents registered (under their replica's lease, or one of their own)."""

    async def register(self, instance_key: str, record: state_pb2.AgentRecord, ttl_s: int) -> int:
        """Writes the agent record under a new lease and returns the lease id. A record left
        by an earlier connection of the same agent is replaced."""
        lease = await self.kv.grant_lease(ttl_s)
        key = keys.agent(instance_key)
        while True:
            old = await self.kv.get(key)
            if await self.kv.put_if([(key, encode(record))], {key: old.mod_revision if old else 0}, lease=lease):
                return lease

    async def put_many(self, records: dict[str, state_pb2.AgentRecord], lease: int) -> None:
        """Writes agent records (instance key → record, at most AGENT_BATCH) in one transaction
        under a lease the caller holds (its replica's), each replacing a record left by an earlier
        connection of the same agent."""
        if len(records) > AGENT_BATCH:
            raise ValueError(f"{len(records)} agent records in one transaction; at most {AGENT_BATCH}")
        await self.kv.put_if([(keys.agent(k), encode(r)) for k, r in records.items()], {}, lease=lease)

    async def remove(self, instance_key: str, record: state_pb2.AgentRecord) -> bool:
        """Deletes the agent record iff it is still `record` (the agent has not registered again,
        here or with another replica). Returns whether it did."""
        key = keys.agent(instance_key)
        kv = await self.kv.get(key)
        if kv is None or decode(state_pb2.AgentRecord, kv.value) != record:
            return False
        return await self.kv.delete_if(key, kv.mod_revision)

    async def list(self, under: str = "") -> dict[str, state_pb2.AgentRecord]:
        """Registered agents, by instance key; with `under`, only those whose key starts so."""
        return {keys.instance_key_of(kv.key): self._decode(state_pb2.AgentRecord, kv) for kv in await self._scan(keys.AGENTS + under)}

    async def watch(self) -> AsyncIterator[AgentEvent]:
        """Agents registering (PUT) and leaving (DELETE, when their lease expires), after READY."""
        async for event in self.kv.watch_prefix(keys.AGENTS):
            ready = event.kind == WatchKind.READY
            yield AgentEvent(event.kind, "" if ready else keys.instance_key_of(event.key))


class FetchRecords(_Records):
    """A download's request for a file that only its instance holds (coordinator/fetch.py)."""

    async def put(self, record: state_pb2.FetchRecord, ttl_s: int) -> int:
        """Writes the fetch under a new lease and returns it; keep it alive with Leases.refresh."""
        lease = await self.kv.grant_lease(ttl_s)
        key = keys.fetch(record.fetch_id)
        if not await self.kv.put_if([(key, encode(record))], {key: 0}, lease=lease):
            await self.kv.revoke_lease(lease)
            raise Conflict(f"fetch {record.fetch_id} exists")
        return lease

    async def get(self, fetch_id: str) -> state_pb2.FetchRecord | None:
        kv = await self.kv.get(keys.fetch(fetch_id))
        return decode(state_pb2.FetchRecord, kv.value) if kv else None

    async def end(self, fetch_id: str, lease: int) -> None:
        await self.kv.delete(keys.fetch(fetch_id))
        await self.kv.revoke_lease(lease)

    async def list(self) -> list[str]:
        return [kv.key[len(keys.FETCHES) :] for kv in await self._scan(keys.FETCHES)]

    async def watch(self) -> AsyncIterator[state_pb2.FetchRecord | None]:
        """Fetches as they are written (None for READY; deletions are not reported)."""
        async for event in self.kv.watch_prefix(keys.FETCHES):
            if event.kind == WatchKind.READY:
                yield None
            elif event.kind == WatchKind.PUT:
                yield decode(state_pb2.FetchRecord, event.value)


class Leases:
    """etcd leases: a record written under one goes when it expires (agents, fetches, the leader)."""

    def __init__(self, kv: KVBackend):
        self.kv = kv

    async def grant(self, ttl_s: int) -> int:
        return await self.kv.grant_lease(ttl_s)

    async def refresh(self, lease: int) -> bool:
        return await self.kv.refresh_lease(lease)

    async def try_lead(self, replica: str, ttl_s: int) -> int:
        """Becomes the leader if nobody is; returns the leadership's lease (0 if another leads).
        The leader keeps the lease alive with refresh(lease); when it dies, the key goes
        with its lease and the other replicas try again."""
        lease = await self.kv.grant_lease(ttl_s)
        if await self.kv.put_if([(keys.LEADER, replica.encode())], {keys.LEADER: 0}, lease=lease):
            return lease
        await self.kv.revoke_lease(lease)
        return 0


class Store(_Records):
    """Every record fleetcap keeps: captures, their instances and budgets here, and through
    `agents`, `fetches` and `leases` the rest, all on one KV backend."""

    def __init__(self, kv: KVBackend):
        super().__init__(kv)
        self.agents = AgentRecords(kv)
        self.fetches = FetchRecords(kv)
        self.leases = Leases(kv)

    async def close(self) -> None:
        await self.kv.close()

    async def records(self, under: str = "") -> list[tuple[str, Message | bytes]]:
        """Every key fleetcap wrote under keys.ROOT + `under`, with its record decoded (the
        leader key's value, a replica name, as bytes): what `fleetcap state` prints."""
        out: list[tuple[str, Message | bytes]] = []
        for kv in await self._scan(keys.ROOT + under):
            cls = keys.record_type(kv.key)
            out.append((kv.key, self._decode(cls, kv) if cls is not None else kv.value))
        return out

    async def ping(self) -> None:
        """One cheap read; raises if the store does not answer (health checks)."""
        await self.kv.get(keys.LEADER)

    # -- captures ------------------------------------------------------------------------

    async def create_capture(
        self, record: state_pb2.CaptureRecord, instances: Iterable[state_pb2.InstanceRecord], budget: state_pb2.BudgetRecord | None = None
    ) -> None:
        """Writes the instances, then the capture record as the commit point: until it exists,
        the capture does not (a crash in between leaves only instance records, which the next
        create of that name clears). etcd caps a transaction at 128 operations, so a scale set
        of any size is written in batches, each guarded by the capture's absence."""
        name = record.resource.name
        ckey = keys.capture(name)
        if await self.kv.get(ckey) is not None:
            raise AlreadyExists(f"a packet capture named '{name}' already exists")
        await self.kv.delete_prefix(keys.instances_of(name))  # leftovers of an interrupted create
        items = [(keys.instance(name, i.instance_key), encode(i)) for i in instances]
        # The budget replaces a leftover of an interrupted create, under the same guard.
        if budget is not None and not await self.kv.put_if([(keys.budget(name), encode(budget))], {ckey: 0}):
            raise AlreadyExists(f"a packet capture named '{name}' already exists")
        # The batches go CREATE_TXNS_AT_ONCE at a time: etcd commits concurrent transactions
        # together, and one after another they were most of a 1,000-instance create.
        batches = [items[start : start + TXN_BATCH] for start in range(0, len(items), TXN_BATCH)]
        for first in range(0, len(batches), CREATE_TXNS_AT_ONCE):
            written = await asyncio.gather(
                *(self.kv.put_if(batch, {ckey: 0, **{k: 0 for k, _ in batch}}) for batch in batches[first : first + CREATE_TXNS_AT_ONCE])
            )
            if not all(written):
                raise AlreadyExists(f"a packet capture named '{name}' already exists")
        if not await self.kv.put_if([(ckey, encode(record))], {ckey: 0}):
            raise AlreadyExists(f"a packet capture named '{name}' already exists")

    async def get_capture(self, name: str) -> state_pb2.CaptureRecord | None:
        kv = await self.kv.get(keys.capture(name))
        return self._decode(state_pb2.CaptureRecord, kv) if kv else None

    async def list_captures(self) -> list[state_pb2.CaptureRecord]:
        return [self._decode(state_pb2.CaptureRecord, kv) for kv in await self._scan(keys.CAPTURES)]

    async def list_captures_page(self, after: str, limit: int) -> tuple[list[state_pb2.CaptureRecord], bool]:
        """Up to `limit` captures by name, from the first after `after`; and whether more follow."""
        kvs, more = await self.kv.get_page(keys.CAPTURES, after, limit)
        return [self._decode(state_pb2.CaptureRecord, kv) for kv in kvs], more

    async def update_capture(self, name: str, change: Callable[[state_pb2.CaptureRecord], bool]) -> state_pb2.CaptureRecord:
        """Applies `change` (which edits the record in place and returns whether it changed
        anything) under compare-and-swap. Raises NotFound."""
        return await self._update(keys.capture(name), state_pb2.CaptureRecord, change, f"packet capture '{name}'")

    async def delete_capture(self, name: str) -> None:
        await self.kv.delete_prefix(keys.instances_of(name))
        await self.kv.delete(keys.budget(name))
        await self.kv.delete(keys.capture(name))
        self.forget_capture(name)

    def forget_capture(self, name: str) -> None:
        """Drops a deleted capture's decoded records: kept, they grew a replica by 20 MiB per
        deleted 10,000-instance fleet capture until the cache's bound (bench/replicas_bench.py)."""
        record, instances = keys.capture(name), keys.instances_of(name)
        for key in [k for k in self._decoded if k == record or k.startswith(instances)]:
            del self._decoded[key]

    async def update_budget(self, name: str, change: Callable[[state_pb2.BudgetRecord], bool]) -> state_pb2.BudgetRecord:
        """A capture's fleet budget under compare-and-swap (as update_capture). Raises NotFound."""
        return await self._update(keys.budget(name), state_pb2.BudgetRecord, change, f"budget of packet capture '{name}'")

    # -- instances -----------------------------------------------------------------------

    async def get_instances(self, name: str) -> list[state_pb2.InstanceRecord]:
        return [self._decode(state_pb2.InstanceRecord, kv) for kv in await self._scan(keys.instances_of(name))]

    async def get_instance(self, name: str, instance_key: str) -> state_pb2.InstanceRecord | None:
        """One instance of a capture: one key read, not the capture's every instance."""
        kv = await self.kv.get(keys.instance(name, instance_key))
        return None if kv is None else self._decode(state_pb2.InstanceRecord, kv)

    async def put_instance(self, name: str, record: state_pb2.InstanceRecord) -> None:
        """Adds an instance to an existing capture (addNewInstances); never overwrites one."""
        key = keys.instance(name, record.instance_key)
        await self.kv.put_if([(key, encode(record))], {key: 0})

    async def running_captures(self) -> set[str]:
        """Names of captures with an instance not yet Stopped or in Error (one range read)."""
        running = set()
        for kv in await self._scan(keys.INSTANCES):
            status = self._peek(state_pb2.InstanceRecord, kv).status.packet_capture_status
            if not is_terminal(status):
                running.add(keys.capture_name_of_instance(kv.key))
        return running

    async def update_instance(
        self, name: str, instance_key: str, change: Callable[[state_pb2.InstanceRecord], bool]
    ) -> state_pb2.InstanceRecord:
        return await self._update(
            keys.instance(name, instance_key), state_pb2.InstanceRecord, change, f"instance '{instance_key}' of packet capture '{name}'"
        )

    async def update_instances(
        self,
        items: list[tuple[str, str, Callable[[state_pb2.InstanceRecord], bool]]],
    ) -> list[state_pb2.InstanceRecord | FleetcapError | Conflict]:
        """Applies many (capture, instance key, change) at once, with few etcd calls: the
        records are read GET_MANY per call, and the changed ones written in transactions of up
        to UPDATE_BATCH keys, each guarded by every key's mod revision. A transaction that loses a race is applied again key by key (as
        update_instance). Changes of one key apply in order. Returns, per item, its record or
        the error (NotFound, Conflict)."""
        results: list[state_pb2.InstanceRecord | FleetcapError | Conflict | None] = [None] * len(items)
        by_key: dict[str, list[int]] = {}
        for i, (name, instance_key, _) in enumerate(items):
            by_key.setdefault(keys.instance(name, instance_key), []).append(i)
        found: dict[str, KV] = {}
        # Exactly the records that change, GET_MANY per etcd call: reading a capture's whole
        # range (1,000 records) for each batch of its reports was most of etcd's work, and of
        # the replicas', at 10,000 agents (bench/replicas_bench.py).
        wanted = list(by_key)
        for part in await asyncio.gather(*(self.kv.get_many(wanted[i : i + GET_MANY]) for i in range(0, len(wanted), GET_MANY))):
            found.update(part)
        changed: list[tuple[str, list[int], state_pb2.InstanceRecord, int]] = []
        for key, idxs in by_key.items():
            kv = found.get(key)
            if kv is None:
                for i in idxs:
                    results[i] = NotFound(f"instance '{items[i][1]}' of packet capture '{items[i][0]}' not found")
                continue
            record = self._decode(state_pb2.InstanceRecord, kv)
            if any([items[i][2](record) for i in idxs]):  # noqa: C419 (a list: every change runs, in order)
                changed.append((key, idxs, record, kv.mod_revision))
            else:
                for i in idxs:
                    results[i] = record
        for start in range(0, len(changed), UPDATE_BATCH):
            batch = changed[start : start + UPDATE_BATCH]
            if await self.kv.put_if([(k, encode(r)) for k, _, r, _ in batch], {k: rev for k, _, _, rev in batch}):
                for _, idxs, record, _ in batch:
                    for i in idxs:
                        results[i] = record
                continue
            for key, idxs, _, _ in batch:  # lost a race: key by key, each change on a fresh read
                for i in idxs:
                    name, instance_key, change = items[i]
                    try:
                        results[i] = await self._update(
                            key, state_pb2.InstanceRecord, change, f"instance '{instance_key}' of packet capture '{name}'"
                        )
                    except (FleetcapError, Conflict) as e:
                        results[i] = e
        return [r if r is not None else Conflict("not applied") for r in results]

    async def _update(self, key: str, cls: type[M], change: Callable[[M], bool], what: str) -> M:
        for _ in range(CAS_ATTEMPTS):
            kv = await self.kv.get(key)
            if kv is None:
                raise NotFound(f"{what} not found")
            record = self._decode(cls, kv)
            if not change(record):
                return record
            if await self.kv.put_if([(key, encode(record))], {key: kv.mod_revision}):
                return record
        raise Conflict(f"{what}: too many concurrent updates")

    def watch(self, prefix: str) -> AsyncIterator[WatchEvent]:
        """Every change under a prefix (keys.py), after one READY event."""
        return self.kv.watch_prefix(prefix)

    async def watch_captures(self) -> AsyncIterator[CaptureEvent]:
        """Capture records written (PUT: a create's commit point, or a stop) and deleted,
        after READY."""
        async for event in self.kv.watch_prefix(keys.CAPTURES):
            if event.kind == WatchKind.READY:
                yield CaptureEvent(event.kind, "", None)
            elif event.kind == WatchKind.PUT:
                record = decode(state_pb2.CaptureRecord, event.value)
                yield CaptureEvent(event.kind, record.resource.name, record)
            elif event.kind == WatchKind.DELETE:
                self.forget_capture(keys.capture_name_of(event.key))  # deleted by any replica
                yield CaptureEvent(event.kind, keys.capture_name_of(event.key), None)


__all__ = [
    "Store",
    "AgentRecords",
    "FetchRecords",
    "Leases",
    "KVBackend",
    "KV",
    "WatchEvent",
    "WatchKind",
    "AgentEvent",
    "CaptureEvent",
    "encode",
    "decode",
    "Conflict",
]
