"""Agent expiry: an agent record removed (its replica judged it gone, or the replica's lease
expired with the replica) means the agent is gone (presence.py)."""

from __future__ import annotations

import asyncio
import logging

from fleetcap.coordinator.fleet.agents import AgentSessions
from fleetcap.coordinator.state.store import Store, WatchKind
from fleetcap.coordinator.usecases.reconcile import Reconciler

log = logging.getLogger(__name__)

# After an interrupted watch (etcd restarting), wait this long before watching again.
REWATCH_S = 1.0


async def watch_agent_expiry(store: Store, reconciler: Reconciler, sessions: AgentSessions, leading: asyncio.Event) -> None:
    """Runs for ever. No heartbeat for a whole lease: the agent is gone or cut off, even if its
    TCP stream has not timed out yet. Its stream is closed here so that it reconnects afresh
    (its report then revives what it still has: AgentStopped recovers), and the leader fails
    its unfinished captures."""
    rewatch = False
    while True:
        try:
            async for event in store.agents.watch():
                if event.kind == WatchKind.READY and rewatch and leading.is_set():
                    # Watching again (etcd restarted): an agent that left while no watch ran
                    # came as no event; its unfinished captures are failed now.
                    await reconciler.reconcile_absent_agents("the agent's lease expired while etcd was away")
                if event.kind != WatchKind.DELETE:
                    continue
                sessions.close(event.instance_key)
                if leading.is_set():
                    log.warning("agent %s: lease expired", event.instance_key)
                    await reconciler.agent_lost(event.instance_key)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # etcd restarting: watch again
            log.warning("agent watch interrupted (%s); watching again", e)
            rewatch = True
            await asyncio.sleep(REWATCH_S)
