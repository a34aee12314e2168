"""The fleetcap Python SDK: the only client code that speaks gRPC. The CLI is built on it.

    from clients.sdk import Client
    c = Client("127.0.0.1:7770")
    c.create(name="pc1", target="web", target_type="AzureVMSS", file_path="/var/captures/pc1.cap",
             storage_account="local", time_limit_in_seconds=60,
             filters=[{"protocol": "UDP", "localPort": "5001"}])
    final = c.wait(name="pc1")
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Mapping, TypedDict, Unpack

import grpc
from google.protobuf import descriptor, json_format
from google.protobuf.message import Message

from clients import grpc_transport
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import captures_pb2_grpc
from node_agent.capture import reasons

DEFAULT_COORDINATOR = "127.0.0.1:7770"


class FleetcapError(Exception):
    """A failed call. `code` is the gRPC status code, `message` the server's explanation."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class InvalidCapture(FleetcapError):
    """INVALID_ARGUMENT: the message names the field and the rule."""


class CaptureNotFound(FleetcapError):
    """NOT_FOUND: the capture, or the target, does not exist."""


class CaptureAlreadyExists(FleetcapError):
    """ALREADY_EXISTS: the name is taken; captures cannot be updated."""


class QuotaExceeded(FleetcapError):
    """RESOURCE_EXHAUSTED: too many concurrent captures."""


class CoordinatorUnavailable(FleetcapError):
    """UNAVAILABLE: the coordinator (or its etcd) cannot be reached."""


ERROR_BY_CODE: dict[grpc.StatusCode, type[FleetcapError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidCapture,
    grpc.StatusCode.NOT_FOUND: CaptureNotFound,
    grpc.StatusCode.ALREADY_EXISTS: CaptureAlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QuotaExceeded,
    grpc.StatusCode.UNAVAILABLE: CoordinatorUnavailable,
}


def _raise(e: grpc.RpcError) -> None:
    code = e.code()
    raise ERROR_BY_CODE.get(code, FleetcapError)(code, e.details() or "") from None


def to_dict(message: Message) -> dict[str, Any]:
    """JSON-ready dict with Azure's field names; 64-bit integers stay numbers."""
    d = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return _ints(message.DESCRIPTOR, d)


_INT64 = {descriptor.FieldDescriptor.TYPE_INT64, descriptor.FieldDescriptor.TYPE_UINT64,
          descriptor.FieldDescriptor.TYPE_SINT64, descriptor.FieldDescriptor.TYPE_FIXED64}


def _ints(desc: descriptor.Descriptor, d: dict[str, Any]) -> dict[str, Any]:
    for f in desc.fields:
        if f.json_name not in d:
            continue
        v = d[f.json_name]
        if f.type in _INT64:
            d[f.json_name] = [int(x) for x in v] if isinstance(v, list) else int(v)
        elif f.message_type is not None:
            if isinstance(v, list):
                d[f.json_name] = [_ints(f.message_type, x) for x in v]
            elif isinstance(v, dict):
                d[f.json_name] = _ints(f.message_type, v)
    return d


def instance_name(resource_id: str) -> str:
    """Azure's instance name from its ARM id: "web_3" for a scale-set instance, else the VM name."""
    parts = resource_id.split("/")
    if "virtualMachineScaleSets" in parts:
        i = parts.index("virtualMachineScaleSets")
        return f"{parts[i + 1]}_{parts[-1]}"
    return parts[-1]


def filter_from_dict(index: int, item: Mapping[str, Any]) -> pb.PacketCaptureFilter:
    """An az-style filter object ({"protocol": "TCP", "localPort": "80"}) as a message."""
    if not isinstance(item, Mapping):
        raise InvalidCapture(grpc.StatusCode.INVALID_ARGUMENT, f"filters[{index}]: must be an object")
    try:
        return json_format.ParseDict({k: str(v) for k, v in item.items()}, pb.PacketCaptureFilter())
    except json_format.ParseError as e:
        raise InvalidCapture(grpc.StatusCode.INVALID_ARGUMENT, f"filters[{index}]: {e}") from None


class CreateOptions(TypedDict, total=False):
    """`create`'s optional arguments, for `AsyncClient.create(**options)`; see `Client.create`."""
    target_type: str
    resource_group: str
    subscription: str
    include: Iterable[str]
    exclude: Iterable[str]
    bytes_to_capture_per_packet: int | None
    total_bytes_per_session: int | None
    time_limit_in_seconds: int | None
    storage_account: str
    storage_path: str
    file_path: str
    filters: Iterable[Mapping[str, Any] | pb.PacketCaptureFilter]
    bpf_filter: str
    continuous_capture: bool | None
    local_path: str
    file_count: int | None
    file_size_in_bytes: int | None
    session_time_limit_in_seconds: int | None
    add_new_instances: bool


def create_request(*, name: str, target: str, target_type: str = "AzureVM", resource_group: str = "",
                   subscription: str = "", include: Iterable[str] = (), exclude: Iterable[str] = (),
                   bytes_to_capture_per_packet: int | None = None, total_bytes_per_session: int | None = None,
                   time_limit_in_seconds: int | None = None, storage_account: str = "", storage_path: str = "",
                   file_path: str = "", filters: Iterable[Mapping[str, Any] | pb.PacketCaptureFilter] = (),
                   bpf_filter: str = "", continuous_capture: bool | None = None, local_path: str = "",
                   file_count: int | None = None, file_size_in_bytes: int | None = None,
                   session_time_limit_in_seconds: int | None = None,
                   add_new_instances: bool = False) -> pb.CreatePacketCaptureRequest:
    """The Create request for `Client.create`'s arguments (shared by both clients)."""
    params = pb.PacketCaptureParameters(
        target=target, target_type=target_type,
        scope=pb.PacketCaptureMachineScope(include=list(include), exclude=list(exclude)),
        storage_location=pb.PacketCaptureStorageLocation(storage_id=storage_account, storage_path=storage_path,
                                                         file_path=file_path, local_path=local_path),
        filters=[f if isinstance(f, pb.PacketCaptureFilter) else filter_from_dict(i, f)
                 for i, f in enumerate(filters)],
        bpf_filter=bpf_filter, add_new_instances=add_new_instances)
    if bytes_to_capture_per_packet is not None:
        params.bytes_to_capture_per_packet = bytes_to_capture_per_packet
    if total_bytes_per_session is not None:
        params.total_bytes_per_session = total_bytes_per_session
    if time_limit_in_seconds is not None:
        params.time_limit_in_seconds = time_limit_in_seconds
    if continuous_capture is not None:
        params.continuous_capture = continuous_capture
    settings = dict(file_count=file_count, file_size_in_bytes=file_size_in_bytes,
                    session_time_limit_in_seconds=session_time_limit_in_seconds)
    for key, value in settings.items():
        if value is not None:
            setattr(params.capture_settings, key, value)
    return pb.CreatePacketCaptureRequest(name=name, resource_group=resource_group, subscription=subscription,
                                         properties=params)


@dataclasses.dataclass(frozen=True)
class _Download:
    instance_id: str
    instance_arm_id: str
    file_path: str  # on the instance
    path: str       # where it goes


def _download_plan(status: pb.PacketCaptureQueryStatusResult, dest: str) -> list[_Download]:
    """The stored files of a capture and where each goes: dest/<instance id>/<file name>."""
    plan = []
    for inst in status.instances:
        for f in inst.files:
            if f.upload_complete:
                path = os.path.join(dest, inst.instance_id, os.path.basename(f.file_path))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                plan.append(_Download(inst.instance_id, inst.id, f.file_path, path))
    return plan


def _downloaded(plan: list[_Download], dest: str, name: str, merge: bool) -> list[str]:
    """The downloaded paths, plus with merge dest/<name>.pcapng: one interface per instance."""
    from clients import pcapng
    written = [item.path for item in plan]
    if merge and plan:
        sources: dict[str, pcapng.Source] = {}
        for item in plan:
            src = sources.setdefault(item.instance_arm_id, pcapng.Source(
                name=instance_name(item.instance_arm_id), description=item.instance_arm_id, paths=[]))
            src.paths.append(item.path)
        merged = os.path.join(dest, f"{name}.pcapng")
        with open(merged, "wb") as out:
            pcapng.merge(list(sources.values()), out)
        written.append(merged)
    return written


def _args(local_vars: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in local_vars.items() if k not in ("self", "__class__")}


class _Replicas:
    """The coordinator addresses a client tries in turn, and its channel to the current one."""
    _make_channel: Callable[[str], Any]

    def __init__(self, address: str | None = None, *, timeout_s: float = 30.0):
        """Args:
            address: host:port or unix:/path, or several comma-separated (replicas); default
                $FLEETCAP_COORDINATOR, else 127.0.0.1:7770.
            timeout_s: deadline of each unary call.
        """
        self.address = address or os.environ.get("FLEETCAP_COORDINATOR") or DEFAULT_COORDINATOR
        self.timeout_s = timeout_s
        self._addresses = [a.strip() for a in self.address.split(",") if a.strip()]
        self._current = 0
        self._connect()

    def _connect(self) -> None:
        self._channel = type(self)._make_channel(self._addresses[self._current % len(self._addresses)])
        self._stub = captures_pb2_grpc.PacketCapturesStub(self._channel)


class Client(_Replicas):
    """A synchronous client of one coordinator (or of its replicas)."""
    _make_channel = staticmethod(grpc_transport.sync_channel)

    def _next_replica(self) -> bool:
        """Moves to the next coordinator address; False when there is only one."""
        if len(self._addresses) < 2:
            return False
        self._channel.close()
        self._current += 1
        self._connect()
        return True

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method_name: str, request):
        """A unary call; on UNAVAILABLE it tries every other coordinator replica once."""
        for attempt in range(len(self._addresses)):
            try:
                return getattr(self._stub, method_name)(request, timeout=self.timeout_s)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE and attempt + 1 < len(self._addresses) and self._next_replica():
                    continue
                _raise(e)

    def create(self, *, name: str, target: str, target_type: str = "AzureVM", resource_group: str = "",
               subscription: str = "", include: Iterable[str] = (), exclude: Iterable[str] = (),
               bytes_to_capture_per_packet: int | None = None, total_bytes_per_session: int | None = None,
               time_limit_in_seconds: int | None = None, storage_account: str = "", storage_path: str = "",
               file_path: str = "", filters: Iterable[Mapping[str, Any] | pb.PacketCaptureFilter] = (),
               bpf_filter: str = "", continuous_capture: bool | None = None, local_path: str = "",
               file_count: int | None = None, file_size_in_bytes: int | None = None,
               session_time_limit_in_seconds: int | None = None,
               add_new_instances: bool = False) -> pb.PacketCaptureResult:
        """Creates and starts a capture.

        Args: as `az network watcher packet-capture create`; unset limits take Azure's
            defaults (whole packets, 1 GiB, 18000 s). continuous_capture (True or False, as in
            Azure any non-None value) selects the ring buffer: local_path, file_count (10),
            file_size_in_bytes (100 MiB) and session_time_limit_in_seconds (86400) apply.
        Returns: the capture resource, with defaults filled in and the target as an ARM id.
        Raises: InvalidCapture, CaptureNotFound (unknown target), CaptureAlreadyExists.
        """
        return self._call("Create", create_request(**_args(locals()))).capture

    def create_from(self, *, name: str, properties: pb.PacketCaptureParameters, resource_group: str = "",
                    subscription: str = "") -> pb.PacketCaptureResult:
        """Creates a capture from Azure's `properties` object as a message (e.g. parsed from ARM
        JSON with json_format.ParseDict). Raises: as `create`."""
        return self._call("Create", pb.CreatePacketCaptureRequest(
            name=name, resource_group=resource_group, subscription=subscription, properties=properties)).capture

    def get(self, *, name: str) -> pb.PacketCaptureResult:
        """Raises: CaptureNotFound."""
        return self._call("Get", pb.GetPacketCaptureRequest(name=name)).capture

    def list(self) -> list[pb.PacketCaptureResult]:
        return list(self._call("List", pb.ListPacketCapturesRequest()).value)

    def stop(self, *, name: str) -> None:
        """Stops the capture on every instance; idempotent. Raises: CaptureNotFound."""
        self._call("Stop", pb.StopPacketCaptureRequest(name=name))

    def delete(self, *, name: str) -> None:
        """Deletes the resource, stopping it first; files are kept. Raises: CaptureNotFound."""
        self._call("Delete", pb.DeletePacketCaptureRequest(name=name))

    def list_agents(self) -> list[pb.AgentInfo]:
        """The agents registered now: the VMs and scale-set instances that can be targeted."""
        return list(self._call("ListAgents", pb.ListAgentsRequest()).agents)

    def list_storage_accounts(self) -> list[pb.StorageAccountInfo]:
        """The storage accounts captures can name ("local" first), without credentials."""
        return list(self._call("ListStorageAccounts", pb.ListStorageAccountsRequest()).value)

    def get_status(self, *, name: str) -> pb.PacketCaptureQueryStatusResult:
        """Azure's queryStatus plus the per-instance breakdown. Raises: CaptureNotFound."""
        return self._call("GetStatus", pb.GetPacketCaptureStatusRequest(name=name)).status

    def watch(self, *, name: str, timeout_s: float | None = None) -> Iterator[pb.PacketCaptureQueryStatusResult]:
        """Yields the status at once and on every change, until every instance has stopped
        and its upload has settled. Raises: CaptureNotFound, TimeoutError (after timeout_s)."""
        try:
            for resp in self._stub.WatchStatus(pb.WatchPacketCaptureStatusRequest(name=name), timeout=timeout_s):
                yield resp.status
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(f"capture '{name}' still changing after {timeout_s}s") from None
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                self._next_replica()  # wait() follows the capture on another replica
            _raise(e)

    def read_file(self, *, name: str, instance_id: str, file_path: str = "", offset: int = 0,
                  follow: bool = False) -> Iterator[bytes]:
        """Yields the stored bytes of one instance's file from `offset`. With follow, keeps
        yielding as the running capture's bytes are stored, until the file is complete.
        Raises: CaptureNotFound (also when the file is stored nowhere but on its instance)."""
        try:
            for resp in self._stub.ReadFile(pb.ReadCaptureFileRequest(
                    name=name, instance_id=instance_id, file_path=file_path, offset=offset, follow=follow)):
                if resp.data:
                    yield resp.data
        except grpc.RpcError as e:
            _raise(e)

    def download(self, *, name: str, dest: str, merge: bool = False) -> list[str]:
        """Fetches every instance's stored files into dest/<instance id>/. With merge, also
        writes dest/<name>.pcapng: one time-ordered trace, one interface per instance.
        Returns the paths written. Raises: CaptureNotFound."""
        plan = _download_plan(self.get_status(name=name), dest)
        for item in plan:
            with open(item.path + ".part", "wb") as out:
                for data in self.read_file(name=name, instance_id=item.instance_id, file_path=item.file_path):
                    out.write(data)
            os.replace(item.path + ".part", item.path)
        return _downloaded(plan, dest, name, merge)

    def wait(self, *, name: str, timeout_s: float | None = None) -> pb.PacketCaptureQueryStatusResult:
        """Blocks until the capture has stopped everywhere and its uploads settled; returns
        the final status. Raises: TimeoutError, CaptureNotFound."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last = None
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                for last in self.watch(name=name, timeout_s=left):
                    pass
                if last is not None and last.packet_capture_status in reasons.FINAL_STATUSES:
                    return self.get_status(name=name)
            except CoordinatorUnavailable:
                time.sleep(1)  # the coordinator restarts: follow it again
            if deadline and time.monotonic() > deadline:
                raise TimeoutError(f"capture '{name}' did not finish in {timeout_s}s")


class AsyncClient(_Replicas):
    """The asyncio twin of `Client`: the same keyword-only methods, as coroutines; `watch` and
    `read_file` are async iterators. Use `async with AsyncClient(...) as c:`."""
    _make_channel = staticmethod(grpc_transport.aio_channel)

    async def _next_replica(self) -> bool:
        if len(self._addresses) < 2:
            return False
        await self._channel.close()
        self._current += 1
        self._connect()
        return True

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method_name: str, request):
        for attempt in range(len(self._addresses)):
            try:
                return await getattr(self._stub, method_name)(request, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE and attempt + 1 < len(self._addresses) \
                        and await self._next_replica():
                    continue
                _raise(e)

    async def create(self, *, name: str, target: str, **options: Unpack[CreateOptions]) -> pb.PacketCaptureResult:
        """Creates and starts a capture; the options are `Client.create`'s.
        Raises: InvalidCapture, CaptureNotFound (unknown target), CaptureAlreadyExists, QuotaExceeded."""
        return (await self._call("Create", create_request(name=name, target=target, **options))).capture

    async def get(self, *, name: str) -> pb.PacketCaptureResult:
        """Raises: CaptureNotFound."""
        return (await self._call("Get", pb.GetPacketCaptureRequest(name=name))).capture

    async def list(self) -> list[pb.PacketCaptureResult]:
        return list((await self._call("List", pb.ListPacketCapturesRequest())).value)

    async def stop(self, *, name: str) -> None:
        """Stops the capture on every instance; idempotent. Raises: CaptureNotFound."""
        await self._call("Stop", pb.StopPacketCaptureRequest(name=name))

    async def delete(self, *, name: str) -> None:
        """Deletes the resource, stopping it first; files are kept. Raises: CaptureNotFound."""
        await self._call("Delete", pb.DeletePacketCaptureRequest(name=name))

    async def list_agents(self) -> list[pb.AgentInfo]:
        return list((await self._call("ListAgents", pb.ListAgentsRequest())).agents)

    async def list_storage_accounts(self) -> list[pb.StorageAccountInfo]:
        return list((await self._call("ListStorageAccounts", pb.ListStorageAccountsRequest())).value)

    async def get_status(self, *, name: str) -> pb.PacketCaptureQueryStatusResult:
        """Azure's queryStatus plus the per-instance breakdown. Raises: CaptureNotFound."""
        return (await self._call("GetStatus", pb.GetPacketCaptureStatusRequest(name=name))).status

    async def watch(self, *, name: str,
                    timeout_s: float | None = None) -> AsyncIterator[pb.PacketCaptureQueryStatusResult]:
        """Yields the status at once and on every change, until the capture has settled.
        Raises: CaptureNotFound, TimeoutError (after timeout_s)."""
        try:
            async for resp in self._stub.WatchStatus(pb.WatchPacketCaptureStatusRequest(name=name), timeout=timeout_s):
                yield resp.status
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(f"capture '{name}' still changing after {timeout_s}s") from None
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                await self._next_replica()
            _raise(e)

    async def read_file(self, *, name: str, instance_id: str, file_path: str = "", offset: int = 0,
                        follow: bool = False) -> AsyncIterator[bytes]:
        """As `Client.read_file`."""
        try:
            async for resp in self._stub.ReadFile(pb.ReadCaptureFileRequest(
                    name=name, instance_id=instance_id, file_path=file_path, offset=offset, follow=follow)):
                if resp.data:
                    yield resp.data
        except grpc.aio.AioRpcError as e:
            _raise(e)

    async def wait(self, *, name: str, timeout_s: float | None = None) -> pb.PacketCaptureQueryStatusResult:
        """Returns the final status once the capture has stopped everywhere and its uploads
        settled. Raises: TimeoutError, CaptureNotFound."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            last = None
            try:
                async for last in self.watch(name=name, timeout_s=left):
                    pass
                if last is not None and last.packet_capture_status in reasons.FINAL_STATUSES:
                    return await self.get_status(name=name)
            except CoordinatorUnavailable:
                await asyncio.sleep(1)
            if deadline and loop.time() > deadline:
                raise TimeoutError(f"capture '{name}' did not finish in {timeout_s}s")

    async def download(self, *, name: str, dest: str, merge: bool = False) -> list[str]:
        """As `Client.download`."""
        plan = _download_plan(await self.get_status(name=name), dest)
        for item in plan:
            with open(item.path + ".part", "wb") as out:
                async for data in self.read_file(name=name, instance_id=item.instance_id, file_path=item.file_path):
                    out.write(data)
            os.replace(item.path + ".part", item.path)
        return _downloaded(plan, dest, name, merge)
