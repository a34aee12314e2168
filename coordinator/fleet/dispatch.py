"""Dispatch by watch: every replica starts and stops the captures of the agents connected to
it, whichever replica took the API call, by following the capture records in etcd."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fleetcap.coordinator.fleet.agents import AgentSessions
from fleetcap.coordinator.state.store import Store, WatchKind
from fleetcap.coordinator.usecases.lifecycle import Lifecycle
from fleetcap.coordinator.usecases.recorder import FlightRecorder
from fleetcap.core.vocabulary import Status
from fleetcap.v1 import fleet_pb2, state_pb2

log = logging.getLogger(__name__)

# After an interrupted watch (etcd restarting), wait this long before watching again.
REWATCH_S = 1.0


async def _follow_captures(store: Store, lifecycle: Lifecycle, recorder: FlightRecorder, sessions: AgentSessions) -> None:
    # The capture record is written last, as the commit point of a create: its PUT is when the
    # instances may start. A later PUT with stop_requested is when they must stop. Agents
    # ignore a repeated command, so the replica that served the call may also send it at once.
    async for event in store.watch_captures():
        if event.kind == WatchKind.READY:
            # Watching (again): a change made while no watch ran (etcd restarting) came as no
            # event, so every record is read once. A stop in that gap was never sent to the
            # agents here otherwise (found by bench/chaos_soak.py); what the watch now also
            # brings is sent twice, and agents ignore the repeat.
            for record in await store.list_captures():
                await _dispatch(store, lifecycle, recorder, sessions, record)
        elif event.kind == WatchKind.PUT and event.record is not None:
            await _dispatch(store, lifecycle, recorder, sessions, event.record)


async def _dispatch(
    store: Store, lifecycle: Lifecycle, recorder: FlightRecorder, sessions: AgentSessions, record: state_pb2.CaptureRecord
) -> None:
    """What a capture record asks of the agents connected here: stop, trigger or start."""
    if not any(sessions.connected(k) for k in record.instance_keys):
        return
    if record.stop_requested:
        await lifecycle.send_stops(record)
        return
    if record.trigger_time:  # a flight recorder's trigger, taken by any replica
        await recorder.send_triggers(record)
        return
    if lifecycle.dispatched_here(record):
        return  # its create sent the starts; an agent that connected since is started on its hello
    for inst in await store.get_instances(record.resource.name):
        if inst.status.packet_capture_status == Status.NOT_STARTED and sessions.connected(inst.instance_key):
            lifecycle.start_instance(record, inst)


async def _follow_fetches(store: Store, sessions: AgentSessions) -> None:
    # A download on any replica asks for a file that only its instance holds (fetch.py): the
    # replica holding that agent's control stream passes the request on. The agent ignores a
    # fetch it already serves, so the downloading replica may also have sent it at once.
    async for fetch in store.fetches.watch():
        if fetch is not None:
            sessions.send(
                fetch.instance_key,
                fleet_pb2.CoordinatorMessage(
                    fetch=fleet_pb2.FetchFile(
                        capture_name=fetch.capture_name, capture_id=fetch.capture_id, file_path=fetch.file_path, fetch_id=fetch.fetch_id
                    )
                ),
            )


async def _forever(what: str, follow: Callable[[], Awaitable[None]]) -> None:
    while True:
        try:
            await follow()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # etcd restarting: watch again
            log.warning("%s watch interrupted (%s); watching again", what, e)
            await asyncio.sleep(REWATCH_S)


async def dispatch_by_watch(store: Store, lifecycle: Lifecycle, recorder: FlightRecorder, sessions: AgentSessions) -> None:
    """Runs for ever, watching again after an interruption."""
    await asyncio.gather(
        _forever("dispatch", lambda: _follow_captures(store, lifecycle, recorder, sessions)),
        _forever("fetch", lambda: _follow_fetches(store, sessions)),
    )
