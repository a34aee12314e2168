"""Creating, stopping and deleting captures: Azure's create (and its dry run), stop and delete."""

from __future__ import annotations

import builtins
import collections
import datetime as dt
import logging
import uuid
from collections.abc import Mapping

from fleetcap.coordinator import budget, targets, validation
from fleetcap.coordinator import status as st
from fleetcap.coordinator.errors import (
    AlreadyExists,
    ResourceExhausted,
)
from fleetcap.coordinator.fetch import Dispatcher
from fleetcap.coordinator.filter_compiler import FilterCompiler
from fleetcap.coordinator.settings import ServiceConfig
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.storage.sink import Sink
from fleetcap.coordinator.usecases.common import (
    Captures,
    finish_unstarted,
    known_name,
    new_etag,
    session_id,
    start_message,
    storage_prefix,
    storage_uri,
)
from fleetcap.core.naming import resource_id, rfc3339, ring_file_path
from fleetcap.core.vocabulary import Status, StopReason
from fleetcap.v1 import captures_pb2, fleet_pb2, state_pb2

log = logging.getLogger(__name__)

DISPATCHED_KEPT = 1000


class Lifecycle:
    """A capture from its create to its delete; starts and stops go to the agents through the dispatcher."""

    def __init__(self, store: Store, dispatcher: Dispatcher, sinks: Mapping[str, Sink], config: ServiceConfig, filters: FilterCompiler):
        self.store = store
        self.dispatcher = dispatcher
        self.sinks = sinks
        self.config = config
        self.filters = filters
        self.captures = Captures(store)
        self._last_created = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._dispatched: collections.OrderedDict[str, None] = collections.OrderedDict()

    def capture_id(self, name: str) -> str:
        c = self.config
        return (
            f"/subscriptions/{c.subscription}/resourceGroups/{c.watcher_resource_group}/providers/"
            f"Microsoft.Network/networkWatchers/{c.watcher_name}/packetCaptures/{name}"
        )

    def _created_now(self) -> dt.datetime:
        # Blob names carry the creation time to the millisecond; keep it unique per replica.
        now = dt.datetime.now(dt.UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if now <= self._last_created:
            now = self._last_created + dt.timedelta(milliseconds=1)
        self._last_created = now
        return now

    async def create(
        self, *, name: str, resource_group: str, subscription: str, params: captures_pb2.PacketCaptureParameters, caller: str = ""
    ) -> captures_pb2.PacketCaptureResult:
        """Creates and starts a capture. `caller` (the principal's name) bounds its share of the
        filter compiler."""
        record, instances = await self._prepare(name, resource_group, subscription, params, caller)
        limit = record.resource.properties.fleet_bytes_limit
        await self.store.create_capture(record, instances, budget.initial(limit, list(record.instance_keys)) if limit else None)
        log.info("capture %s created on %d instance(s) of %s", name, len(instances), record.resource.properties.target)
        for inst in instances:
            self.start_instance(record, inst)
        self._dispatched[session_id(record)] = None
        while len(self._dispatched) > DISPATCHED_KEPT:
            self._dispatched.popitem(last=False)
        return record.resource

    async def dry_run(
        self,
        *,
        name: str,
        resource_group: str,
        subscription: str,
        params: captures_pb2.PacketCaptureParameters,
        caller: str = "",
    ) -> tuple[captures_pb2.PacketCaptureResult, captures_pb2.DryRunResult]:
        """Checks all a create checks, and answers what it would touch: its instances, whether
        each is connected, and an estimate of what each would write per second. Stores and
        starts nothing."""
        record, instances = await self._prepare(name, resource_group, subscription, params, caller)
        return record.resource, await self._dry_run(record, instances)

    async def _prepare(
        self,
        name: str,
        resource_group: str,
        subscription: str,
        params: captures_pb2.PacketCaptureParameters,
        caller: str = "",
    ) -> tuple[state_pb2.CaptureRecord, builtins.list[state_pb2.InstanceRecord]]:
        """A create's checks, and the records it would write."""
        validation.validate_name(name)
        p = validation.validate(params, storage_accounts={name: sink.container_rule for name, sink in self.sinks.items()})
        for field, expression, meaning in validation.expressions_to_compile(p):
            await self.filters.check(field, expression, meaning, caller=caller)
        running = await self.store.running_captures()
        if len(running) >= self.config.max_captures:
            raise ResourceExhausted(
                f"{len(running)} captures are running, the limit is {self.config.max_captures}; stop or wait for one first"
            )
        if await self.store.get_capture(name) is not None:
            raise AlreadyExists(f"a packet capture named '{name}' already exists; captures cannot be updated, delete it first")
        candidates = await self.store.agents.list(
            under=targets.agents_prefix(p.target, p.target_type, subscription=subscription, resource_group=resource_group)
        )
        resolved = targets.resolve(
            p.target,
            p.target_type,
            list(p.scope.include),
            list(p.scope.exclude),
            subscription=subscription,
            resource_group=resource_group,
            agents=candidates,
        )
        p.target = resolved.target_id
        del p.scope.include[:]
        del p.scope.exclude[:]
        p.scope.include.extend(resolved.scope_include)
        p.scope.exclude.extend(resolved.scope_exclude)
        created = self._created_now()
        loc = p.storage_location
        local_path = loc.file_path or loc.local_path or f"/var/captures/fleetcap/{name}-{uuid.uuid4().hex[:8]}.cap"
        continuous = p.HasField("continuous_capture")
        resource = captures_pb2.PacketCaptureResult(
            name=name,
            id=self.capture_id(name),
            etag=new_etag(),
            provisioning_state="Succeeded",
            properties=p,
            created_time=rfc3339(created),
        )
        record = state_pb2.CaptureRecord(
            resource=resource,
            instance_keys=list(resolved.instances),
            local_path=local_path,
            container=validation.container_of(loc.storage_path),
        )
        instances = []
        for key, agent in resolved.instances.items():
            ident = agent.identity
            status = captures_pb2.InstanceStatus(
                id=resource_id(ident), instance_id=ident.instance_id or ident.vm_name, packet_capture_status=Status.NOT_STARTED
            )
            if not continuous and not p.standby_in_seconds:  # a ring's files are reported as they open
                status.files.add(file_path=local_path, storage_path=storage_uri(self.sinks, record, ident, local_path))
            instances.append(state_pb2.InstanceRecord(instance_key=key, identity=ident, status=status))
        if loc.storage_id:
            # Azure returns the generated location: the blob for one instance, the common
            # prefix for several (and for a ring's files).
            one = storage_uri(self.sinks, record, instances[0].identity, ring_file_path(local_path, 0, continuous))
            record.resource.properties.storage_location.storage_path = storage_prefix(
                one, several_instances=len(instances) > 1, continuous=continuous
            )
        return record, instances

    async def _dry_run(
        self, record: state_pb2.CaptureRecord, instances: builtins.list[state_pb2.InstanceRecord]
    ) -> captures_pb2.DryRunResult:
        present = await self.store.agents.list()
        snaplen = record.resource.properties.bytes_to_capture_per_packet
        out = captures_pb2.DryRunResult()
        for inst in instances:
            row = out.instances.add(id=inst.status.id, instance_id=inst.status.instance_id, connected=inst.instance_key in present)
            rate = self.dispatcher.interface_rate(inst.instance_key)
            if rate is None:
                continue
            row.measured = True
            row.interface_bytes_per_second, row.interface_packets_per_second = rate.bytes_per_s, rate.packets_per_s
            body = min(rate.bytes_per_s, rate.packets_per_s * snaplen) if snaplen else rate.bytes_per_s
            row.estimated_bytes_per_second = body + 16 * rate.packets_per_s
            out.estimated_bytes_per_second += row.estimated_bytes_per_second
        return out

    def dispatched_here(self, record: state_pb2.CaptureRecord) -> bool:
        """Whether this replica created the capture and so already sent its starts to the agents
        connected here (the dispatch watch need not read its instances again)."""
        return session_id(record) in self._dispatched

    def start_instance(self, record: state_pb2.CaptureRecord, inst: state_pb2.InstanceRecord) -> bool:
        """Sends the capture's start to the instance's agent, if it is connected here."""
        return self.dispatcher.send(inst.instance_key, start_message(record))

    async def stop(self, name: str, reason: str = StopReason.STOPPED_BY_USER) -> None:
        def mark(rec: state_pb2.CaptureRecord) -> bool:
            if rec.stop_requested:
                return False
            rec.stop_requested = reason
            rec.resource.etag = new_etag()
            return True

        known_name(name)
        record = await self.store.update_capture(name, mark)
        await self.send_stops(record)

    async def send_stops(self, record: state_pb2.CaptureRecord) -> None:
        """Sends the capture's stop to every unfinished instance whose agent is connected here;
        an instance that never started is stopped in its record."""
        name = record.resource.name
        present = None
        for inst in await self.store.get_instances(name):
            if st.is_final(inst.status):
                continue
            stop = fleet_pb2.CoordinatorMessage(
                stop=fleet_pb2.StopCapture(capture_name=name, capture_id=session_id(record), reason=record.stop_requested)
            )
            if self.dispatcher.send(inst.instance_key, stop) or inst.status.packet_capture_status != Status.NOT_STARTED:
                continue
            present = await self.store.agents.list() if present is None else present
            if inst.instance_key not in present:  # no replica has its agent: it will never start
                await finish_unstarted(self.store, name, inst.instance_key, record.stop_requested)

    async def delete(self, name: str) -> None:
        record = await self.captures.record(name)
        if not record.stop_requested:
            await self.stop(name, StopReason.DELETED)
        await self.store.delete_capture(name)
        log.info("capture %s deleted (files are kept)", name)
