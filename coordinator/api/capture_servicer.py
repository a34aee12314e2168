"""The PacketCaptures gRPC service: unpack the request, call the capture service, map errors.

Domain exceptions become status codes through one table; anything unexpected becomes
INTERNAL with a short message and is logged here, never sent as a traceback.
"""
from __future__ import annotations

import functools
import logging
from typing import AsyncIterator

import grpc

from coordinator import errors
from coordinator.metrics import CoordinatorMetrics
from coordinator.service import CaptureService
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import captures_pb2_grpc

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type, grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls], str(exc)
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the coordinator log"


def _mapped(method):
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            response = await method(self, request, context)
        except Exception as e:  # every failure leaves as a status code, never a traceback
            code, message = status_for(e)
            self.metrics.api_call(method.__name__, code.name)
            await context.abort(code, message)
        self.metrics.api_call(method.__name__, "OK")
        return response
    return wrapper


class CaptureServicer(captures_pb2_grpc.PacketCapturesServicer):
    def __init__(self, service: CaptureService, metrics: CoordinatorMetrics | None = None):
        self.service = service
        self.metrics = metrics or CoordinatorMetrics()

    @_mapped
    async def Create(self, request: pb.CreatePacketCaptureRequest, context) -> pb.CreatePacketCaptureResponse:
        capture = await self.service.create(name=request.name, resource_group=request.resource_group,
                                            subscription=request.subscription, params=request.properties)
        return pb.CreatePacketCaptureResponse(capture=capture)

    @_mapped
    async def Get(self, request: pb.GetPacketCaptureRequest, context) -> pb.GetPacketCaptureResponse:
        return pb.GetPacketCaptureResponse(capture=await self.service.get(request.name))

    @_mapped
    async def List(self, request: pb.ListPacketCapturesRequest, context) -> pb.ListPacketCapturesResponse:
        return pb.ListPacketCapturesResponse(value=await self.service.list())

    @_mapped
    async def Stop(self, request: pb.StopPacketCaptureRequest, context) -> pb.StopPacketCaptureResponse:
        await self.service.stop(request.name)
        return pb.StopPacketCaptureResponse()

    @_mapped
    async def Delete(self, request: pb.DeletePacketCaptureRequest, context) -> pb.DeletePacketCaptureResponse:
        await self.service.delete(request.name)
        return pb.DeletePacketCaptureResponse()

    @_mapped
    async def GetStatus(self, request: pb.GetPacketCaptureStatusRequest, context) -> pb.GetPacketCaptureStatusResponse:
        return pb.GetPacketCaptureStatusResponse(status=await self.service.get_status(request.name))

    @_mapped
    async def ListAgents(self, request: pb.ListAgentsRequest, context) -> pb.ListAgentsResponse:
        return pb.ListAgentsResponse(agents=await self.service.list_agents())

    @_mapped
    async def ListStorageAccounts(self, request: pb.ListStorageAccountsRequest, context) -> pb.ListStorageAccountsResponse:
        return pb.ListStorageAccountsResponse(value=self.service.list_storage_accounts())

    async def ReadFile(self, request: pb.ReadCaptureFileRequest, context) -> AsyncIterator[pb.ReadCaptureFileResponse]:
        try:
            async for offset, data, complete in self.service.read_file(
                    request.name, request.instance_id, request.file_path, request.offset, request.follow):
                yield pb.ReadCaptureFileResponse(offset=offset, data=data, complete=complete)
        except Exception as e:
            code, message = status_for(e)
            self.metrics.api_call("ReadFile", code.name)
            await context.abort(code, message)
        self.metrics.api_call("ReadFile", "OK")

    async def WatchStatus(self, request: pb.WatchPacketCaptureStatusRequest,
                          context) -> AsyncIterator[pb.WatchPacketCaptureStatusResponse]:
        try:
            async for status in self.service.watch_status(request.name):
                yield pb.WatchPacketCaptureStatusResponse(status=status)
        except Exception as e:
            code, message = status_for(e)
            self.metrics.api_call("WatchStatus", code.name)
            await context.abort(code, message)
        self.metrics.api_call("WatchStatus", "OK")
