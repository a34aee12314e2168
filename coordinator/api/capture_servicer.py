"""The PacketCaptures gRPC service: unpack the request, call the use case, map errors.

Domain exceptions become status codes through one table (status_codes.py).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fleetcap.coordinator.api import status_codes
from fleetcap.coordinator.api.auth import current_principal
from fleetcap.coordinator.api.status_codes import Context
from fleetcap.coordinator.metrics import CoordinatorMetrics
from fleetcap.coordinator.usecases import UseCases
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import captures_pb2_grpc

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Unary = Callable[["CaptureServicer", Req, Context], Awaitable[Resp]]


def _mapped(method: Unary[Req, Resp]) -> Unary[Req, Resp]:
    """Counts and times the call and maps its failure to a status code (status_codes.py)."""

    @functools.wraps(method)
    async def wrapper(self: CaptureServicer, request: Req, context: Context) -> Resp:
        started = time.perf_counter()
        try:
            response = await method(self, request, context)
        except Exception as e:  # every failure leaves as a status code, never a traceback
            self.metrics.api_call(method.__name__, status_codes.status_for(e)[0].name, time.perf_counter() - started)
            await status_codes.abort(context, e)
        self.metrics.api_call(method.__name__, "OK", time.perf_counter() - started)
        return response

    return wrapper


class CaptureServicer(captures_pb2_grpc.PacketCapturesServicer):
    """Each RPC calls the one use case it needs (coordinator/usecases/)."""

    def __init__(self, uc: UseCases, metrics: CoordinatorMetrics | None = None):
        self.lifecycle = uc.lifecycle
        self.queries = uc.queries
        self.files = uc.files
        self.recorder = uc.recorder
        self.manifests = uc.manifests
        self.metrics = metrics or CoordinatorMetrics()

    @_mapped
    async def Create(self, request: pb.CreatePacketCaptureRequest, context: Context) -> pb.CreatePacketCaptureResponse:
        caller = current_principal()
        who = caller.name if caller else ""
        if request.dry_run:
            capture, dry_run = await self.lifecycle.dry_run(
                name=request.name,
                resource_group=request.resource_group,
                subscription=request.subscription,
                params=request.properties,
                caller=who,
            )
            return pb.CreatePacketCaptureResponse(capture=capture, dry_run=dry_run)
        capture = await self.lifecycle.create(
            name=request.name,
            resource_group=request.resource_group,
            subscription=request.subscription,
            params=request.properties,
            caller=who,
        )
        return pb.CreatePacketCaptureResponse(capture=capture)

    @_mapped
    async def Get(self, request: pb.GetPacketCaptureRequest, context: Context) -> pb.GetPacketCaptureResponse:
        return pb.GetPacketCaptureResponse(capture=await self.queries.get(request.name))

    @_mapped
    async def List(self, request: pb.ListPacketCapturesRequest, context: Context) -> pb.ListPacketCapturesResponse:
        value, token = await self.queries.list(request.page_size, request.page_token)
        return pb.ListPacketCapturesResponse(value=value, next_page_token=token)

    @_mapped
    async def Stop(self, request: pb.StopPacketCaptureRequest, context: Context) -> pb.StopPacketCaptureResponse:
        await self.lifecycle.stop(request.name)
        return pb.StopPacketCaptureResponse()

    @_mapped
    async def Trigger(self, request: pb.TriggerPacketCaptureRequest, context: Context) -> pb.TriggerPacketCaptureResponse:
        caller = current_principal()
        status = await self.recorder.trigger(
            request.name, after_s=request.after_in_seconds, source=caller.name if caller else "local", note=request.note
        )
        return pb.TriggerPacketCaptureResponse(status=status)

    @_mapped
    async def GetManifest(self, request: pb.GetCaptureManifestRequest, context: Context) -> pb.GetCaptureManifestResponse:
        return pb.GetCaptureManifestResponse(manifest_json=await self.manifests.manifest(request.name))

    @_mapped
    async def GetManifestKey(self, request: pb.GetManifestKeyRequest, context: Context) -> pb.GetManifestKeyResponse:
        pem, key_id = self.manifests.manifest_key()
        return pb.GetManifestKeyResponse(public_key_pem=pem, key_id=key_id)

    @_mapped
    async def Delete(self, request: pb.DeletePacketCaptureRequest, context: Context) -> pb.DeletePacketCaptureResponse:
        await self.lifecycle.delete(request.name)
        return pb.DeletePacketCaptureResponse()

    @_mapped
    async def GetStatus(self, request: pb.GetPacketCaptureStatusRequest, context: Context) -> pb.GetPacketCaptureStatusResponse:
        return pb.GetPacketCaptureStatusResponse(status=await self.queries.get_status(request.name))

    @_mapped
    async def ListAgents(self, request: pb.ListAgentsRequest, context: Context) -> pb.ListAgentsResponse:
        return pb.ListAgentsResponse(agents=await self.queries.list_agents())

    @_mapped
    async def ListStorageAccounts(self, request: pb.ListStorageAccountsRequest, context: Context) -> pb.ListStorageAccountsResponse:
        return pb.ListStorageAccountsResponse(value=self.queries.list_storage_accounts())

    async def ReadFile(self, request: pb.ReadCaptureFileRequest, context: Context) -> AsyncIterator[pb.ReadCaptureFileResponse]:
        try:
            async for offset, data, complete in self.files.read_file(
                request.name, request.instance_id, request.file_path, request.offset, request.follow
            ):
                yield pb.ReadCaptureFileResponse(offset=offset, data=data, complete=complete)
        except Exception as e:
            self.metrics.api_call("ReadFile", status_codes.status_for(e)[0].name)
            await status_codes.abort(context, e)
        self.metrics.api_call("ReadFile", "OK")

    async def WatchStatus(
        self, request: pb.WatchPacketCaptureStatusRequest, context: Context
    ) -> AsyncIterator[pb.WatchPacketCaptureStatusResponse]:
        try:
            async for status in self.queries.watch_status(request.name):
                yield pb.WatchPacketCaptureStatusResponse(status=status)
        except Exception as e:
            self.metrics.api_call("WatchStatus", status_codes.status_for(e)[0].name)
            await status_codes.abort(context, e)
        self.metrics.api_call("WatchStatus", "OK")
