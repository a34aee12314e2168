"""The fleetcap Python SDK: the only client code that speaks gRPC. The CLI is built on it.

from fleetcap import Client
c = Client("127.0.0.1:7770")
c.create(name="pc1", target="web", target_type="AzureVMSS", file_path="/var/captures/pc1.cap",
         storage_account="local", time_limit_in_seconds=60,
         filters=[{"protocol": "UDP", "localPort": "5001"}])
final = c.wait(name="pc1")
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, NoReturn, TypeVar, Unpack

import grpc
from google.protobuf.message import Message

from fleetcap.clients.downloads import (
    DestDir,
    Download,
    UnsafeName,
    clock_correction,
    download_plan,
    downloadable,
    interface_stats,
    merge_files,
)
from fleetcap.clients.errors import (
    CaptureAlreadyExists,
    CaptureNotFound,
    CoordinatorUnavailable,
    ErrorCode,
    FleetcapError,
    IncompleteDownload,
    InvalidCapture,
    PermissionDenied,
    QuotaExceeded,
    Unauthenticated,
    from_rpc_error,
)
from fleetcap.clients.messages import CreateOptions, create_request, to_dict
from fleetcap.core import transport
from fleetcap.core.vocabulary import is_terminal
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import captures_pb2_grpc

_R = TypeVar("_R", bound=Message)  # a unary call's response

# wait(): how long to pause before following a capture again after the coordinator went away.
RECONNECT_S = 1.0


__all__ = [
    "AsyncClient",
    "CaptureAlreadyExists",
    "CaptureNotFound",
    "Client",
    "CoordinatorUnavailable",
    "CreateOptions",
    "ErrorCode",
    "FleetcapError",
    "IncompleteDownload",
    "InvalidCapture",
    "PermissionDenied",
    "QuotaExceeded",
    "Unauthenticated",
    "UnsafeName",
    "clock_correction",
    "create_request",
    "downloadable",
    "interface_stats",
    "to_dict",
]

LIST_PAGE_SIZE = 1000
"""Captures per List call when `list()` fetches them all (the coordinator's largest page)."""


def _raise(e: grpc.RpcError) -> NoReturn:
    raise from_rpc_error(e) from None


class _Link:
    """The channel to one coordinator of a list of replicas, shared by a client and the
    per-caller views made with `AsyncClient.as_caller`."""

    def __init__(self, addresses: builtins.list[str], credentials: transport.ClientCredentials, dedicated: bool = False):
        self.addresses = addresses
        self.credentials = credentials
        self.dedicated = dedicated
        self.current = 0
        self._connect()

    def _connect(self) -> None:
        self.channel = transport.aio_channel(
            self.addresses[self.current % len(self.addresses)], credentials=self.credentials, dedicated=self.dedicated
        )
        self.stub = captures_pb2_grpc.PacketCapturesStub(self.channel)

    async def next_replica(self) -> bool:
        """Moves to the next coordinator address; False when there is only one."""
        if len(self.addresses) < 2:
            return False
        await self.channel.close()
        self.current += 1
        self._connect()
        return True


class AsyncClient:
    """The asyncio client of one coordinator (or of its replicas): the one implementation of
    the SDK. `Client` runs it on a private event loop. Use `async with AsyncClient(...) as c:`."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout_s: float = 30.0,
        tls_ca: str = "",
        tls_cert: str = "",
        tls_key: str = "",
        token: str = "",
        insecure: bool = False,
        dedicated: bool = False,
    ):
        """Args:
            address: host:port or unix:/path, or several comma-separated (replicas); default
                $FLEETCAP_COORDINATOR, else 127.0.0.1:7770.
            timeout_s: deadline of each unary call.
            tls_ca: CA file the coordinator's certificate must chain to; set, the channel is TLS
                with no fallback to plaintext. Default $FLEETCAP_TLS_CA.
            tls_cert, tls_key: a client certificate and key, for mutual TLS (default
                $FLEETCAP_TLS_CERT, $FLEETCAP_TLS_KEY).
            token: a bearer token (default $FLEETCAP_TOKEN).
            insecure: allow plaintext to a coordinator that is not on loopback.
            dedicated: a TCP connection of its own, never shared with another client's channel.
        Raises: ValueError for credentials that cannot be used (a missing file; plaintext
            beyond loopback without insecure).
        """
        self.address = address or os.environ.get("FLEETCAP_COORDINATOR") or transport.DEFAULT_ADDRESS
        self.timeout_s = timeout_s
        self._credentials = transport.ClientCredentials.from_env(
            tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, token=token, insecure=insecure
        )
        self._metadata = self._credentials.metadata()
        self._link = _Link([a.strip() for a in self.address.split(",") if a.strip()], self._credentials, dedicated)
        self._owner = True

    def as_caller(self, token: str) -> AsyncClient:
        """A client for another caller over this one's connection: its calls carry `token` as
        their bearer credential instead of this client's (a gateway acts as its callers). It
        shares the channel; closing it does nothing."""
        view = copy.copy(self)
        view._metadata = ((transport.AUTHORIZATION_KEY, f"Bearer {token}"),)
        view._owner = False
        return view

    @property
    def _addresses(self) -> builtins.list[str]:
        return self._link.addresses

    @property
    def _stub(self) -> captures_pb2_grpc.PacketCapturesStub:
        return self._link.stub

    async def _next_replica(self) -> bool:
        return await self._link.next_replica()

    async def close(self) -> None:
        if self._owner:
            await self._link.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method_name: str, request: Message, response: type[_R]) -> _R:
        """A unary call; on UNAVAILABLE it tries every other coordinator replica once."""
        for attempt in range(len(self._addresses)):
            try:
                reply: _R = await getattr(self._stub, method_name)(request, timeout=self.timeout_s, metadata=self._metadata)
                return reply
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE and attempt + 1 < len(self._addresses) and await self._next_replica():
                    continue
                _raise(e)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def create(self, *, name: str, target: str, **options: Unpack[CreateOptions]) -> pb.PacketCaptureResult:
        """Creates and starts a capture.

        Args: name, target (a VM or scale set, bare name or ARM id), and `CreateOptions`, as
            `az network watcher packet-capture create`.
        Returns: the capture resource, with defaults filled in and the target as an ARM id.
        Raises: InvalidCapture, CaptureNotFound (unknown target), CaptureAlreadyExists, QuotaExceeded.
        """
        return (await self._call("Create", create_request(name=name, target=target, **options), pb.CreatePacketCaptureResponse)).capture

    async def dry_run(self, *, name: str, target: str, **options: Unpack[CreateOptions]) -> tuple[pb.PacketCaptureResult, pb.DryRunResult]:
        """Checks a create without doing it: the capture as it would be, and the instances it
        would touch, each with whether it is connected and an estimate of the bytes per second
        it would write (from its interface's recent traffic). Raises: as `create`."""
        request = create_request(name=name, target=target, **options)
        request.dry_run = True
        r = await self._call("Create", request, pb.CreatePacketCaptureResponse)
        return r.capture, r.dry_run

    async def create_from(
        self, *, name: str, properties: pb.PacketCaptureParameters, resource_group: str = "", subscription: str = ""
    ) -> pb.PacketCaptureResult:
        """Creates a capture from Azure's `properties` object as a message (e.g. parsed from ARM
        JSON with json_format.ParseDict). Raises: as `create`."""
        return (
            await self._call(
                "Create",
                pb.CreatePacketCaptureRequest(name=name, resource_group=resource_group, subscription=subscription, properties=properties),
                pb.CreatePacketCaptureResponse,
            )
        ).capture

    async def get(self, *, name: str) -> pb.PacketCaptureResult:
        """Raises: CaptureNotFound."""
        return (await self._call("Get", pb.GetPacketCaptureRequest(name=name), pb.GetPacketCaptureResponse)).capture

    async def list(self) -> builtins.list[pb.PacketCaptureResult]:
        """Every capture, in name order (fetched LIST_PAGE_SIZE at a time)."""
        out: builtins.list[pb.PacketCaptureResult] = []
        token = ""
        while True:
            page, token = await self.list_page(page_size=LIST_PAGE_SIZE, page_token=token)
            out.extend(page)
            if not token:
                return out

    async def list_page(self, *, page_size: int = 100, page_token: str = "") -> tuple[builtins.list[pb.PacketCaptureResult], str]:
        """One page of captures in name order (page_size 1 to 1000), and the token of the next
        page ("" after the last). Raises: InvalidCapture (a page_token this service did not issue)."""
        r = await self._call(
            "List", pb.ListPacketCapturesRequest(page_size=page_size, page_token=page_token), pb.ListPacketCapturesResponse
        )
        return builtins.list(r.value), r.next_page_token

    async def stop(self, *, name: str) -> None:
        """Stops the capture on every instance; idempotent. Raises: CaptureNotFound."""
        await self._call("Stop", pb.StopPacketCaptureRequest(name=name), pb.StopPacketCaptureResponse)

    async def trigger(self, *, name: str, after_in_seconds: int = 0, note: str = "") -> pb.PacketCaptureQueryStatusResult:
        """Freezes a flight recorder's window on every instance at once, records `after_in_seconds`
        more, then stores the files like any capture. Idempotent: a second trigger returns the first.

        Args: name; after_in_seconds (0..18000); note, free text kept with the trigger's source.
        Returns: the status with trigger_time and trigger_source set.
        Raises: CaptureNotFound, InvalidCapture, FailedPrecondition (no standby, or stopped).
        """
        return (
            await self._call(
                "Trigger",
                pb.TriggerPacketCaptureRequest(name=name, after_in_seconds=after_in_seconds, note=note),
                pb.TriggerPacketCaptureResponse,
            )
        ).status

    async def manifest(self, *, name: str) -> bytes:
        """The capture's signed manifest (JSON): every file with its instance, size, SHA-256 and
        packet times, and the capture's settings, stop reason and drops, signed by the
        coordinator. Raises: CaptureNotFound, FleetcapError FAILED_PRECONDITION while it runs."""
        return (await self._call("GetManifest", pb.GetCaptureManifestRequest(name=name), pb.GetCaptureManifestResponse)).manifest_json

    async def manifest_key(self) -> tuple[str, str]:
        """(public key PEM, key id) of the key the coordinator signs manifests with."""
        r = await self._call("GetManifestKey", pb.GetManifestKeyRequest(), pb.GetManifestKeyResponse)
        return r.public_key_pem, r.key_id

    async def delete(self, *, name: str) -> None:
        """Deletes the resource, stopping it first; files are kept. Raises: CaptureNotFound."""
        await self._call("Delete", pb.DeletePacketCaptureRequest(name=name), pb.DeletePacketCaptureResponse)

    async def list_agents(self) -> builtins.list[pb.AgentInfo]:
        """The agents registered now: the VMs and scale-set instances that can be targeted."""
        return builtins.list((await self._call("ListAgents", pb.ListAgentsRequest(), pb.ListAgentsResponse)).agents)

    async def list_storage_accounts(self) -> builtins.list[pb.StorageAccountInfo]:
        """The storage accounts captures can name ("local" first), without credentials."""
        return builtins.list(
            (await self._call("ListStorageAccounts", pb.ListStorageAccountsRequest(), pb.ListStorageAccountsResponse)).value
        )

    async def get_status(self, *, name: str) -> pb.PacketCaptureQueryStatusResult:
        """Azure's queryStatus plus the per-instance breakdown. Raises: CaptureNotFound."""
        return (await self._call("GetStatus", pb.GetPacketCaptureStatusRequest(name=name), pb.GetPacketCaptureStatusResponse)).status

    async def watch(self, *, name: str, timeout_s: float | None = None) -> AsyncIterator[pb.PacketCaptureQueryStatusResult]:
        """Yields the status at once and on every change, until every instance has stopped
        and its upload has settled. Raises: CaptureNotFound, TimeoutError (after timeout_s)."""
        try:
            async for resp in self._stub.WatchStatus(
                pb.WatchPacketCaptureStatusRequest(name=name), timeout=timeout_s, metadata=self._metadata
            ):
                yield resp.status
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(f"capture '{name}' still changing after {timeout_s}s") from None
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                await self._next_replica()  # wait() follows the capture on another replica
            _raise(e)

    async def read_file(
        self, *, name: str, instance_id: str, file_path: str = "", offset: int = 0, follow: bool = False
    ) -> AsyncIterator[bytes]:
        """Yields the stored bytes of one instance's file from `offset`. With follow, keeps
        yielding as the running capture's bytes are stored, until the file is complete.
        Raises: CaptureNotFound (also when the file is stored nowhere but on its instance)."""
        try:
            async for resp in self._stub.ReadFile(
                pb.ReadCaptureFileRequest(name=name, instance_id=instance_id, file_path=file_path, offset=offset, follow=follow),
                metadata=self._metadata,
            ):
                if resp.data:
                    yield resp.data
        except grpc.aio.AioRpcError as e:
            _raise(e)

    async def wait(self, *, name: str, timeout_s: float | None = None) -> pb.PacketCaptureQueryStatusResult:
        """Returns the final status once the capture has stopped everywhere and its uploads
        settled, following it across coordinator restarts. Raises: TimeoutError, CaptureNotFound."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            last = None
            try:
                async for status in self.watch(name=name, timeout_s=left):
                    last = status
                if last is not None and is_terminal(last.packet_capture_status):
                    return await self.get_status(name=name)
            except CoordinatorUnavailable:
                await asyncio.sleep(RECONNECT_S)  # the coordinator restarts: follow it again
            if deadline and loop.time() > deadline:
                raise TimeoutError(f"capture '{name}' did not finish in {timeout_s}s")

    async def download(self, *, name: str, dest: str, merge: bool = False) -> builtins.list[str]:
        """Fetches every instance's files into dest/<instance id>/: the stored ones from storage,
        and those only an instance holds (a capture without a storage account) from its agent,
        through the coordinator. With merge, also writes dest/<name>.pcapng: one time-ordered
        trace, one interface per instance. Returns the paths written. Raises: CaptureNotFound;
        IncompleteDownload when some files could not be had (the others are written, and merged)."""
        status = await self.get_status(name=name)
        plan = download_plan(status)
        target = DestDir(dest)
        done: builtins.list[Download] = []
        missing: builtins.list[tuple[str, str, FleetcapError]] = []
        try:
            for item in plan:
                dir_fd = target.subdir(item.instance_id)
                try:
                    with DestDir.create(dir_fd, item.file_name) as out:
                        async for data in self.read_file(name=name, instance_id=item.instance_id, file_path=item.file_path):
                            out.write(data)
                    DestDir.commit(dir_fd, item.file_name)
                    done.append(item)
                except (InvalidCapture, CaptureNotFound, Unauthenticated, PermissionDenied):
                    raise  # the capture or the caller, not this file: nothing else would work either
                except FleetcapError as e:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(item.file_name + ".part", dir_fd=dir_fd)
                    missing.append((item.instance_id, item.file_path, e))
                finally:
                    os.close(dir_fd)
            written = [item.path(dest) for item in done]
            if merge and done:
                written.append(merge_files(done, target, name, status))
            if missing:
                raise IncompleteDownload(written, missing)
            return written
        finally:
            target.close()


T = TypeVar("T")


class Client:
    """The synchronous client: the same keyword-only methods as `AsyncClient`, which it runs on
    an event loop of its own (one thread per client), so that both share one implementation.
    `watch` and `read_file` are plain iterators. Safe to use from several threads."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout_s: float = 30.0,
        tls_ca: str = "",
        tls_cert: str = "",
        tls_key: str = "",
        token: str = "",
        insecure: bool = False,
    ):
        """Args: as `AsyncClient`."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fleetcap-sdk", daemon=True)
        self._thread.start()
        try:
            self._async = self._run(
                self._open(address, timeout_s=timeout_s, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, token=token, insecure=insecure)
            )
        except BaseException:
            self._stop_loop()
            raise
        self.address, self.timeout_s = self._async.address, self._async.timeout_s

    @staticmethod
    async def _open(address: str | None, **options: Any) -> AsyncClient:
        return AsyncClient(address, **options)  # its channel belongs to this loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> T:
            return await agen.__anext__()

        try:
            while True:
                try:
                    item = self._run(step())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if not self._loop.is_closed() and hasattr(agen, "aclose"):
                self._run(agen.aclose())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, *, name: str, target: str, **options: Unpack[CreateOptions]) -> pb.PacketCaptureResult:
        """As `AsyncClient.create`."""
        return self._run(self._async.create(name=name, target=target, **options))

    def create_from(
        self, *, name: str, properties: pb.PacketCaptureParameters, resource_group: str = "", subscription: str = ""
    ) -> pb.PacketCaptureResult:
        """As `AsyncClient.create_from`."""
        return self._run(
            self._async.create_from(name=name, properties=properties, resource_group=resource_group, subscription=subscription)
        )

    def get(self, *, name: str) -> pb.PacketCaptureResult:
        """Raises: CaptureNotFound."""
        return self._run(self._async.get(name=name))

    def list(self) -> builtins.list[pb.PacketCaptureResult]:
        """As `AsyncClient.list`."""
        return self._run(self._async.list())

    def list_page(self, *, page_size: int = 100, page_token: str = "") -> tuple[builtins.list[pb.PacketCaptureResult], str]:
        """As `AsyncClient.list_page`."""
        return self._run(self._async.list_page(page_size=page_size, page_token=page_token))

    def dry_run(self, *, name: str, target: str, **options: Unpack[CreateOptions]) -> tuple[pb.PacketCaptureResult, pb.DryRunResult]:
        """As `AsyncClient.dry_run`."""
        return self._run(self._async.dry_run(name=name, target=target, **options))

    def stop(self, *, name: str) -> None:
        """Stops the capture on every instance; idempotent. Raises: CaptureNotFound."""
        self._run(self._async.stop(name=name))

    def trigger(self, *, name: str, after_in_seconds: int = 0, note: str = "") -> pb.PacketCaptureQueryStatusResult:
        """As `AsyncClient.trigger`."""
        return self._run(self._async.trigger(name=name, after_in_seconds=after_in_seconds, note=note))

    def manifest(self, *, name: str) -> bytes:
        """As `AsyncClient.manifest`."""
        return self._run(self._async.manifest(name=name))

    def manifest_key(self) -> tuple[str, str]:
        """As `AsyncClient.manifest_key`."""
        return self._run(self._async.manifest_key())

    def delete(self, *, name: str) -> None:
        """Deletes the resource, stopping it first; files are kept. Raises: CaptureNotFound."""
        self._run(self._async.delete(name=name))

    def list_agents(self) -> builtins.list[pb.AgentInfo]:
        """The agents registered now: the VMs and scale-set instances that can be targeted."""
        return self._run(self._async.list_agents())

    def list_storage_accounts(self) -> builtins.list[pb.StorageAccountInfo]:
        """The storage accounts captures can name ("local" first), without credentials."""
        return self._run(self._async.list_storage_accounts())

    def get_status(self, *, name: str) -> pb.PacketCaptureQueryStatusResult:
        """Azure's queryStatus plus the per-instance breakdown. Raises: CaptureNotFound."""
        return self._run(self._async.get_status(name=name))

    def watch(self, *, name: str, timeout_s: float | None = None) -> Iterator[pb.PacketCaptureQueryStatusResult]:
        """As `AsyncClient.watch`."""
        return self._iterate(self._async.watch(name=name, timeout_s=timeout_s))

    def read_file(self, *, name: str, instance_id: str, file_path: str = "", offset: int = 0, follow: bool = False) -> Iterator[bytes]:
        """As `AsyncClient.read_file`."""
        return self._iterate(self._async.read_file(name=name, instance_id=instance_id, file_path=file_path, offset=offset, follow=follow))

    def wait(self, *, name: str, timeout_s: float | None = None) -> pb.PacketCaptureQueryStatusResult:
        """As `AsyncClient.wait`."""
        return self._run(self._async.wait(name=name, timeout_s=timeout_s))

    def download(self, *, name: str, dest: str, merge: bool = False) -> builtins.list[str]:
        """As `AsyncClient.download`."""
        return self._run(self._async.download(name=name, dest=dest, merge=merge))
