"""gRPC health checking and server reflection, the standard services that Kubernetes probes, load
balancers and grpcurl speak.

Health (`grpc.health.v1.Health`) answers without a credential: it says SERVING or NOT_SERVING
and nothing else. The overall status ("") and each fleetcap service are SERVING while the
coordinator can read its store (checked every CHECK_S seconds, with a deadline), and NOT_SERVING
once it stops. `--health-listen ADDR` also serves Health alone, in plaintext, on a port of its
own, for kubelet's gRPC probes, which speak neither TLS nor tokens.

Reflection (`grpc.reflection.v1alpha` and `v1`) lists the services and their schema to a caller
with the reader role (api/auth.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fleetcap.coordinator.state.store import Store
from fleetcap.core import transport
from fleetcap.v1 import captures_pb2, fleet_pb2

log = logging.getLogger(__name__)

SERVICES = (captures_pb2.DESCRIPTOR.services_by_name["PacketCaptures"].full_name, fleet_pb2.DESCRIPTOR.services_by_name["Fleet"].full_name)
CHECK_S = 5.0
CHECK_DEADLINE_S = 3.0


class Health:
    def __init__(self, store: Store):
        self.store = store
        self.servicer = health.aio.HealthServicer()
        self._task: asyncio.Task[None] | None = None
        self._serving: bool | None = None
        self._extra: Any = None

    def add_to(self, server: grpc.aio.Server) -> None:
        """Health and reflection on the coordinator's own server."""
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        reflection.enable_server_reflection((*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    async def serve_plain(self, address: str) -> int:
        """Health alone, in plaintext, on `address` (kubelet's probes). Returns the port."""
        self._extra = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self._extra)
        port = transport.add_listen(self._extra, address, tls=None, insecure=True)
        await self._extra.start()
        log.info("health checks on %s:%d (plaintext, the health service only)", address.rsplit(":", 1)[0], port)
        return port

    async def _set(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICES):
            await self.servicer.set(name, status)
        (log.info if serving else log.warning)("health: %s", "SERVING" if serving else "NOT_SERVING (the store does not answer)")

    async def _check(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.store.ping(), CHECK_DEADLINE_S)
                await self._set(True)
            except Exception:  # any failure to read the store: not ready
                await self._set(False)
            await asyncio.sleep(CHECK_S)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._check())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._serving = None
        await self._set(False)
        await self.servicer.enter_graceful_shutdown()
        if self._extra is not None:
            await self._extra.stop(grace=1)
