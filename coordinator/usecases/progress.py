"""Progress intake: agents' reports applied to their instance records, under the state machine, in batches."""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import logging
from collections.abc import Callable, Mapping

from fleetcap.coordinator import status as st
from fleetcap.coordinator.errors import (
    NotFound,
    StoreUnavailable,
)
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.storage.sink import Sink
from fleetcap.coordinator.usecases.common import (
    being_cancelled,
    object_name,
    session_id,
    settle,
    storage_uri,
)
from fleetcap.core.naming import parse_rfc3339
from fleetcap.core.vocabulary import Status
from fleetcap.v1 import captures_pb2, fleet_pb2, state_pb2

log = logging.getLogger(__name__)


class ProgressIntake:
    """Reports that arrive together (from many agents) are applied together (Store.update_instances)."""

    def __init__(self, store: Store, sinks: Mapping[str, Sink]):
        self.store = store
        self.sinks = sinks
        self.on_first_report: Callable[[float], None] = lambda seconds: None
        """Called with the seconds from a capture's creation to an instance's first report (metrics)."""
        self._reports: builtins.list[tuple[str, fleet_pb2.CaptureProgress, asyncio.Future[None]]] = []
        self._reports_waiting = asyncio.Event()
        self._report_writer: asyncio.Future[None] | None = None

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
                    object_name(record, rec.identity, f.file_path)  # NotFound: not a file of this capture, stored or not
                    f.storage_path = storage_uri(self.sinks, record, rec.identity, f.file_path)
                except NotFound:
                    log.warning("capture %s on %s reports unknown file %s", name, instance_key, f.file_path)
                    return False
            if merged == old:
                return False
            first_report[0] = old.packet_capture_status == Status.NOT_STARTED != merged.packet_capture_status
            rec.status.CopyFrom(merged)
            return True

        return apply
