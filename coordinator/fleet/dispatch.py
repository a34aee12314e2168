"""Dispatch by watch: every replica starts and stops the captures of the agents connected to
it, whichever replica took the API call, by following the capture records in etcd."""
from __future__ import annotations

import asyncio
import logging

from fleetcap.coordinator.fleet.agents import AgentSessions
from fleetcap.coordinator.service import CaptureService
from fleetcap.coordinator.state.store import Store, WatchKind
from fleetcap.core.vocabulary import Status

log = logging.getLogger(__name__)

# After an interrupted watch (etcd restarting), wait this long before watching again.
REWATCH_S = 1.0


async def _follow_captures(store: Store, service: CaptureService, sessions: AgentSessions) -> None:
    # The capture record is written last, as the commit point of a create: its PUT is when the
    # instances may start. A later PUT with stop_requested is when they must stop. Agents
    # ignore a repeated command, so the replica that served the call may also send it at once.
    async for event in store.watch_captures():
        record = event.record
        if event.kind != WatchKind.PUT or record is None:
            continue
        if not any(sessions.connected(k) for k in record.instance_keys):
            continue
        if record.stop_requested:
            await service.send_stops(record)
            continue
        for inst in await store.get_instances(record.resource.name):
            if inst.status.packet_capture_status == Status.NOT_STARTED and sessions.connected(inst.instance_key):
                service.start_instance(record, inst)


async def dispatch_by_watch(store: Store, service: CaptureService, sessions: AgentSessions) -> None:
    """Runs for ever, watching again after an interruption."""
    while True:
        try:
            await _follow_captures(store, service, sessions)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # etcd restarting: watch again
            log.warning("dispatch watch interrupted (%s); watching again", e)
            await asyncio.sleep(REWATCH_S)
