"""The flight recorder's trigger: one time for every instance, kept in the capture record and sent to each agent."""

from __future__ import annotations

import datetime as dt
import logging

from fleetcap.coordinator import status as st
from fleetcap.coordinator import validation
from fleetcap.coordinator.errors import (
    FailedPrecondition,
)
from fleetcap.coordinator.fetch import Dispatcher
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.usecases.common import (
    Captures,
    new_etag,
    trigger_message,
)
from fleetcap.core.naming import rfc3339
from fleetcap.v1 import captures_pb2, state_pb2

log = logging.getLogger(__name__)


class FlightRecorder:
    """Triggers armed captures (standbyInSeconds)."""

    def __init__(self, store: Store, dispatcher: Dispatcher):
        self.store = store
        self.dispatcher = dispatcher
        self.captures = Captures(store)

    async def trigger(self, name: str, *, after_s: int, source: str, note: str = "") -> captures_pb2.PacketCaptureQueryStatusResult:
        """Freezes a flight recorder's window on every instance at once: the trigger's time is
        taken here, once, and every agent keeps the packets from that time minus the window.
        Idempotent: a second trigger changes nothing and the status shows the first."""
        after_s = validation.validate_trigger(after_s, note)
        record = await self.captures.record(name)
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

    async def send_triggers(self, record: state_pb2.CaptureRecord) -> None:
        """Sends the trigger to every armed instance whose agent is connected here (agents
        ignore a repeated one, so every replica may send it)."""
        message = trigger_message(record)
        for inst in await self.store.get_instances(record.resource.name):
            if not st.is_final(inst.status):
                self.dispatcher.send(inst.instance_key, message)
