"""The Fleet gRPC service: agents' control streams and their file uploads.

Thin: each method unpacks the stream, hands it to the domain (agents.py for the control
stream, uploads.py for files) and maps domain errors to status codes through one table
(coordinator/api/status_codes.py).

Control: the first message is an AgentHello. The agent is registered under an etcd lease
that each heartbeat refreshes; the coordinator then sends Start/Stop commands down the same
stream. Data: one Upload stream per file, on its own channel (uploads.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc

from fleetcap.coordinator.api import status_codes
from fleetcap.coordinator.api.auth import current_principal
from fleetcap.coordinator.api.status_codes import Context
from fleetcap.coordinator.errors import InvalidArgument
from fleetcap.coordinator.fleet import wire
from fleetcap.coordinator.fleet.agents import AgentSessions, ControlSession
from fleetcap.coordinator.fleet.presence import Presence
from fleetcap.coordinator.fleet.uploads import Uploads
from fleetcap.coordinator.metrics import CoordinatorMetrics
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.storage.sink import Sink
from fleetcap.coordinator.usecases import UseCases
from fleetcap.v1 import fleet_pb2, fleet_pb2_grpc

log = logging.getLogger(__name__)


class FleetServicer(fleet_pb2_grpc.FleetServicer):
    def __init__(
        self,
        store: Store,
        sinks: Mapping[str, Sink],
        uc: UseCases,
        sessions: AgentSessions,
        *,
        agent_ttl_s: int,
        replica: str,
        metrics: CoordinatorMetrics | None = None,
    ):
        self.uc = uc
        self.sessions = sessions
        self.presence = Presence(store, agent_ttl_s)
        self.agent_ttl_s = agent_ttl_s
        self.replica = replica
        self.uploads = Uploads(store, sinks, metrics or CoordinatorMetrics())

    async def Connect(
        self, request_iterator: AsyncIterator[fleet_pb2.AgentMessage], context: Context
    ) -> AsyncIterator[fleet_pb2.CoordinatorMessage]:
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        control = ControlSession(
            self.uc.progress,
            self.uc.reconciler,
            self.uc.budget,
            self.sessions,
            self.presence,
            agent_ttl_s=self.agent_ttl_s,
            replica=self.replica,
        )
        reader: asyncio.Future[None] | None = None
        try:
            try:
                if not first.HasField("hello"):
                    raise InvalidArgument("hello", "the first message must be an AgentHello")
                welcome = await control.open(first.hello, current_principal())
            except Exception as e:
                await status_codes.abort(context, e)
            reader = asyncio.ensure_future(self._read(request_iterator, control))
            yield fleet_pb2.CoordinatorMessage(welcome=welcome)
            assert control.session is not None
            while (message := await control.session.queue.get()) is not None:
                yield message
        finally:
            if reader is not None:
                reader.cancel()
            control.close()

    @staticmethod
    async def _read(requests: AsyncIterator[fleet_pb2.AgentMessage], control: ControlSession) -> None:
        try:
            async for message in requests:
                await control.handle(message)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            await asyncio.shield(control.flush())  # the reports still waiting for the counter rate
            if control.session is not None:
                control.session.close()

    async def Upload(
        self, request_iterator: AsyncIterator[fleet_pb2.UploadRequest], context: Context
    ) -> AsyncIterator[fleet_pb2.UploadResponse]:
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        try:
            async for response in self.uploads.receive(first, request_iterator, current_principal()):
                yield response
        except Exception as e:
            await status_codes.abort(context, e)


def add_fleet_servicer(servicer: FleetServicer, server: grpc.aio.Server) -> None:
    """fleet_pb2_grpc.add_FleetServicer_to_server, with chunks decoded without a copy (wire.py)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Connect": grpc.stream_stream_rpc_method_handler(
            servicer.Connect,
            request_deserializer=fleet_pb2.AgentMessage.FromString,
            response_serializer=fleet_pb2.CoordinatorMessage.SerializeToString,
        ),
        "Upload": grpc.stream_stream_rpc_method_handler(
            servicer.Upload, request_deserializer=wire.decode_upload_request, response_serializer=fleet_pb2.UploadResponse.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("fleetcap.v1.Fleet", handlers),))
    server.add_registered_method_handlers("fleetcap.v1.Fleet", handlers)
