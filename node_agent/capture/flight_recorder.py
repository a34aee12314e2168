"""A flight recorder's side of one capture (`standbyInSeconds`): what its session keeps armed,
when a trigger freezes the window, and the window written into the capture file at the end.

While armed the session writes a ring of segments (standby.py); this decides when a segment is
closed (older than an eighth of the window) and which ones are dropped (every packet left the
window). A trigger, once, fixes [at - window, at + after]; after it the ring no longer turns,
and once the session stops the window's packets are assembled into the one capture file.
"""

from __future__ import annotations

import dataclasses
import logging

from fleetcap.node_agent.capture.capture_root import CaptureRoot
from fleetcap.node_agent.capture.standby import TRIGGER_SLACK_S, Assembled, Standby, assemble

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Trigger:
    at: float  # wall time, the coordinator's
    after_s: float
    source: str


class FlightRecorder:
    def __init__(self, standby: Standby, name: str):
        self.standby = standby
        self.name = name
        self.trigger: Trigger | None = None
        self.segment_opened = 0.0  # wall time the current segment opened

    def take(self, at: float, after_s: float, source: str) -> Trigger | None:
        """The trigger, if this is the first; None (and nothing changes) for a repeated one."""
        if self.trigger is not None:
            return None
        self.trigger = Trigger(at, after_s, source)
        log.info(
            "capture %s triggered by %s: the window is [%.3f - %.0f s, + %.0f s]", self.name, source, at, self.standby.window_s, after_s
        )
        return self.trigger

    @property
    def tick_s(self) -> float:
        """How often an idle armed ring is looked at."""
        return min(self.standby.segment_age_s, 1.0)

    def segment_due(self, packets: int, now: float) -> bool:
        """Armed, the current segment (holding `packets`) is old enough to be closed."""
        return self.trigger is None and packets > 0 and now - self.segment_opened >= self.standby.segment_age_s

    def out_of_window(self, newest_packet: float, now: float) -> bool:
        """Armed, a closed segment whose newest packet is this old has left the window."""
        return self.trigger is None and newest_packet < now - self.standby.window_s - TRIGGER_SLACK_S

    def past_bound(self, written: int, total_bytes: int) -> bool:
        """Triggered, the recording after the trigger alone could fill the file: enough (the
        disk's bound; the file's limit is exact in `write_window`)."""
        return self.trigger is not None and bool(total_bytes) and written >= total_bytes + self.standby.ring_bytes

    def write_window(self, root: CaptureRoot, segments: list[str], path: str, limit: int) -> Assembled | None:
        """The window's packets into the capture file, at most `limit` bytes (0 = none); None,
        with nothing written, if the recorder was never triggered."""
        trig = self.trigger
        if trig is None:
            return None
        out = assemble(root, segments, path, since=trig.at - self.standby.window_s, until=trig.at + trig.after_s, limit=limit)
        log.info("capture %s: %d packets of the window written to %s", self.name, out.packets, path)
        return out
