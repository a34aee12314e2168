"""Agents coming and going: a (re)connected agent reconciled, a lost one's instances failed, new scale-set instances joined."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from fleetcap.coordinator import status as st
from fleetcap.coordinator.errors import (
    FleetcapError,
)
from fleetcap.coordinator.fetch import Dispatcher
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.storage.sink import Sink
from fleetcap.coordinator.usecases.common import (
    finish_unstarted,
    start_message,
    storage_uri,
    trigger_message,
)
from fleetcap.core.naming import resource_id
from fleetcap.core.vocabulary import CaptureError, Status, StopReason, is_terminal
from fleetcap.v1 import captures_pb2, fleet_pb2, state_pb2

log = logging.getLogger(__name__)


class Reconciler:
    """Brings instance records and agents in step whenever an agent connects, or is found gone."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        sinks: Mapping[str, Sink],
        progress: Callable[[str, fleet_pb2.CaptureProgress], Awaitable[None]],
    ):
        self.store = store
        self.dispatcher = dispatcher
        self.sinks = sinks
        self.apply_progress = progress

    async def agent_connected(self, instance_key: str, hello: fleet_pb2.AgentHello) -> None:
        """Reconciles an agent that (re)connected: applies what it reports, starts what it
        should run, stops what should no longer run, and fails what it has lost."""
        reported = {p.capture_name: p for p in hello.captures}
        for progress in hello.captures:
            await self.apply_progress(instance_key, progress)
        for record in await self.store.list_captures():
            if instance_key not in record.instance_keys:
                await self._maybe_join(record, instance_key, hello.identity)
                continue
            name = record.resource.name
            # This instance's record only: reading all 1,000 of a scale set's, for every capture
            # and every hello, made a replica's reconnect storm (500 agents moving over from a
            # killed replica) a minute of saturated CPU in which live agents were judged silent
            # (bench/chaos_soak.py).
            inst = await self.store.get_instance(name, instance_key)
            if inst is None or st.is_final(inst.status):
                continue
            if name in reported:
                if record.stop_requested:
                    self.dispatcher.send(
                        instance_key,
                        fleet_pb2.CoordinatorMessage(
                            stop=fleet_pb2.StopCapture(
                                capture_name=name, capture_id=reported[name].capture_id, reason=record.stop_requested
                            )
                        ),
                    )
                elif record.trigger_time:
                    self.dispatcher.send(instance_key, trigger_message(record))
            elif inst.status.packet_capture_status == Status.NOT_STARTED:
                if record.stop_requested:
                    await finish_unstarted(self.store, name, instance_key, record.stop_requested)
                else:
                    self.dispatcher.send(instance_key, start_message(record))
                    if record.trigger_time:  # armed late: it keeps what it can of the window
                        self.dispatcher.send(instance_key, trigger_message(record))
            else:
                await self.fail_instance(
                    name, instance_key, CaptureError.AGENT_STOPPED, "the agent restarted and has no record of this capture"
                )

    async def reconcile_absent_agents(self, why: str = "the agent did not reconnect after the coordinator restarted") -> None:
        """After a coordinator (re)start and one lease period, or an interrupted agent watch: an
        instance still running whose agent is not registered is lost (its lease expired while
        nobody watched)."""
        present = set(await self.store.agents.list())
        for record in await self.store.list_captures():
            for key in record.instance_keys:
                if key not in present:
                    await self.fail_instance(record.resource.name, key, CaptureError.AGENT_STOPPED, why)

    async def _maybe_join(self, record: state_pb2.CaptureRecord, instance_key: str, identity: fleet_pb2.AgentIdentity) -> None:
        """addNewInstances: a new instance of the captured scale set joins a running capture."""
        p = record.resource.properties
        instance_id = resource_id(identity)
        if (
            not p.add_new_instances
            or record.stop_requested
            or p.scope.include
            or instance_id in p.scope.exclude
            or not identity.vmss_name
            or instance_id.rsplit("/virtualMachines/", 1)[0].lower() != p.target.lower()
        ):
            return
        statuses = [i.status.packet_capture_status for i in await self.store.get_instances(record.resource.name)]
        if statuses and all(is_terminal(s) for s in statuses):
            return  # the capture is over
        status = captures_pb2.InstanceStatus(id=instance_id, instance_id=identity.instance_id, packet_capture_status=Status.NOT_STARTED)
        if not p.HasField("continuous_capture"):
            status.files.add(file_path=record.local_path, storage_path=storage_uri(self.sinks, record, identity, record.local_path))
        inst = state_pb2.InstanceRecord(instance_key=instance_key, identity=identity, status=status)

        def join(rec: state_pb2.CaptureRecord) -> bool:
            if instance_key in rec.instance_keys or rec.stop_requested:
                return False
            rec.instance_keys.append(instance_key)
            return True

        await self.store.put_instance(record.resource.name, inst)
        updated = await self.store.update_capture(record.resource.name, join)
        if instance_key in updated.instance_keys and not updated.stop_requested:
            log.info("instance %s joined capture %s (addNewInstances)", instance_key, record.resource.name)
            self.dispatcher.send(instance_key, start_message(updated))

    async def agent_lost(self, instance_key: str) -> None:
        """The agent's lease expired: every capture it had not finished is in error."""
        for record in await self.store.list_captures():
            if instance_key in record.instance_keys:
                await self.fail_instance(
                    record.resource.name,
                    instance_key,
                    CaptureError.AGENT_STOPPED,
                    "the agent stopped sending heartbeats and its lease expired",
                )

    async def fail_instance(self, name: str, instance_key: str, error: str, message: str) -> None:
        failed = [False]

        def fail(rec: state_pb2.InstanceRecord) -> bool:
            s = rec.status
            if st.is_final(s):
                return False
            s.packet_capture_status = Status.ERROR
            s.stop_reason = StopReason.AGENT_STOPPED if error == CaptureError.AGENT_STOPPED else StopReason.CAPTURE_FAILED
            s.packet_capture_error[:] = [error]
            s.error_message = message
            failed[0] = True
            return True

        try:
            await self.store.update_instance(name, instance_key, fail)
            if failed[0]:  # (an instance already finished is left as it is, and not logged)
                log.warning("capture %s on %s: %s (%s)", name, instance_key, error, message)
        except FleetcapError:
            pass  # the capture was deleted meanwhile
