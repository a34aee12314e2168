"""`fleetcap coordinator`: wires settings, state, sinks, services and servers, and runs them."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket

from clients import grpc_transport
from coordinator.api.capture_servicer import CaptureServicer
from coordinator.errors import FleetcapError
from coordinator.fleet.fleet_servicer import AgentSessions, FleetServicer
from coordinator.service import LOCAL_ACCOUNT, CaptureService, ServiceConfig  # noqa: F401 (ServiceConfig for the CLI)
from coordinator.state import keys
from coordinator.state.embedded_etcd import EmbeddedEtcd
from coordinator.state.etcd_store import EtcdKV
from coordinator.state.memory_store import MemoryKV
from coordinator.state.store import Store
from coordinator.storage.blob_sink import BlobSink
from coordinator.storage.local_sink import LocalSink
from coordinator.storage.sink import Sink
from fleetcap.v1 import captures_pb2_grpc, fleet_pb2_grpc

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
    captures_pb2_grpc.add_PacketCapturesServicer_to_server(CaptureServicer(service), server)
    fleet_pb2_grpc.add_FleetServicer_to_server(
        FleetServicer(service, sessions, agent_ttl_s=settings.agent_ttl_s, replica=replica), server)
    for address in settings.listen:
        if address.startswith("unix:"):
            path = address[len("unix:"):]
            if os.path.exists(path):
                os.unlink(path)  # a socket left by a previous run
        port = grpc_transport.add_listen(server, address)
        log.info("listening on %s", address if address.startswith("unix:") else f"{address.rsplit(':', 1)[0]}:{port}")
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    expiry = asyncio.ensure_future(_watch_agent_expiry(store, service, sessions))
    reconcile = asyncio.ensure_future(_reconcile_later(service, settings.agent_ttl_s * 2))
    if ready:
        ready.set()
    print(f"fleetcap coordinator ready on {', '.join(settings.listen)}", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        expiry.cancel()
        reconcile.cancel()
        await server.stop(grace=2)
        await store.close()
        if embedded:
            embedded.stop()


async def _reconcile_later(service: CaptureService, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    try:
        await service.reconcile_absent_agents()
    except FleetcapError as e:
        log.warning("reconciliation after start failed: %s", e)


async def _watch_agent_expiry(store: Store, service: CaptureService, sessions: AgentSessions) -> None:
    """An agent record deleted by lease expiry means the agent is gone: fail its captures."""
    while True:
        try:
            async for event in store.watch(keys.AGENTS):
                key = event.key[len(keys.AGENTS):]
                if event.kind == "DELETE":
                    # No heartbeat for a whole lease: the agent is gone or cut off, even if its TCP
                    # stream has not timed out yet. Its stream is closed so that it reconnects
                    # afresh; its report then revives what it still has (AgentStopped recovers).
                    log.warning("agent %s: lease expired", key)
                    sessions.close(key)
                    await service.agent_lost(key)
        except asyncio.CancelledError:
            raise
        except (FleetcapError, Exception) as e:  # etcd restarting: watch again
            log.warning("agent watch interrupted (%s); watching again", e)
            await asyncio.sleep(1)
