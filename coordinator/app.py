"""`fleetcap coordinator`: wires settings, state, sinks, services and servers, and runs them."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket

from clients import grpc_transport
from clients.metrics import serve_http
from coordinator.api.capture_servicer import CaptureServicer
from coordinator.errors import FleetcapError
from coordinator.fleet.fleet_servicer import AgentSessions, FleetServicer, add_fleet_servicer
from coordinator.metrics import CoordinatorMetrics
from coordinator.service import LOCAL_ACCOUNT, CaptureService, ServiceConfig  # noqa: F401 (ServiceConfig for the CLI)
from coordinator.state import keys
from coordinator.state.embedded_etcd import EmbeddedEtcd
from coordinator.state.etcd_store import EtcdKV
from coordinator.state.memory_store import MemoryKV
from coordinator.state.store import Store, decode
from fleetcap.v1 import state_pb2
from coordinator.storage.blob_sink import BlobSink
from coordinator.storage.local_sink import LocalSink
from coordinator.storage.sink import Sink
from fleetcap.v1 import captures_pb2_grpc

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CoordinatorSettings:
    listen: tuple[str, ...] = ("127.0.0.1:7770",)
    """Addresses to serve both the API and the fleet on: host:port or unix:/path."""
    etcd: tuple[str, ...] = ()
    """etcd endpoints (host:port). Empty = start an embedded single-node etcd in data_dir."""
    store: str = "etcd"
    """"etcd", or "memory" for a throwaway coordinator without durable state."""
    data_dir: str = "/var/lib/fleetcap"
    """Holds the embedded etcd and, by default, the storage directory."""
    storage_dir: str = ""
    """Directory of the built-in storage account "local"; empty = data_dir/storage."""
    agent_ttl_s: int = 10
    """Lease of an agent's registration: a silent agent is declared stopped after this."""
    storage_accounts: tuple[tuple[str, str], ...] = ()
    """Azure Blob storage accounts: (name, connection string). "local" is always there."""
    service: ServiceConfig = ServiceConfig()
    metrics_listen: str = ""
    """HOST:PORT of the Prometheus /metrics endpoint; empty = none."""


async def serve(settings: CoordinatorSettings, ready: asyncio.Event | None = None) -> None:
    embedded = None
    if settings.store == "memory":
        kv = MemoryKV()
    else:
        endpoints = list(settings.etcd)
        if not endpoints:
            embedded = await asyncio.to_thread(EmbeddedEtcd(os.path.join(settings.data_dir, "etcd")).start)
            endpoints = [embedded.endpoint]
            log.info("embedded etcd at %s", embedded.endpoint)
        kv = EtcdKV(endpoints)
    store = Store(kv)
    sessions = AgentSessions()
    sinks: dict[str, Sink] = {LOCAL_ACCOUNT: LocalSink(settings.storage_dir or os.path.join(settings.data_dir, "storage"))}
    for name, connection_string in settings.storage_accounts:
        sinks[name] = BlobSink(connection_string)
    service = CaptureService(store, sessions, sinks, settings.service)
    replica = f"{socket.gethostname()}:{os.getpid()}"

    server = grpc_transport.aio_server()
    metrics = CoordinatorMetrics()
    captures_pb2_grpc.add_PacketCapturesServicer_to_server(CaptureServicer(service, metrics), server)
    add_fleet_servicer(
        FleetServicer(service, sessions, agent_ttl_s=settings.agent_ttl_s, replica=replica, metrics=metrics), server)
    for address in settings.listen:
        if address.startswith("unix:"):
            path = address[len("unix:"):]
            if os.path.exists(path):
                os.unlink(path)  # a socket left by a previous run
        port = grpc_transport.add_listen(server, address)
        log.info("listening on %s", address if address.startswith("unix:") else f"{address.rsplit(':', 1)[0]}:{port}")
    await server.start()
    metrics_server = None
    if settings.metrics_listen:
        host, _, port = settings.metrics_listen.rpartition(":")
        metrics_server = await serve_http(metrics.registry, host or "127.0.0.1", int(port),
                                          before_scrape=lambda: metrics.refresh(service))
        log.info("metrics on http://%s:%d/metrics", *metrics_server.sockets[0].getsockname()[:2])

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    leading = asyncio.Event()
    tasks = [asyncio.ensure_future(_watch_agent_expiry(store, service, sessions, leading)),
             asyncio.ensure_future(_lead(store, service, replica, leading, settings.agent_ttl_s)),
             asyncio.ensure_future(_dispatch_by_watch(store, service, sessions))]
    if ready:
        ready.set()
    print(f"fleetcap coordinator ready on {', '.join(settings.listen)}", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        for t in tasks:
            t.cancel()
        if metrics_server is not None:
            metrics_server.close()
        await server.stop(grace=2)
        await store.close()
        if embedded:
            embedded.stop()


LEADER_TTL_S = 3


async def _lead(store: Store, service: CaptureService, replica: str, leading: asyncio.Event, agent_ttl_s: int) -> None:
    """Leader election on an etcd lease. The leader does the time-based work: failing the
    instances of agents whose leases expire, and, once on taking office, of agents that did not
    come back. Any replica serves the API and its own agents. A dead leader's lease expires
    within LEADER_TTL_S and another replica takes over."""
    while True:
        try:
            lease = await store.try_lead(replica, LEADER_TTL_S)
            if not lease:
                await asyncio.sleep(LEADER_TTL_S / 3)
                continue
            log.info("%s became the leader", replica)
            leading.set()
            asyncio.get_running_loop().call_later(agent_ttl_s * 2, lambda: asyncio.ensure_future(
                _reconcile(service)))
            while await store.refresh_agent(lease):
                await asyncio.sleep(LEADER_TTL_S / 3)
            log.warning("%s lost the leadership", replica)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # etcd unreachable: not the leader until it is back
            log.warning("leader election: %s", e)
            await asyncio.sleep(1)
        leading.clear()


async def _reconcile(service: CaptureService) -> None:
    try:
        await service.reconcile_absent_agents()
    except FleetcapError as e:
        log.warning("reconciliation failed: %s", e)


async def _watch_agent_expiry(store: Store, service: CaptureService, sessions: AgentSessions,
                              leading: asyncio.Event) -> None:
    """An agent record deleted by lease expiry means the agent is gone: fail its captures."""
    while True:
        try:
            async for event in store.watch(keys.AGENTS):
                key = event.key[len(keys.AGENTS):]
                if event.kind == "DELETE":
                    # No heartbeat for a whole lease: the agent is gone or cut off, even if its TCP
                    # stream has not timed out yet. Its stream is closed so that it reconnects
                    # afresh; its report then revives what it still has (AgentStopped recovers).
                    sessions.close(key)
                    if leading.is_set():
                        log.warning("agent %s: lease expired", key)
                        await service.agent_lost(key)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # etcd restarting: watch again
            log.warning("agent watch interrupted (%s); watching again", e)
            await asyncio.sleep(1)


async def _dispatch_by_watch(store: Store, service: CaptureService, sessions: AgentSessions) -> None:
    """Every replica starts and stops the captures of the agents connected to it, whichever
    replica took the API call: it follows the capture records in etcd. Agents
    ignore a repeated command, so the replica that served the call may also send it at once."""
    async def captures() -> None:
        # The capture record is written last, as the commit point of a create: its PUT is when
        # the instances may start. A later PUT with stop_requested is when they must stop.
        async for event in store.watch(keys.CAPTURES):
            if event.kind != "PUT":
                continue
            record = decode(state_pb2.CaptureRecord, event.value)
            if not any(sessions.connected(k) for k in record.instance_keys):
                continue
            if record.stop_requested:
                await service.send_stops(record)
                continue
            for inst in await store.get_instances(record.resource.name):
                if inst.status.packet_capture_status == "NotStarted" and sessions.connected(inst.instance_key):
                    service.start_instance(record, inst)

    while True:
        try:
            await captures()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # etcd restarting: watch again
            log.warning("dispatch watch interrupted (%s); watching again", e)
            await asyncio.sleep(1)
