"""Leader election among coordinator replicas, on an etcd lease.

The leader does the time-based work: failing the instances of agents whose leases expire
(fleet/expiry.py), and, once on taking office, of agents that did not come back. Any replica
serves the API and its own agents. A dead leader's lease expires within LEADER_TTL_S and
another replica takes over.
"""

from __future__ import annotations

import asyncio
import logging

from fleetcap.coordinator.errors import FleetcapError
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.usecases.reconcile import Reconciler
from fleetcap.core.tasks import TaskSet

log = logging.getLogger(__name__)

# Short, so that a leader's death costs seconds of expiry work; the lease is refreshed three
# times per TTL.
LEADER_TTL_S = 3
# Agents that were connected before a leader (re)started get two of their own lease periods
# to come back before their captures are declared lost.
RECONCILE_AFTER_TTLS = 2


async def lead(store: Store, reconciler: Reconciler, replica: str, leading: asyncio.Event, agent_ttl_s: int) -> None:
    """Runs for ever: tries to lead, and while leading keeps `leading` set."""
    reconciles = TaskSet("reconciling absent agents", log, expected=(FleetcapError,))
    try:
        await _lead(store, reconciler, replica, leading, agent_ttl_s, reconciles)
    finally:
        await reconciles.close()


async def _lead(store: Store, reconciler: Reconciler, replica: str, leading: asyncio.Event, agent_ttl_s: int, reconciles: TaskSet) -> None:
    while True:
        try:
            lease = await store.leases.try_lead(replica, LEADER_TTL_S)
            if not lease:
                await asyncio.sleep(LEADER_TTL_S / 3)
                continue
            log.info("%s became the leader", replica)
            leading.set()
            asyncio.get_running_loop().call_later(agent_ttl_s * RECONCILE_AFTER_TTLS, lambda: reconciles.start(_reconcile(reconciler)))
            while True:  # keep the lease alive, three refreshes per TTL
                if not await store.leases.refresh(lease):
                    break
                await asyncio.sleep(LEADER_TTL_S / 3)
            log.warning("%s lost the leadership", replica)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # etcd unreachable: not the leader until it is back
            log.warning("leader election: %s", e)
            await asyncio.sleep(1)
        leading.clear()


async def _reconcile(reconciler: Reconciler) -> None:
    try:
        await reconciler.reconcile_absent_agents()
    except FleetcapError as e:
        log.warning("reconciliation failed: %s", e)
