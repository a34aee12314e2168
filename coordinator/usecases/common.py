"""What the use cases share: names of stored objects, session ids, the messages agents are
sent, and reading a capture's records. Pure functions, and one small reader over the store."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Mapping

from fleetcap.coordinator import budget, validation
from fleetcap.coordinator.errors import (
    NotFound,
)
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.storage.sink import Sink
from fleetcap.core import limits
from fleetcap.core.logs import bounded
from fleetcap.core.naming import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, parse_rfc3339
from fleetcap.core.vocabulary import CaptureError, Status
from fleetcap.v1 import captures_pb2, fleet_pb2, state_pb2

log = logging.getLogger(__name__)


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


def kept_on_instance(status: captures_pb2.InstanceStatus) -> bool:
    """A capture with a storage account whose upload failed: the file stays on the instance."""
    return CaptureError.STORAGE_FAILED in status.packet_capture_error


def known_name(name: str) -> None:
    """Raises NotFound for a name no capture can have: it never becomes an etcd key (etcd refuses
    a 7 MiB one with an error that is no caller's business)."""
    if not limits.CAPTURE_NAME_RE.match(name):
        raise NotFound(
            f"packet capture '{bounded(name, validation.SHOWN_CHARS)}' not found: a capture name is 1-80 letters, digits, '_', '.' or '-'"
        )


def storage_uri(sinks: Mapping[str, Sink], record: state_pb2.CaptureRecord, identity: fleet_pb2.AgentIdentity, file_path: str) -> str:
    """Where one instance's file is (or will be) stored, as clients see it; "" without a storage account."""
    account = record.resource.properties.storage_location.storage_id
    return sinks[account].uri(object_name(record, identity, file_path)) if account else ""


def start_message(record: state_pb2.CaptureRecord) -> fleet_pb2.CoordinatorMessage:
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


def trigger_message(record: state_pb2.CaptureRecord) -> fleet_pb2.CoordinatorMessage:
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


async def finish_unstarted(store: Store, name: str, instance_key: str, reason: str) -> None:
    """An instance that never started is stopped in its record (its agent will never start it)."""

    def finish(rec: state_pb2.InstanceRecord) -> bool:
        if rec.status.packet_capture_status != Status.NOT_STARTED:
            return False
        rec.status.packet_capture_status = Status.STOPPED
        rec.status.stop_reason = reason
        return True

    await store.update_instance(name, instance_key, finish)


class Captures:
    """Reading one capture's records, NotFound for a name that has none."""

    def __init__(self, store: Store):
        self.store = store

    async def record(self, name: str) -> state_pb2.CaptureRecord:
        known_name(name)
        record = await self.store.get_capture(name)
        if record is None:
            raise NotFound(f"packet capture '{name}' not found")
        return record

    async def instance_status(self, name: str, instance_key: str) -> captures_pb2.InstanceStatus | None:
        inst = next((i for i in await self.store.get_instances(name) if i.instance_key == instance_key), None)
        return inst.status if inst else None
