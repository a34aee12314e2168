"""Agents' control sessions, as plain domain code (no gRPC): who is connected to this
replica, registering an agent under its etcd lease, and applying what its stream brings.

The servicer (fleet_servicer.py) only moves messages between the stream and a ControlSession.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from fleetcap.coordinator.errors import FleetcapError, InvalidArgument, PermissionDenied, StoreUnavailable
from fleetcap.coordinator.fetch import InterfaceRate
from fleetcap.coordinator.fleet import reports
from fleetcap.coordinator.fleet.presence import Presence
from fleetcap.coordinator.state import keys
from fleetcap.coordinator.token_bucket import TokenBucket
from fleetcap.coordinator.usecases.common import being_cancelled
from fleetcap.coordinator.usecases.fleet_budget import FleetBudget
from fleetcap.coordinator.usecases.progress import ProgressIntake
from fleetcap.coordinator.usecases.reconcile import Reconciler
from fleetcap.core.auth import Principal, Role
from fleetcap.core.naming import resource_id, utc_now
from fleetcap.core.tasks import TaskSet
from fleetcap.v1 import captures_pb2, fleet_pb2, state_pb2

log = logging.getLogger(__name__)

# Clock probes answered per agent: one per 20 ms at most (an agent sends a burst of a few, 50 ms
# apart, once a minute).
CLOCK_PROBE_GAP_S = 0.02
# Heartbeats come four times per lease, so one lost heartbeat never expires an agent; never
# more often than every 200 ms.
HEARTBEATS_PER_TTL = 4
MIN_HEARTBEAT_MS = 200
# Progress that only moves counters (packets, bytes, drops, stored bytes) is written to etcd at
# most once per this many seconds per instance, and less often when many agents share this
# replica: at most COUNTER_WRITES_PER_S such writes a second in all. A change of state (status,
# stop reason, errors, a file opened, closed, hashed or stored) is written at once.
MIN_PERSIST_S = 1.0
COUNTER_WRITES_PER_S = 150
# A report etcd could not take is written again after this long (while the stream lasts; after
# it, the agent's next hello carries its state).
RETRY_REPORT_S = 1.0
# Changes of state one agent may write: a burst of CHANGE_BURST, then CHANGES_PER_S. A real
# agent's capture makes about five (started, stopped, hashed, uploaded, committed); a flood
# waits, the newest report of each capture kept, so etcd takes no more revisions than this.
CHANGE_BURST, CHANGES_PER_S = 20, 5.0
# Captures whose reports may wait at once: far more than one instance runs (each capture name
# is validated), so a flood of made-up names cannot grow the replica's memory.
MAX_PENDING_REPORTS = 1024


def counters_only(old: fleet_pb2.CaptureProgress | None, new: fleet_pb2.CaptureProgress) -> bool:
    """Whether `new` differs from `old` in its counters alone."""
    if old is None or (old.capture_name, old.capture_id) != (new.capture_name, new.capture_id):
        return False
    return _without_counters(old.status) == _without_counters(new.status)


def _without_counters(status: captures_pb2.InstanceStatus) -> captures_pb2.InstanceStatus:
    s = captures_pb2.InstanceStatus()
    s.CopyFrom(status)
    s.packets_captured = s.bytes_captured = s.kernel_drops = s.interface_drops = 0
    s.counters_time = ""
    for f in s.files:
        f.size_bytes = f.uploaded_bytes = 0
    return s


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
        raise PermissionDenied(f"the certificate of {principal.agent_id or principal.name} cannot speak for {resource_id(identity)}")


class AgentSession:
    """The coordinator's end of one agent's control stream: the messages waiting to go down."""

    def __init__(self, instance_key: str):
        self.instance_key = instance_key
        self.queue: asyncio.Queue[fleet_pb2.CoordinatorMessage | None] = asyncio.Queue()
        self.last_seen = asyncio.get_running_loop().time()
        self.silenced = False  # closed for a whole TTL of silence (presence.py)
        self._counters: tuple[float, fleet_pb2.InterfaceCounters] | None = None
        self.interface_rate: InterfaceRate | None = None  # over the last heartbeat interval

    def counters(self, at: float, c: fleet_pb2.InterfaceCounters) -> None:
        """A heartbeat's interface counters: the rate since the previous heartbeat's."""
        last, self._counters = self._counters, (at, c)
        if last is None or at <= last[0]:
            return
        dt, p = at - last[0], last[1]
        db = c.rx_bytes + c.tx_bytes - p.rx_bytes - p.tx_bytes
        dp = c.rx_packets + c.tx_packets - p.rx_packets - p.tx_packets
        if db < 0 or dp < 0:  # counters reset (an interface recreated): measure again
            self.interface_rate = None
            return
        self.interface_rate = InterfaceRate(round(db / dt), round(dp / dt))

    def close(self) -> None:
        self.queue.put_nowait(None)


class AgentSessions:
    """Agents connected to this replica; the Dispatcher the capture service sends through."""

    def __init__(self) -> None:
        self._by_key: dict[str, AgentSession] = {}

    def interface_rate(self, instance_key: str) -> InterfaceRate | None:
        """The capture interface's recent traffic of an agent connected here; None otherwise."""
        session = self._by_key.get(instance_key)
        return session.interface_rate if session is not None else None

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

    def __len__(self) -> int:
        return len(self._by_key)

    def silent(self, ttl_s: float) -> list[str]:
        """Closes the streams of agents that sent nothing for ttl_s seconds (a network cut the
        stream has not noticed); returns their keys."""
        now = asyncio.get_running_loop().time()
        gone = [s for s in self._by_key.values() if now - s.last_seen > ttl_s]
        for s in gone:
            s.silenced = True
            self.close(s.instance_key)
        return [s.instance_key for s in gone]

    def persist_interval(self) -> float:
        """Seconds between counter-only progress writes of one instance (see COUNTER_WRITES_PER_S)."""
        return max(MIN_PERSIST_S, len(self._by_key) / COUNTER_WRITES_PER_S)

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

    def __init__(
        self,
        progress: ProgressIntake,
        reconciler: Reconciler,
        budget: FleetBudget,
        sessions: AgentSessions,
        presence: Presence,
        *,
        agent_ttl_s: int,
        replica: str,
    ):
        self.progress = progress
        self.reconciler = reconciler
        self.budget = budget
        self.sessions = sessions
        self.presence = presence
        self.agent_ttl_s = agent_ttl_s
        self.replica = replica
        self.session: AgentSession | None = None
        self._record = state_pb2.AgentRecord()
        # Progress is applied by one writer task, apart from the stream's reading: a slow etcd
        # delays reports (the newest per capture replaces an older one still waiting), never
        # heartbeats, so a live agent is never expired for it.
        self._pending: dict[str, fleet_pb2.CaptureProgress] = {}
        self._written: dict[str, tuple[float, fleet_pb2.CaptureProgress]] = {}
        self._wake = asyncio.Event()
        self._changes = TokenBucket(CHANGE_BURST, CHANGES_PER_S)
        self._writer: asyncio.Task[None] | None = None
        self._last_probe = -CLOCK_PROBE_GAP_S
        self._tasks = TaskSet("budget exchange", log, expected=(FleetcapError,))

    @property
    def instance_key(self) -> str:
        return self.session.instance_key if self.session else ""

    async def open(self, hello: fleet_pb2.AgentHello, principal: Principal | None) -> fleet_pb2.Welcome:
        check_identity(hello.identity)
        check_caller(principal, hello.identity)
        try:
            reports.check_hello(hello)
        except reports.ReportRefused as e:
            raise InvalidArgument("hello", str(e)) from None
        key = keys.instance_key(hello.identity)
        self._record = state_pb2.AgentRecord(
            identity=hello.identity,
            hostname=hello.hostname,
            interface=hello.interface,
            addresses=hello.addresses,
            connected_time=utc_now(),
            coordinator=self.replica,
        )
        await self.presence.register(key, self._record)
        self.session = AgentSession(key)
        self.sessions.attach(self.session)
        log.info("agent %s connected (%s, %s)", key, hello.hostname, ", ".join(hello.addresses))
        # The hello's reports are older than anything the stream brings after it, so they are
        # applied before the stream is read: applied concurrently, a hello written late could
        # overwrite a newer report (an upload that committed while the agent was connecting).
        # Messages this queues (starts, stops) go out after the welcome.
        await self.reconciler.agent_connected(key, hello)
        return fleet_pb2.Welcome(
            instance_resource_id=resource_id(hello.identity),
            heartbeat_interval_ms=max(MIN_HEARTBEAT_MS, self.agent_ttl_s * 1000 // HEARTBEATS_PER_TTL),
        )

    async def handle(self, message: fleet_pb2.AgentMessage) -> None:
        """Applies one message from the agent; a failure is logged, the stream goes on."""
        key = self.instance_key
        if self.session is not None:
            self.session.last_seen = asyncio.get_running_loop().time()  # a heartbeat is just this
            if message.HasField("heartbeat") and message.heartbeat.HasField("counters"):
                self.session.counters(self.session.last_seen, message.heartbeat.counters)
        try:
            if message.HasField("clock_probe"):
                self._echo(message.clock_probe)
            elif message.HasField("budget_request"):
                self._background(self.budget.request(key, message.budget_request))
            elif message.HasField("budget_return"):
                self._background(self.budget.give_back(key, message.budget_return))
            elif message.HasField("progress"):
                try:
                    reports.check_progress(message.progress)
                except reports.ReportRefused as e:
                    log.warning("agent %s: report refused: %s", key, e)
                    return
                if message.progress.capture_name not in self._pending and len(self._pending) >= MAX_PENDING_REPORTS:
                    log.warning(
                        "agent %s: more than %d captures' reports waiting; report of %s refused",
                        key,
                        MAX_PENDING_REPORTS,
                        message.progress.capture_name,
                    )
                    return
                self._pending[message.progress.capture_name] = message.progress
                self._wake.set()
                if self._writer is None:
                    self._writer = asyncio.ensure_future(self._write_progress())
        except FleetcapError as e:
            log.warning("agent %s: could not apply %s: %s", key, message.WhichOneof("body"), e)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs a budget exchange beside the stream (it may wait for idle agents to give back);
        the task is kept until it ends, and its failure logged."""
        self._tasks.start(work, detail=f"agent {self.instance_key}")

    def _echo(self, probe: fleet_pb2.ClockProbe) -> None:
        """Answers a clock probe at once (the agent measures its offset from it); more than one
        per CLOCK_PROBE_GAP_S is ignored, so a probing agent costs next to nothing."""
        received = time.time_ns()
        now = time.monotonic()
        if now - self._last_probe < CLOCK_PROBE_GAP_S:
            return
        self._last_probe = now
        self.sessions.send(
            self.instance_key,
            fleet_pb2.CoordinatorMessage(
                clock_echo=fleet_pb2.ClockEcho(
                    seq=probe.seq, agent_send_ns=probe.agent_send_ns, coordinator_receive_ns=received, coordinator_send_ns=time.time_ns()
                )
            ),
        )

    async def _write_progress(self) -> None:
        """Applies the newest report of each capture: a change of state at once, counters at
        most every sessions.persist_interval() seconds."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            next_due = None
            for name in list(self._pending):
                # The newest report of each capture as it is now, not as it was when the loop
                # began: an await below (a slow etcd) lets newer reports in, and a stale one
                # taken from a snapshot deleted the newer one unwritten. That lost agents' final
                # Stopped reports for good (bench/chaos_soak.py, an etcd restart).
                progress = self._pending.get(name)
                if progress is None:
                    continue
                last = self._written.get(name)
                due = last[0] + self.sessions.persist_interval() if last else 0.0
                if counters_only(last[1] if last else None, progress) and loop.time() < due:
                    next_due = due if next_due is None else min(next_due, due)
                    continue
                # Changes of state at once, but no faster than the agent's share: a flood of
                # them waits here, the newest kept, instead of becoming etcd revisions.
                allowed = self._changes.when(loop.time())
                if allowed > loop.time():
                    next_due = allowed if next_due is None else min(next_due, allowed)
                    continue
                del self._pending[name]
                try:
                    await self.progress.apply_progress(self.instance_key, progress)
                    self._written[name] = (loop.time(), progress)
                except (asyncio.CancelledError, StoreUnavailable) as e:
                    # etcd away (or a call cancelled under us): the report waits and is written
                    # again, unless a newer one came meanwhile. Dropped, an agent's last word
                    # (Stopped) was lost for good while its stream stayed up (bench/chaos_soak.py).
                    if isinstance(e, asyncio.CancelledError) and being_cancelled():
                        raise  # the stream closed: flush() writes what waits
                    next_due = self._retry(loop, name, progress, str(e) or "an etcd call was cancelled", next_due)
                except FleetcapError as e:
                    log.warning("agent %s: could not apply progress of %s: %s", self.instance_key, name, e)
                except Exception:  # never lose the writer to one bad report
                    log.exception("agent %s: progress of %s", self.instance_key, name)
            if next_due is not None:
                loop.call_at(next_due, self._wake.set)

    def _retry(
        self, loop: asyncio.AbstractEventLoop, name: str, progress: fleet_pb2.CaptureProgress, why: str, next_due: float | None
    ) -> float:
        """Puts a report back (unless a newer one replaced it); returns the writer's next wake."""
        if name not in self._pending:
            self._pending[name] = progress
        log.warning("agent %s: progress of %s not written (%s); retrying in %g s", self.instance_key, name, why, RETRY_REPORT_S)
        at = loop.time() + RETRY_REPORT_S
        return at if next_due is None else min(next_due, at)

    async def flush(self) -> None:
        """Writes every report still waiting (the stream ended): the last word of an agent that
        goes away is never lost to the counter rate."""
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        for name, progress in list(self._pending.items()):
            del self._pending[name]
            try:
                await self.progress.apply_progress(self.instance_key, progress)
            except FleetcapError as e:
                log.warning("agent %s: could not apply progress of %s: %s", self.instance_key, name, e)

    def close(self) -> None:
        self._tasks.cancel()
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        if self.session is not None:
            self.session.close()
            self.sessions.detach(self.session)
            # A cut agent was silent for a whole TTL already; one that hung up gets a TTL to return.
            self.presence.release(self.session.instance_key, self._record, after_s=0 if self.session.silenced else self.agent_ttl_s)
            log.info("agent %s disconnected", self.session.instance_key)
