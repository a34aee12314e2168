"""The capture service: the domain behind the public API and the fleet. No gRPC here.

It validates and creates captures, resolves their targets, dispatches them to agents,
applies agents' progress to the per-instance records under the state machine, and
aggregates the status clients see.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import collections
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping

from fleetcap.coordinator import budget, manifest, targets, validation
from fleetcap.coordinator import status as st
from fleetcap.coordinator.errors import (
    AlreadyExists,
    FailedPrecondition,
    FleetcapError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    StoreUnavailable,
    Unimplemented,
)
from fleetcap.coordinator.fetch import Dispatcher, InstanceFiles
from fleetcap.coordinator.filter_compiler import FilterCompiler
from fleetcap.coordinator.manifest import ManifestSigner
from fleetcap.coordinator.settings import ServiceConfig
from fleetcap.coordinator.state import keys
from fleetcap.coordinator.state.store import Store, WatchKind
from fleetcap.coordinator.storage.local_sink import LocalSink
from fleetcap.coordinator.storage.sink import Sink
from fleetcap.core import limits
from fleetcap.core.logs import bounded
from fleetcap.core.naming import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, parse_rfc3339, resource_id, rfc3339, ring_file_path
from fleetcap.core.vocabulary import LOCAL_ACCOUNT, CaptureError, Status, StopReason, is_terminal
from fleetcap.v1 import captures_pb2, fleet_pb2, state_pb2

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
FOLLOW_POLL_S = 0.5


def blob_name(identity: fleet_pb2.AgentIdentity, created: dt.datetime) -> str:
    """Azure's blob layout for one instance's capture file (reference §4.4)."""
    sub = (identity.subscription or DEFAULT_SUBSCRIPTION).lower()
    rg = (identity.resource_group or DEFAULT_RESOURCE_GROUP).lower()
    if identity.vmss_name:
        machine = f"virtualmachinescalesets/{identity.vmss_name.lower()}/virtualmachines/{identity.instance_id}"
    else:
        machine = f"virtualmachines/{identity.vm_name.lower()}"
    stamp = created.strftime("%Y/%m/%d/packetcapture_%H_%M_%S_") + f"{created.microsecond // 1000:03d}.cap"
    return f"subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.compute/{machine}/{stamp}"


def storage_prefix(uri: str, *, several_instances: bool, continuous: bool) -> str:
    """What create returns as storagePath: the one blob, or the prefix its siblings share
    (Azure: ".../virtualmachinescalesets/{name}/{yyyy}/{mm}/{dd}/packetcapture_{time}")."""
    if not several_instances and not continuous:
        return uri
    if several_instances:
        head, _, tail = uri.partition("/virtualmachines/")
        uri = head + "/" + tail.split("/", 1)[1]
    uri = uri[: -len(".cap")]
    return uri[: -len("_00000")] if continuous else uri


def object_name(record: state_pb2.CaptureRecord, identity: fleet_pb2.AgentIdentity, file_path: str) -> str:
    """The stored object ("<container>/<blob>") for one file of one instance; raises NotFound
    for a file the capture does not have. A ring's file N is stored as packetcapture_..._N.cap."""
    base = f"{record.container}/{blob_name(identity, parse_rfc3339(record.resource.created_time))}"
    if not record.resource.properties.HasField("continuous_capture"):
        if file_path != record.local_path:
            raise NotFound(f"file '{file_path}' is not part of capture '{record.resource.name}'")
        return base
    stem = record.local_path[: -len(".cap")] + "_"
    index = file_path[len(stem) : -len(".cap")]
    if not (file_path.startswith(stem) and file_path.endswith(".cap") and len(index) == 5 and index.isdigit()):
        raise NotFound(f"file '{file_path}' is not part of capture '{record.resource.name}'")
    return f"{base[: -len('.cap')]}_{index}.cap"


def session_id(record: state_pb2.CaptureRecord) -> str:
    """Tells apart two captures that reused one name: the resource id and its creation time."""
    return f"{record.resource.id}@{record.resource.created_time}"


def new_etag() -> str:
    return f'W/"{uuid.uuid4()}"'


DISPATCHED_KEPT = 1000
"""Captures this replica remembers having dispatched itself (dispatched_here)."""
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
_TOKEN_PREFIX = "after:"


def being_cancelled() -> bool:
    """Whether the running task itself is being cancelled, as opposed to a CancelledError
    raised from inside a call it awaited (gRPC raises one for a call whose channel closed)."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


def settle(done: asyncio.Future[None], error: Exception | None = None) -> None:
    """Resolves a report's future, unless its waiter has gone (the agent's stream closed and
    cancelled it): the report is applied all the same, and the rest of its batch with it."""
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def _page_token(last_name: str) -> str:
    """Opaque to clients: the last name of the page. (A made-up token only moves where a
    listing starts; it reaches nothing the caller may not list.)"""
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + last_name).encode()).decode().rstrip("=")


def _page_after(token: str) -> str:
    if not token:
        return ""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    name = text.removeprefix(_TOKEN_PREFIX)
    if not text.startswith(_TOKEN_PREFIX) or not limits.CAPTURE_NAME_RE.match(name) or len(token) > 200:
        raise InvalidArgument("page_token", "is not a token this service issued (pass next_page_token as it came)")
    return name


def _kept_on_instance(status: captures_pb2.InstanceStatus) -> bool:
    """A capture with a storage account whose upload failed: the file stays on the instance."""
    return CaptureError.STORAGE_FAILED in status.packet_capture_error


def _known_name(name: str) -> None:
    """Raises NotFound for a name no capture can have: it never becomes an etcd key (etcd refuses
    a 7 MiB one with an error that is no caller's business)."""
    if not limits.CAPTURE_NAME_RE.match(name):
        raise NotFound(
            f"packet capture '{bounded(name, validation.SHOWN_CHARS)}' not found: a capture name is 1-80 letters, digits, '_', '.' or '-'"
        )


class CaptureService:
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        sinks: Mapping[str, Sink],
        config: ServiceConfig | None = None,
        filters: FilterCompiler | None = None,
        signer: ManifestSigner | None = None,
    ):
        self.store = store
        self.signer = signer
        self.budgets = budget.Budgets(store, self._send_grant, self._budget_spent)
        self.sinks = sinks
        self.dispatcher = dispatcher
        self.config = config or ServiceConfig()
        self.filters = filters or FilterCompiler()
        self._last_created = dt.datetime.min.replace(tzinfo=dt.UTC)
        local = sinks.get(LOCAL_ACCOUNT)
        # Files only an instance holds are fetched through the local account's fetch area.
        self.instance_files = InstanceFiles(store, local, dispatcher) if isinstance(local, LocalSink) else None
        self.on_first_report: Callable[[float], None] = lambda seconds: None
        self._dispatched: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._reports: builtins.list[tuple[str, fleet_pb2.CaptureProgress, asyncio.Future[None]]] = []
        self._reports_waiting = asyncio.Event()
        self._report_writer: asyncio.Future[None] | None = None
        """Called with the seconds from a capture's creation to an instance's first report (metrics)."""

    # -- public API ----------------------------------------------------------------------

    def capture_id(self, name: str) -> str:
        c = self.config
        return (
            f"/subscriptions/{c.subscription}/resourceGroups/{c.watcher_resource_group}/providers/"
            f"Microsoft.Network/networkWatchers/{c.watcher_name}/packetCaptures/{name}"
        )

    def _created_now(self) -> dt.datetime:
        # Blob names carry the creation time to the millisecond; keep it unique per replica.
        now = dt.datetime.now(dt.UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if now <= self._last_created:
            now = self._last_created + dt.timedelta(milliseconds=1)
        self._last_created = now
        return now

    async def create(
        self, *, name: str, resource_group: str, subscription: str, params: captures_pb2.PacketCaptureParameters, caller: str = ""
    ) -> captures_pb2.PacketCaptureResult:
        """Creates and starts a capture. `caller` (the principal's name) bounds its share of the
        filter compiler."""
        record, instances = await self._prepare(name, resource_group, subscription, params, caller)
        limit = record.resource.properties.fleet_bytes_limit
        await self.store.create_capture(record, instances, budget.initial(limit, list(record.instance_keys)) if limit else None)
        log.info("capture %s created on %d instance(s) of %s", name, len(instances), record.resource.properties.target)
        for inst in instances:
            self._start(record, inst)
        self._dispatched[session_id(record)] = None
        while len(self._dispatched) > DISPATCHED_KEPT:
            self._dispatched.popitem(last=False)
        return record.resource

    async def dry_run(
        self,
        *,
        name: str,
        resource_group: str,
        subscription: str,
        params: captures_pb2.PacketCaptureParameters,
        caller: str = "",
    ) -> tuple[captures_pb2.PacketCaptureResult, captures_pb2.DryRunResult]:
        """Checks all a create checks, and answers what it would touch: its instances, whether
        each is connected, and an estimate of what each would write per second. Stores and
        starts nothing."""
        record, instances = await self._prepare(name, resource_group, subscription, params, caller)
        return record.resource, await self._dry_run(record, instances)

    async def _prepare(
        self,
        name: str,
        resource_group: str,
        subscription: str,
        params: captures_pb2.PacketCaptureParameters,
        caller: str = "",
    ) -> tuple[state_pb2.CaptureRecord, builtins.list[state_pb2.InstanceRecord]]:
        """A create's checks, and the records it would write."""
        validation.validate_name(name)
        p = validation.validate(params, storage_accounts={name: sink.container_rule for name, sink in self.sinks.items()})
        for field, expression, meaning in validation.expressions_to_compile(p):
            await self.filters.check(field, expression, meaning, caller=caller)
        running = await self.store.running_captures()
        if len(running) >= self.config.max_captures:
            raise ResourceExhausted(
                f"{len(running)} captures are running, the limit is {self.config.max_captures}; stop or wait for one first"
            )
        if await self.store.get_capture(name) is not None:
            raise AlreadyExists(f"a packet capture named '{name}' already exists; captures cannot be updated, delete it first")
        candidates = await self.store.list_agents(
            under=targets.agents_prefix(p.target, p.target_type, subscription=subscription, resource_group=resource_group)
        )
        resolved = targets.resolve(
            p.target,
            p.target_type,
            list(p.scope.include),
            list(p.scope.exclude),
            subscription=subscription,
            resource_group=resource_group,
            agents=candidates,
        )
        p.target = resolved.target_id
        del p.scope.include[:]
        del p.scope.exclude[:]
        p.scope.include.extend(resolved.scope_include)
        p.scope.exclude.extend(resolved.scope_exclude)
        created = self._created_now()
        loc = p.storage_location
        local_path = loc.file_path or loc.local_path or f"/var/captures/fleetcap/{name}-{uuid.uuid4().hex[:8]}.cap"
        continuous = p.HasField("continuous_capture")
        resource = captures_pb2.PacketCaptureResult(
            name=name,
            id=self.capture_id(name),
            etag=new_etag(),
            provisioning_state="Succeeded",
            properties=p,
            created_time=rfc3339(created),
        )
        record = state_pb2.CaptureRecord(
            resource=resource,
            instance_keys=list(resolved.instances),
            local_path=local_path,
            container=validation.container_of(loc.storage_path),
        )
        instances = []
        for key, agent in resolved.instances.items():
            ident = agent.identity
            status = captures_pb2.InstanceStatus(
                id=resource_id(ident), instance_id=ident.instance_id or ident.vm_name, packet_capture_status=Status.NOT_STARTED
            )
            if not continuous and not p.standby_in_seconds:  # a ring's files are reported as they open
                status.files.add(file_path=local_path, storage_path=self.storage_uri(record, ident, local_path))
            instances.append(state_pb2.InstanceRecord(instance_key=key, identity=ident, status=status))
        if loc.storage_id:
            # Azure returns the generated location: the blob for one instance, the common
            # prefix for several (and for a ring's files).
            one = self.storage_uri(record, instances[0].identity, ring_file_path(local_path, 0, continuous))
            record.resource.properties.storage_location.storage_path = storage_prefix(
                one, several_instances=len(instances) > 1, continuous=continuous
            )
        return record, instances

    async def _dry_run(
        self, record: state_pb2.CaptureRecord, instances: builtins.list[state_pb2.InstanceRecord]
    ) -> captures_pb2.DryRunResult:
        present = await self.store.list_agents()
        snaplen = record.resource.properties.bytes_to_capture_per_packet
        out = captures_pb2.DryRunResult()
        for inst in instances:
            row = out.instances.add(id=inst.status.id, instance_id=inst.status.instance_id, connected=inst.instance_key in present)
            rate = self.dispatcher.interface_rate(inst.instance_key)
            if rate is None:
                continue
            row.measured = True
            row.interface_bytes_per_second, row.interface_packets_per_second = rate.bytes_per_s, rate.packets_per_s
            body = min(rate.bytes_per_s, rate.packets_per_s * snaplen) if snaplen else rate.bytes_per_s
            row.estimated_bytes_per_second = body + 16 * rate.packets_per_s
            out.estimated_bytes_per_second += row.estimated_bytes_per_second
        return out

    def dispatched_here(self, record: state_pb2.CaptureRecord) -> bool:
        """Whether this replica created the capture and so already sent its starts to the agents
        connected here (the dispatch watch need not read its instances again)."""
        return session_id(record) in self._dispatched

    async def get(self, name: str) -> captures_pb2.PacketCaptureResult:
        return (await self._record(name)).resource

    async def list(self, page_size: int = 0, page_token: str = "") -> tuple[list[captures_pb2.PacketCaptureResult], str]:
        """Captures in name order, a page at a time: (captures, the next page's token or "").
        page_size 0 without a token is every capture at once (the API before paging)."""
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be from 1 to {MAX_PAGE_SIZE} (0: every capture at once)")
        after = _page_after(page_token)
        if page_size == 0 and not after:
            return [c.resource for c in await self.store.list_captures()], ""
        records, more = await self.store.list_captures_page(after, page_size or DEFAULT_PAGE_SIZE)
        return [c.resource for c in records], _page_token(records[-1].resource.name) if more and records else ""

    async def stop(self, name: str, reason: str = StopReason.STOPPED_BY_USER) -> None:
        def mark(rec: state_pb2.CaptureRecord) -> bool:
            if rec.stop_requested:
                return False
            rec.stop_requested = reason
            rec.resource.etag = new_etag()
            return True

        _known_name(name)
        record = await self.store.update_capture(name, mark)
        await self.send_stops(record)

    async def send_stops(self, record: state_pb2.CaptureRecord) -> None:
        """Sends the capture's stop to every unfinished instance whose agent is connected here;
        an instance that never started is stopped in its record."""
        name = record.resource.name
        present = None
        for inst in await self.store.get_instances(name):
            if st.is_final(inst.status):
                continue
            stop = fleet_pb2.CoordinatorMessage(
                stop=fleet_pb2.StopCapture(capture_name=name, capture_id=session_id(record), reason=record.stop_requested)
            )
            if self.dispatcher.send(inst.instance_key, stop) or inst.status.packet_capture_status != Status.NOT_STARTED:
                continue
            present = await self.store.list_agents() if present is None else present
            if inst.instance_key not in present:  # no replica has its agent: it will never start
                await self._finish_unstarted(name, inst.instance_key, record.stop_requested)

    async def budget_request(self, instance_key: str, request: fleet_pb2.BudgetRequest) -> None:
        """An agent asks for more of its capture's fleet budget (coordinator/budget.py). The
        coordinator trusts no agent: only for a capture of its own instance, with a budget,
        not stopped."""
        record = await self._budgeted(instance_key, request.capture_name, request.capture_id)
        if record is not None:
            await self.budgets.request(
                record.resource.name, request.capture_id, instance_key, len(record.instance_keys), max(0, request.need)
            )

    async def budget_return(self, instance_key: str, ret: fleet_pb2.BudgetReturn) -> None:
        record = await self._budgeted(instance_key, ret.capture_name, ret.capture_id)
        if record is not None:
            await self.budgets.give_back(record.resource.name, instance_key, ret.returned)

    async def _budgeted(self, instance_key: str, name: str, capture_id: str) -> state_pb2.CaptureRecord | None:
        record = await self.store.get_capture(name) if limits.CAPTURE_NAME_RE.match(name) else None
        if (
            record is None
            or session_id(record) != capture_id
            or instance_key not in record.instance_keys
            or not record.resource.properties.fleet_bytes_limit
        ):
            log.warning("budget message from %s for capture %s refused: not a budgeted capture of that instance", instance_key, name[:100])
            return None
        return record

    def _send_grant(self, name: str, capture_id: str, instance_key: str, granted: int, exhausted: bool) -> None:
        self.dispatcher.send(
            instance_key,
            fleet_pb2.CoordinatorMessage(
                budget_grant=fleet_pb2.BudgetGrant(capture_name=name, capture_id=capture_id, granted=granted, exhausted=exhausted)
            ),
        )

    async def _budget_spent(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self.stop(name, StopReason.FLEET_BYTES_EXCEEDED)

    async def trigger(self, name: str, *, after_s: int, source: str, note: str = "") -> captures_pb2.PacketCaptureQueryStatusResult:
        """Freezes a flight recorder's window on every instance at once: the trigger's time is
        taken here, once, and every agent keeps the packets from that time minus the window.
        Idempotent: a second trigger changes nothing and the status shows the first."""
        after_s = validation.validate_trigger(after_s, note)
        record = await self._record(name)
        if not record.resource.properties.standby_in_seconds:
            raise FailedPrecondition(f"packet capture '{name}' is not a flight recorder: create it with standbyInSeconds to trigger it")
        now = dt.datetime.now(dt.UTC)
        # Milliseconds, as the agents get it (trigger_time_ms), in the API's one time format.
        stamp = rfc3339(now.replace(microsecond=now.microsecond // 1000 * 1000))
        full_source = f"{source} ({note})" if note else source

        def mark(rec: state_pb2.CaptureRecord) -> bool:
            if rec.trigger_time:
                return False
            if rec.stop_requested:
                raise FailedPrecondition(f"packet capture '{name}' was stopped before a trigger; its window is gone")
            rec.trigger_time, rec.trigger_source, rec.trigger_after_s = stamp, full_source, after_s
            rec.resource.etag = new_etag()
            return True

        record = await self.store.update_capture(name, mark)
        if record.trigger_time == stamp:
            log.info("capture %s triggered by %s, %d s after", name, full_source, after_s)
        await self.send_triggers(record)
        return st.aggregate(record, await self.store.get_instances(name))

    def trigger_message(self, record: state_pb2.CaptureRecord) -> fleet_pb2.CoordinatorMessage:
        at = parse_rfc3339(record.trigger_time)
        return fleet_pb2.CoordinatorMessage(
            trigger=fleet_pb2.TriggerCapture(
                capture_name=record.resource.name,
                capture_id=session_id(record),
                trigger_time_ms=round(at.timestamp() * 1000),
                after_s=record.trigger_after_s,
                source=record.trigger_source,
            )
        )

    async def send_triggers(self, record: state_pb2.CaptureRecord) -> None:
        """Sends the trigger to every armed instance whose agent is connected here (agents
        ignore a repeated one, so every replica may send it)."""
        message = self.trigger_message(record)
        for inst in await self.store.get_instances(record.resource.name):
            if not st.is_final(inst.status):
                self.dispatcher.send(inst.instance_key, message)

    async def manifest(self, name: str) -> bytes:
        """The signed manifest of a finished capture (coordinator/manifest.py)."""
        record = await self._record(name)
        signer = self._signer()
        return signer.sign(manifest.body(record, await self.store.get_instances(name)))

    def manifest_key(self) -> tuple[str, str]:
        """(public key PEM, key id) of the key that signs this coordinator's manifests."""
        signer = self._signer()
        return signer.public_key_pem, signer.key_id

    def _signer(self) -> ManifestSigner:
        if self.signer is None:
            raise Unimplemented("this coordinator was started without a manifest signing key")
        return self.signer

    async def delete(self, name: str) -> None:
        record = await self._record(name)
        if not record.stop_requested:
            await self.stop(name, StopReason.DELETED)
        await self.store.delete_capture(name)
        log.info("capture %s deleted (files are kept)", name)

    async def list_agents(self) -> builtins.list[captures_pb2.AgentInfo]:
        agents = await self.store.list_agents()
        return [
            captures_pb2.AgentInfo(
                id=resource_id(a.identity),
                hostname=a.hostname,
                interface=a.interface,
                addresses=a.addresses,
                connected_time=a.connected_time,
            )
            for _, a in sorted(agents.items())
        ]

    def list_storage_accounts(self) -> builtins.list[captures_pb2.StorageAccountInfo]:
        return [
            captures_pb2.StorageAccountInfo(name=name, kind=sink.kind, endpoint=sink.endpoint())
            for name, sink in sorted(self.sinks.items(), key=lambda kv: (kv[0] != "local", kv[0]))
        ]

    async def get_status(self, name: str) -> captures_pb2.PacketCaptureQueryStatusResult:
        record = await self._record(name)
        return st.aggregate(record, await self.store.get_instances(name))

    async def watch_status(self, name: str) -> AsyncIterator[captures_pb2.PacketCaptureQueryStatusResult]:
        """Yields the status now and on every change, until every instance has settled."""
        await self._record(name)  # NotFound before anything is watched
        changed = asyncio.Event()
        ready = [asyncio.Event(), asyncio.Event()]

        async def follow(prefix: str, established: asyncio.Event) -> None:
            async for event in self.store.watch(prefix):
                if event.kind == WatchKind.READY:
                    established.set()
                else:
                    changed.set()

        watchers = [
            asyncio.ensure_future(follow(keys.capture(name), ready[0])),
            asyncio.ensure_future(follow(keys.instances_of(name), ready[1])),
        ]
        try:
            # Read only once both watches exist: no change can fall between the read and them.
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), timeout=10)
            last = None
            while True:
                changed.clear()
                record = await self.store.get_capture(name)
                if record is None:
                    return
                instances = await self.store.get_instances(name)
                current = st.aggregate(record, instances)
                if current != last:
                    yield current
                    last = current
                upload = bool(record.resource.properties.storage_location.storage_id)
                if instances and all(st.uploads_settled(i.status, upload) for i in instances):
                    return
                try:
                    await asyncio.wait_for(changed.wait(), timeout=5.0)
                except TimeoutError:
                    pass  # re-read anyway: a watch may have been interrupted
        finally:
            for w in watchers:
                w.cancel()

    async def read_file(
        self, name: str, instance_id: str, file_path: str, offset: int, follow: bool
    ) -> AsyncIterator[tuple[int, bytes, bool]]:
        """Yields (offset, data, complete) from the stored copy of one instance's file. With
        follow, waits for more bytes until the file is committed. The local sink serves bytes
        as they become durable; a blob becomes readable once committed."""
        record = await self._record(name)
        account = record.resource.properties.storage_location.storage_id
        inst = next((i for i in await self.store.get_instances(name) if i.status.instance_id == instance_id), None)
        if inst is None:
            raise NotFound(f"instance_id: capture '{name}' has no instance '{instance_id}'")
        files = list(inst.status.files)
        if not account or _kept_on_instance(inst.status):
            # Only the instance holds it: its agent sends it (fetch.py).
            wanted = next((f for f in files if f.file_path == file_path), None) if file_path else (files[-1] if files else None)
            if wanted is None:
                raise NotFound(
                    f"file_path: instance '{instance_id}' of capture '{name}' has no file '{file_path}'"
                    if file_path
                    else f"instance '{instance_id}' of capture '{name}' has no file yet"
                )
            if self.instance_files is None:
                raise FailedPrecondition(
                    f"{wanted.file_path} is only on instance '{instance_id}', and this coordinator has no local storage to fetch it through"
                )
            async for item in self.instance_files.read(record, inst, wanted, session_id(record), offset, follow):
                yield item
            return
        if not file_path and not files and follow:
            file_path = ring_file_path(record.local_path, 0, record.resource.properties.HasField("continuous_capture"))
        chosen = next((f for f in files if f.file_path == file_path), None) if file_path else (files[-1] if files else None)
        if chosen is None and not (follow and file_path):
            raise NotFound(f"file_path: instance '{instance_id}' of capture '{name}' has no file '{file_path}'")
        if (
            chosen is not None
            and not chosen.upload_complete
            and is_terminal(inst.status.packet_capture_status)
            and CaptureError.LOCAL_FILE_FAILED in inst.status.packet_capture_error
        ):
            # The instance's file was not the agent's any more: what was stored of it is unverified.
            raise FailedPrecondition(
                f"{chosen.file_path} of instance '{instance_id}' was never stored whole, and "
                f"the instance's copy is refused: {inst.status.error_message}"
            )
        path = chosen.file_path if chosen else file_path
        obj = object_name(record, inst.identity, path)
        sink = self.sinks[account]
        while True:
            data = await asyncio.to_thread(sink.read, obj, offset, READ_CHUNK)
            if data:
                yield offset, data, False
                offset += len(data)
                continue
            status = await self._instance_status(name, inst.instance_key)
            f = next((f for f in status.files if f.file_path == path), None) if status else None
            done = status is None or (f is not None and f.upload_complete) or status.packet_capture_status == Status.ERROR
            if done or not follow:
                if done and f is not None and f.upload_complete and offset < f.size_bytes:
                    continue  # committed between our read and the status: read the rest
                yield offset, b"", True
                return
            await asyncio.sleep(FOLLOW_POLL_S)

    async def _instance_status(self, name: str, instance_key: str) -> captures_pb2.InstanceStatus | None:
        inst = next((i for i in await self.store.get_instances(name) if i.instance_key == instance_key), None)
        return inst.status if inst else None

    async def _record(self, name: str) -> state_pb2.CaptureRecord:
        _known_name(name)
        record = await self.store.get_capture(name)
        if record is None:
            raise NotFound(f"packet capture '{name}' not found")
        return record

    # -- the fleet side --------------------------------------------------------------------

    def storage_uri(self, record: state_pb2.CaptureRecord, identity: fleet_pb2.AgentIdentity, file_path: str) -> str:
        account = record.resource.properties.storage_location.storage_id
        return self.sinks[account].uri(object_name(record, identity, file_path)) if account else ""

    def _start_message(self, record: state_pb2.CaptureRecord, inst: state_pb2.InstanceRecord) -> fleet_pb2.CoordinatorMessage:
        p = record.resource.properties
        continuous = p.HasField("continuous_capture")
        return fleet_pb2.CoordinatorMessage(
            start=fleet_pb2.StartCapture(
                capture_name=record.resource.name,
                capture_id=session_id(record),
                file_path=record.local_path,
                snaplen=p.bytes_to_capture_per_packet,
                total_bytes=0 if continuous else p.total_bytes_per_session,
                time_limit_s=p.capture_settings.session_time_limit_in_seconds if continuous else p.time_limit_in_seconds,
                filters=p.filters,
                bpf_filter=p.bpf_filter,
                upload=bool(p.storage_location.storage_id),
                keep_local=bool(p.storage_location.file_path or p.storage_location.local_path),
                continuous=continuous,
                file_size=p.capture_settings.file_size_in_bytes if continuous else 0,
                file_count=p.capture_settings.file_count if continuous else 0,
                standby_s=p.standby_in_seconds,
                standby_bytes=p.standby_bytes if p.standby_in_seconds else 0,
                fleet_allowance=budget.share(p.fleet_bytes_limit, len(record.instance_keys)) if p.fleet_bytes_limit else 0,
            )
        )

    def start_instance(self, record: state_pb2.CaptureRecord, inst: state_pb2.InstanceRecord) -> bool:
        return self._start(record, inst)

    def _start(self, record: state_pb2.CaptureRecord, inst: state_pb2.InstanceRecord) -> bool:
        return self.dispatcher.send(inst.instance_key, self._start_message(record, inst))

    async def _finish_unstarted(self, name: str, instance_key: str, reason: str) -> None:
        def finish(rec: state_pb2.InstanceRecord) -> bool:
            if rec.status.packet_capture_status != Status.NOT_STARTED:
                return False
            rec.status.packet_capture_status = Status.STOPPED
            rec.status.stop_reason = reason
            return True

        await self.store.update_instance(name, instance_key, finish)

    async def apply_progress(self, instance_key: str, progress: fleet_pb2.CaptureProgress) -> None:
        """Applies an agent's report to its instance record, under the state machine. Reports
        that arrive together (from many agents) are applied together: one read of each capture
        record and few etcd transactions for all of them (Store.update_instances)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        writer = self._report_writer
        if writer is None or writer.done() or writer.get_loop() is not loop:  # (tests run several loops)
            self._reports = [r for r in self._reports if r[2].get_loop() is loop]
            self._reports_waiting = asyncio.Event()
            self._report_writer = asyncio.ensure_future(self._write_reports(self._reports_waiting))
        self._reports.append((instance_key, progress, done))
        self._reports_waiting.set()
        await done

    async def _write_reports(self, waiting: asyncio.Event) -> None:
        while True:
            await waiting.wait()
            waiting.clear()
            batch, self._reports = self._reports, []
            if not batch:
                continue
            try:
                await self._apply_reports(batch)
            except asyncio.CancelledError:
                # Raised inside an etcd call (gRPC cancels the calls of a channel that closes)
                # while this task itself runs on: the batch fails like any etcd failure. Had
                # this task ended here, every waiter of the batch would have waited for ever
                # (bench/chaos_soak.py: a replica whose agents' reports all stopped).
                if being_cancelled():
                    raise
                for _, _, done in batch:
                    settle(done, StoreUnavailable("an etcd call was cancelled"))
            except Exception as e:  # etcd unreachable: every report of the batch fails with it
                for _, _, done in batch:
                    settle(done, e)

    async def _apply_reports(self, batch: builtins.list[tuple[str, fleet_pb2.CaptureProgress, asyncio.Future[None]]]) -> None:
        names = sorted({p.capture_name for _, p, _ in batch})
        records = dict(zip(names, await asyncio.gather(*(self.store.get_capture(n) for n in names))))
        items: builtins.list[tuple[str, str, Callable[[state_pb2.InstanceRecord], bool]]] = []
        waiting: builtins.list[tuple[state_pb2.CaptureRecord, builtins.list[bool], asyncio.Future[None]]] = []
        for instance_key, progress, done in batch:
            record = records[progress.capture_name]
            if record is None or progress.capture_id != session_id(record):
                log.info("progress for unknown or deleted capture %s from %s ignored", progress.capture_name, instance_key)
                settle(done)
            elif instance_key not in record.instance_keys:
                log.warning("progress for capture %s from %s, which it does not target", progress.capture_name, instance_key)
                settle(done)
            else:
                first_report = [False]
                items.append((record.resource.name, instance_key, self._report_change(record, instance_key, progress, first_report)))
                waiting.append((record, first_report, done))
        results = await self.store.update_instances(items) if items else []
        for (record, first_report, done), result in zip(waiting, results):
            if isinstance(result, Exception):
                settle(done, result)
                continue
            if first_report[0]:
                created = parse_rfc3339(record.resource.created_time)
                self.on_first_report((dt.datetime.now(dt.UTC) - created).total_seconds())
            settle(done)

    def _report_change(
        self, record: state_pb2.CaptureRecord, instance_key: str, progress: fleet_pb2.CaptureProgress, first_report: builtins.list[bool]
    ) -> Callable[[state_pb2.InstanceRecord], bool]:
        """The change one report makes to its instance record, for Store.update_instances;
        first_report[0] tells whether it was the instance's first (for the fan-out metric)."""
        name, new = record.resource.name, progress.status

        upload = bool(record.resource.properties.storage_location.storage_id)

        def apply(rec: state_pb2.InstanceRecord) -> bool:
            old = rec.status
            first_report[0] = False
            if st.is_settled_for_good(old, upload):  # final: agents repeat their reports after every hello
                log.debug("capture %s on %s has ended and settled; report ignored", name, instance_key)
                return False
            try:
                st.check_transition(old.packet_capture_status, new.packet_capture_status, old.packet_capture_error)
            except st.IllegalTransition as e:
                log.warning("capture %s on %s: %s; report ignored", name, instance_key, e)
                return False
            merged = captures_pb2.InstanceStatus()
            merged.CopyFrom(new)
            merged.id, merged.instance_id = old.id, old.instance_id
            for f in merged.files:
                try:
                    f.storage_path = self.storage_uri(record, rec.identity, f.file_path)
                except NotFound:
                    log.warning("capture %s on %s reports unknown file %s", name, instance_key, f.file_path)
                    return False
            if merged == old:
                return False
            first_report[0] = old.packet_capture_status == Status.NOT_STARTED != merged.packet_capture_status
            rec.status.CopyFrom(merged)
            return True

        return apply

    async def agent_connected(self, instance_key: str, hello: fleet_pb2.AgentHello) -> None:
        """Reconciles an agent that (re)connected: applies what it reports, starts what it
        should run, stops what should no longer run, and fails what it has lost."""
        reported = {p.capture_name: p for p in hello.captures}
        for progress in hello.captures:
            await self.apply_progress(instance_key, progress)
        for record in await self.store.list_captures():
            if instance_key not in record.instance_keys:
                await self._maybe_join(record, instance_key, hello.identity)
                continue
            name = record.resource.name
            # This instance's record only: reading all 1,000 of a scale set's, for every capture
            # and every hello, made a replica's reconnect storm (500 agents moving over from a
            # killed replica) a minute of saturated CPU in which live agents were judged silent
            # (bench/chaos_soak.py).
            inst = await self.store.get_instance(name, instance_key)
            if inst is None or st.is_final(inst.status):
                continue
            if name in reported:
                if record.stop_requested:
                    self.dispatcher.send(
                        instance_key,
                        fleet_pb2.CoordinatorMessage(
                            stop=fleet_pb2.StopCapture(
                                capture_name=name, capture_id=reported[name].capture_id, reason=record.stop_requested
                            )
                        ),
                    )
                elif record.trigger_time:
                    self.dispatcher.send(instance_key, self.trigger_message(record))
            elif inst.status.packet_capture_status == Status.NOT_STARTED:
                if record.stop_requested:
                    await self._finish_unstarted(name, instance_key, record.stop_requested)
                else:
                    self._start(record, inst)
                    if record.trigger_time:  # armed late: it keeps what it can of the window
                        self.dispatcher.send(instance_key, self.trigger_message(record))
            else:
                await self.fail_instance(
                    name, instance_key, CaptureError.AGENT_STOPPED, "the agent restarted and has no record of this capture"
                )

    async def reconcile_absent_agents(self, why: str = "the agent did not reconnect after the coordinator restarted") -> None:
        """After a coordinator (re)start and one lease period, or an interrupted agent watch: an
        instance still running whose agent is not registered is lost (its lease expired while
        nobody watched)."""
        present = set(await self.store.list_agents())
        for record in await self.store.list_captures():
            for key in record.instance_keys:
                if key not in present:
                    await self.fail_instance(record.resource.name, key, CaptureError.AGENT_STOPPED, why)

    async def _maybe_join(self, record: state_pb2.CaptureRecord, instance_key: str, identity: fleet_pb2.AgentIdentity) -> None:
        """addNewInstances: a new instance of the captured scale set joins a running capture."""
        p = record.resource.properties
        instance_id = resource_id(identity)
        if (
            not p.add_new_instances
            or record.stop_requested
            or p.scope.include
            or instance_id in p.scope.exclude
            or not identity.vmss_name
            or instance_id.rsplit("/virtualMachines/", 1)[0].lower() != p.target.lower()
        ):
            return
        statuses = [i.status.packet_capture_status for i in await self.store.get_instances(record.resource.name)]
        if statuses and all(is_terminal(s) for s in statuses):
            return  # the capture is over
        status = captures_pb2.InstanceStatus(id=instance_id, instance_id=identity.instance_id, packet_capture_status=Status.NOT_STARTED)
        if not p.HasField("continuous_capture"):
            status.files.add(file_path=record.local_path, storage_path=self.storage_uri(record, identity, record.local_path))
        inst = state_pb2.InstanceRecord(instance_key=instance_key, identity=identity, status=status)

        def join(rec: state_pb2.CaptureRecord) -> bool:
            if instance_key in rec.instance_keys or rec.stop_requested:
                return False
            rec.instance_keys.append(instance_key)
            return True

        await self.store.put_instance(record.resource.name, inst)
        updated = await self.store.update_capture(record.resource.name, join)
        if instance_key in updated.instance_keys and not updated.stop_requested:
            log.info("instance %s joined capture %s (addNewInstances)", instance_key, record.resource.name)
            self._start(updated, inst)

    async def agent_lost(self, instance_key: str) -> None:
        """The agent's lease expired: every capture it had not finished is in error."""
        for record in await self.store.list_captures():
            if instance_key in record.instance_keys:
                await self.fail_instance(
                    record.resource.name,
                    instance_key,
                    CaptureError.AGENT_STOPPED,
                    "the agent stopped sending heartbeats and its lease expired",
                )

    async def fail_instance(self, name: str, instance_key: str, error: str, message: str) -> None:
        failed = [False]

        def fail(rec: state_pb2.InstanceRecord) -> bool:
            s = rec.status
            if st.is_final(s):
                return False
            s.packet_capture_status = Status.ERROR
            s.stop_reason = StopReason.AGENT_STOPPED if error == CaptureError.AGENT_STOPPED else StopReason.CAPTURE_FAILED
            s.packet_capture_error[:] = [error]
            s.error_message = message
            failed[0] = True
            return True

        try:
            await self.store.update_instance(name, instance_key, fail)
            if failed[0]:  # (an instance already finished is left as it is, and not logged)
                log.warning("capture %s on %s: %s (%s)", name, instance_key, error, message)
        except FleetcapError:
            pass  # the capture was deleted meanwhile
