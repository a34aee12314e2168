"""One capture on one interface into one file, or into a ring of files, with exact limits.

The session owns the capture's thread and its life: opening the source and the first file,
the one timer that ends it, stopping, a flight recorder's trigger and a fleet budget's grants.
Its collaborators do the rest: loop.py writes packets with exact byte limits, files.py keeps
the files, flight_recorder.py the armed window, budget_gate.py the fleet budget's allowance.
The time limit and stop requests use pcap_breakloop from another thread, which wakes an idle
ring (the TPACKET_V3 read timeout never fires on an idle interface; docs/decisions.md).
On a stop, packets already in the ring that arrived before the stop are still written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable

from fleetcap.core.libpcap import MAX_SNAPLEN, PcapError
from fleetcap.core.naming import rfc3339, ring_file_path, utc_now
from fleetcap.core.vocabulary import CaptureError, Status, StopReason
from fleetcap.node_agent.capture.budget_gate import BudgetGate
from fleetcap.node_agent.capture.capture_root import CaptureRoot, OutsideRoot
from fleetcap.node_agent.capture.files import CaptureFile, CaptureFiles
from fleetcap.node_agent.capture.flight_recorder import FlightRecorder
from fleetcap.node_agent.capture.live_source import LiveHandle
from fleetcap.node_agent.capture.loop import READ_TIMEOUT_MS, CaptureLoop
from fleetcap.node_agent.capture.source import CaptureSource, SourceFactory
from fleetcap.node_agent.capture.standby import SEGMENTS, Standby, segment_path

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Ring:
    """Continuous capture: files of at most file_size bytes, the newest file_count kept."""

    file_size: int
    file_count: int


@dataclasses.dataclass(frozen=True)
class CaptureSpec:
    """What to capture and where; the agent has re-checked every limit (runner.py)."""

    name: str
    capture_id: str
    interface: str
    root: str  # the capture root: every file is created below it (capture_root.py)
    path: str  # absolute path of the pcap file (the ring's base name in continuous mode)
    expression: str  # libpcap filter expression
    snaplen: int = 0  # bytes per packet; 0 = whole packet
    total_bytes: int = 0  # max file size, headers included; 0 = none (standard mode)
    time_limit_s: float = 0  # 0 = none
    ring: Ring | None = None  # continuous mode, or the flight recorder's segments
    buffer_size: int = 32 << 20  # kernel ring size in bytes
    standby: Standby | None = None  # a flight recorder: `path` is written only after a trigger
    clock_shift_us: int = 0  # test only: every packet time written is moved by this (node_agent/clock.py)
    fleet_allowance: int = 0  # a fleet-wide budget: the file's first allowance in bytes (coordinator/budget.py)

    def __post_init__(self) -> None:
        if self.standby is not None and self.ring is None:
            object.__setattr__(self, "ring", Ring(self.standby.segment_size, SEGMENTS))

    def file_path(self, index: int) -> str:
        if self.standby is not None:
            return segment_path(self.path, index)
        return ring_file_path(self.path, index, self.ring is not None)


@dataclasses.dataclass
class Counters:
    status: str = Status.NOT_STARTED
    stop_reason: str = ""
    errors: list[str] = dataclasses.field(default_factory=list)
    error_message: str = ""
    start_time: str = ""
    stop_time: str = ""
    packets: int = 0
    bytes: int = 0  # file bytes written, over every file
    kernel_drops: int = 0
    interface_drops: int = 0
    received: int = 0  # packets the filter accepted (ps_recv), dropped ones included
    trigger_time: str = ""  # flight recorder: the trigger this instance froze its window at
    trigger_source: str = ""


class CaptureSession:
    """Runs one capture in its own thread. `on_change` is called (from that thread) on every
    status change and whenever a file is opened, closed or deleted; poll `counters` and
    `files` for progress."""

    def __init__(
        self,
        spec: CaptureSpec,
        on_change: Callable[[CaptureSession], None] = lambda s: None,
        *,
        open_source: SourceFactory = LiveHandle,
        on_budget: Callable[[str, int, int], None] = lambda kind, amount, used: None,
    ):
        """`open_source` opens the packet source: libpcap on the spec's interface by default,
        or a replayed pcap file (replay_source.py) in tests."""
        self.spec = spec
        self._root = CaptureRoot(spec.root)
        self._open_source = open_source
        self.counters = Counters()
        self._out = CaptureFiles(self._root, spec.file_path)
        # The reported files are the ones being written, except for a flight recorder, whose
        # ring is internal and whose one file exists only after a trigger.
        self.files: list[CaptureFile] = self._out.writing if spec.standby is None else []
        self.recorder = FlightRecorder(spec.standby, spec.name) if spec.standby is not None else None
        self.budget = BudgetGate(spec.fleet_allowance, on_budget)
        self._on_change = on_change
        self._handle: CaptureSource | None = None
        self._stop_reason = ""
        self._stop_wall = 0.0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"capture-{spec.name}", daemon=True)
        self._timer: threading.Timer | None = None
        self.done = threading.Event()

    @property
    def snaplen(self) -> int:
        return min(self.spec.snaplen or MAX_SNAPLEN, MAX_SNAPLEN)

    @property
    def file_limit(self) -> int:
        """The size limit of the current file; 0 = none."""
        return self.spec.ring.file_size if self.spec.ring else self.spec.total_bytes

    def start(self) -> None:
        self._thread.start()

    def stop(self, reason: str) -> None:
        """Ends the capture with `reason` unless it already ends for another one."""
        with self._lock:
            if self._stop_reason:
                return
            self._stop_reason = reason
            self._stop_wall = time.time()
            handle = self._handle
        self.budget.release()  # a capture waiting for its budget ends now
        if handle:
            handle.breakloop()

    def trigger(self, at: float, after_s: float, source: str) -> bool:
        """Freezes a flight recorder's window at wall time `at`: the packets from `at` minus the
        window are kept, recording goes on until `at + after_s`, and then the file is written.
        Returns False (and changes nothing) unless this is a flight recorder not yet triggered
        nor stopping."""
        with self._lock:
            if self.recorder is None or self._stop_reason or (taken := self.recorder.take(at, after_s, source)) is None:
                return False
            c = self.counters
            c.trigger_time, c.trigger_source = rfc3339(dt.datetime.fromtimestamp(at, dt.UTC)), source
            if c.status == Status.STANDBY:
                c.status = Status.TRIGGERED
            self._arm_timer(max(0.0, taken.at + taken.after_s - time.time()), StopReason.TRIGGER_WINDOW_ENDED)
        self._on_change(self)
        return True

    def grant(self, granted: int, exhausted: bool) -> None:
        """More of the fleet budget (from the coordinator, through the runner), or its end."""
        self.budget.grant(granted, exhausted)

    def _arm_timer(self, seconds: float, reason: str) -> None:
        """The one timer that ends the capture; called with the lock held."""
        if self._timer:
            self._timer.cancel()
        self._timer = threading.Timer(seconds, self.stop, args=(reason,))
        self._timer.daemon = True
        self._timer.start()

    def join(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    # -- the capture thread -------------------------------------------------------------

    def _run(self) -> None:
        c = self.counters
        try:
            pump = self._open()
        except (PcapError, OSError, OutsideRoot) as e:
            kind = CaptureError.CAPTURE_FAILED if isinstance(e, PcapError) else CaptureError.LOCAL_FILE_FAILED
            self._finish_error(kind, str(e))
            return
        with self._lock:
            c.start_time = utc_now()
            if self.spec.standby is None:
                c.status = Status.RUNNING
            else:  # the time limit bounds the armed period; a trigger sets its own end
                c.status = Status.STANDBY if self.recorder is None or self.recorder.trigger is None else Status.TRIGGERED
            if self.spec.time_limit_s and (self.recorder is None or self.recorder.trigger is None):
                standard = self.spec.ring is None or self.spec.standby is not None
                self._arm_timer(self.spec.time_limit_s, StopReason.TIME_EXCEEDED if standard else StopReason.SESSION_TIME_EXCEEDED)
        self._on_change(self)
        if self.recorder is not None or self.budget.enabled:
            threading.Thread(target=self._tick, name=f"tick-{self.spec.name}", daemon=True).start()
        try:
            pump.run()
            pump.drain(self._stop_wall)
            self._close(pump)
            if self.recorder is not None:
                self._write_window(self.recorder)
        except (PcapError, OSError) as e:
            log.exception("capture %s failed", self.spec.name)
            self._close(None)
            if self.recorder is not None:
                with contextlib.suppress(OSError):
                    self._out.remove_all()
            self._finish_error(CaptureError.CAPTURE_FAILED, str(e))
            return
        c.status, c.stop_reason, c.stop_time = Status.STOPPED, self._stop_reason, utc_now()
        log.info("capture %s stopped: %s, %d packets, %d bytes", self.spec.name, c.stop_reason, c.packets, c.bytes)
        self.done.set()
        self._on_change(self)

    def _open(self) -> CaptureLoop:
        """Opens the source and the first file, and drops what came before the filter; returns
        the loop that captures into them."""
        spec = self.spec
        first = spec.file_path(0)
        self._root.parts(first)  # OutsideRoot before anything is opened
        if spec.standby is not None and os.path.lexists(spec.path):  # written only at the end: fail now
            raise FileExistsError(f"{spec.path} already exists; fleetcap never overwrites a capture file")
        handle = self._open_source(spec.interface, snaplen=self.snaplen, buffer_size=spec.buffer_size, timeout_ms=READ_TIMEOUT_MS)
        try:
            handle.set_filter(spec.expression)
            handle.open_dump(self._out.create(first))
        except Exception:
            handle.close()
            raise
        with self._lock:
            self._handle = handle
            if self._stop_reason:  # a stop raced the open
                handle.breakloop()
        self._out.writing.append(CaptureFile(0, first, size=handle.file_position()))
        self.counters.bytes = self._out.total_bytes
        if self.recorder is not None:
            self.recorder.segment_opened = time.time()
        pump = CaptureLoop(
            spec,
            handle,
            self._out,
            self.counters,
            snaplen=self.snaplen,
            file_limit=self.file_limit,
            recorder=self.recorder,
            budget=self.budget,
            stop_reason=lambda: self._stop_reason,
            stop=self.stop,
            on_change=lambda: self._on_change(self),
        )
        pump.discard_unfiltered()
        return pump

    def _tick(self) -> None:
        """Wakes the loop now and then (it waits in libpcap while no packet comes): an armed
        flight recorder's ring drops what left the window, and an idle capture under a fleet
        budget gives back what it does not use."""
        recorder = self.recorder
        while not self.done.wait(recorder.tick_s if recorder else 1.0):
            with self._lock:
                if (recorder is not None and recorder.trigger is not None) or self._stop_reason:
                    return
                if self._handle is not None:
                    self._handle.breakloop()

    def _write_window(self, recorder: FlightRecorder) -> None:
        """After a flight recorder stops: the window's packets go into the capture file, and the
        ring is removed. Stopped while armed, it stores nothing."""
        c = self.counters
        try:
            segments = [f.path for f in self._out.writing if not f.deleted]
            out = recorder.write_window(self._root, segments, self.spec.path, self.spec.total_bytes)
        finally:
            self._out.remove_all()
        if out is None:
            c.packets = c.bytes = 0
            return
        if out.full:
            self._stop_reason = StopReason.TOTAL_BYTES_EXCEEDED
        self.files.append(CaptureFile(0, self.spec.path, size=out.size, closed=True, packets=out.packets, tail_from=out.last_offset))
        c.packets, c.bytes = out.packets, out.size

    def _close(self, pump: CaptureLoop | None) -> None:
        """Closes the source; with the loop (a capture that ends well), its last counts first."""
        if self._timer:
            self._timer.cancel()
        handle, c = self._handle, self.counters
        if handle is None:
            return
        if pump is not None:
            handle.flush()
            pump.written(0)
            c.received, c.kernel_drops, c.interface_drops = pump.stats(handle)
        with self._lock:
            self._handle = None
        handle.close()
        if pump is not None and self._out.writing:
            self._out.current.closed = True  # its size was read from the dumper before the close

    def _finish_error(self, kind: str, message: str) -> None:
        c = self.counters
        c.status, c.stop_reason, c.stop_time = Status.ERROR, StopReason.CAPTURE_FAILED, utc_now()
        c.errors, c.error_message = [kind], message
        log.error("capture %s failed: %s", self.spec.name, message)
        self.done.set()
        self._on_change(self)
