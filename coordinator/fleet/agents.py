"""Agents' control sessions, as plain domain code (no gRPC): who is connected to this
replica, registering an agent under its etcd lease, and applying what its stream brings.

The servicer (fleet_servicer.py) only moves messages between the stream and a ControlSession.
"""
from __future__ import annotations

import asyncio
import logging

from fleetcap.coordinator.errors import FleetcapError, InvalidArgument, PermissionDenied
from fleetcap.coordinator.service import CaptureService
from fleetcap.coordinator.state import keys
from fleetcap.core.auth import Principal, Role
from fleetcap.core.naming import resource_id, utc_now
from fleetcap.v1 import fleet_pb2, state_pb2

log = logging.getLogger(__name__)

# Heartbeats come four times per lease, so one lost heartbeat never expires an agent; never
# more often than every 200 ms.
HEARTBEATS_PER_TTL = 4
MIN_HEARTBEAT_MS = 200


def check_identity(ident: fleet_pb2.AgentIdentity) -> None:
    """Raises InvalidArgument unless the identity names exactly one VM or scale-set instance."""
    if bool(ident.vm_name) == bool(ident.vmss_name):
        raise InvalidArgument("identity", "needs exactly one of vm_name or vmss_name")
    if ident.vmss_name and not ident.instance_id.isdigit():
        raise InvalidArgument("identity.instance_id", f"'{ident.instance_id}' must be a non-negative integer")
    for value in (ident.vm_name, ident.vmss_name, ident.resource_group, ident.subscription):
        if "/" in value:
            raise InvalidArgument("identity", f"'{value}' must not contain '/'")


def check_caller(principal: Principal | None, identity: fleet_pb2.AgentIdentity) -> None:
    """An agent speaks only for itself: a certificate's identity must be the one claimed.
    (A token of role agent, accepted only when the coordinator serves no TLS, on loopback, names
    no instance; docs/security.md.) Raises PermissionDenied."""
    if principal is None or Role.AGENT not in principal.roles:
        raise PermissionDenied("only an agent may use the fleet service")
    if principal.via == "certificate" and principal.agent_id.lower() != resource_id(identity).lower():
        raise PermissionDenied(f"the certificate of {principal.agent_id or principal.name} cannot speak for "
                               f"{resource_id(identity)}")


class AgentSession:
    """The coordinator's end of one agent's control stream: the messages waiting to go down."""

    def __init__(self, instance_key: str):
        self.instance_key = instance_key
        self.queue: asyncio.Queue[fleet_pb2.CoordinatorMessage | None] = asyncio.Queue()

    def close(self) -> None:
        self.queue.put_nowait(None)


class AgentSessions:
    """Agents connected to this replica; the Dispatcher the capture service sends through."""

    def __init__(self) -> None:
        self._by_key: dict[str, AgentSession] = {}

    def attach(self, session: AgentSession) -> None:
        old = self._by_key.get(session.instance_key)
        if old is not None:
            log.warning("agent %s connected again; closing its previous stream", session.instance_key)
            old.close()
        self._by_key[session.instance_key] = session

    def detach(self, session: AgentSession) -> None:
        if self._by_key.get(session.instance_key) is session:
            del self._by_key[session.instance_key]

    def connected(self, instance_key: str) -> bool:
        return instance_key in self._by_key

    def close(self, instance_key: str) -> None:
        session = self._by_key.pop(instance_key, None)
        if session is not None:
            session.close()

    def send(self, instance_key: str, message: fleet_pb2.CoordinatorMessage) -> bool:
        session = self._by_key.get(instance_key)
        if session is None:
            return False
        session.queue.put_nowait(message)
        return True


class ControlSession:
    """One agent's connection, from hello to goodbye.

    `open` registers the agent (its lease), applies its hello and returns the welcome;
    `handle` applies each later message; `close` detaches it. Raises InvalidArgument for a
    bad identity and StoreUnavailable when etcd cannot register it.
    """

    def __init__(self, service: CaptureService, sessions: AgentSessions, *, agent_ttl_s: int, replica: str):
        self.service = service
        self.sessions = sessions
        self.agent_ttl_s = agent_ttl_s
        self.replica = replica
        self.session: AgentSession | None = None
        self._record = state_pb2.AgentRecord()
        self._lease = 0

    @property
    def instance_key(self) -> str:
        return self.session.instance_key if self.session else ""

    async def open(self, hello: fleet_pb2.AgentHello, principal: Principal | None) -> fleet_pb2.Welcome:
        check_identity(hello.identity)
        check_caller(principal, hello.identity)
        key = keys.instance_key(hello.identity)
        self._record = state_pb2.AgentRecord(identity=hello.identity, hostname=hello.hostname,
                                             interface=hello.interface, addresses=hello.addresses,
                                             connected_time=utc_now(), coordinator=self.replica)
        self._lease = await self.service.store.register_agent(key, self._record, self.agent_ttl_s)
        self.session = AgentSession(key)
        self.sessions.attach(self.session)
        log.info("agent %s connected (%s, %s)", key, hello.hostname, ", ".join(hello.addresses))
        # The hello's reports are older than anything the stream brings after it, so they are
        # applied before the stream is read: applied concurrently, a hello written late could
        # overwrite a newer report (an upload that committed while the agent was connecting).
        # Messages this queues (starts, stops) go out after the welcome.
        await self.service.agent_connected(key, hello)
        return fleet_pb2.Welcome(
            instance_resource_id=resource_id(hello.identity),
            heartbeat_interval_ms=max(MIN_HEARTBEAT_MS, self.agent_ttl_s * 1000 // HEARTBEATS_PER_TTL))

    async def handle(self, message: fleet_pb2.AgentMessage) -> None:
        """Applies one message from the agent; a failure is logged, the stream goes on."""
        key = self.instance_key
        try:
            if message.HasField("heartbeat"):
                if not await self.service.store.refresh_agent(self._lease):
                    log.warning("agent %s: lease expired while connected; registering again", key)
                    self._lease = await self.service.store.register_agent(key, self._record, self.agent_ttl_s)
            elif message.HasField("progress"):
                await self.service.apply_progress(key, message.progress)
        except FleetcapError as e:
            log.warning("agent %s: could not apply %s: %s", key, message.WhichOneof("body"), e)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.sessions.detach(self.session)
            log.info("agent %s disconnected", self.session.instance_key)
