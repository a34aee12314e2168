"""One capture on one interface into one file, or into a ring of files, with exact limits.

The byte limit is exact without a Python frame per packet: while the space left in the file
holds `n` records of the largest possible size (16-byte header + snaplen), pcap_dispatch writes
up to `n` packets in C. Only in the last stretch, where the next record might not fit, packets
are taken one at a time; the one that would cross the limit ends the capture unwritten, or, in
continuous mode, opens the next file of the ring and goes there.
The time limit and stop requests use pcap_breakloop from another thread, which wakes an idle
ring (the TPACKET_V3 read timeout never fires on an idle interface; docs/decisions.md).
On a stop, packets already in the ring that arrived before the stop are still written.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable

from fleetcap.core.libpcap import MAX_SNAPLEN, PcapError, PktHdr
from fleetcap.core.naming import rfc3339, ring_file_path, utc_now
from fleetcap.core.vocabulary import CaptureError, Status, StopReason
from fleetcap.node_agent.capture.capture_root import CaptureRoot, OutsideRoot
from fleetcap.node_agent.capture.live_source import LiveHandle
from fleetcap.node_agent.capture.pcap_format import PCAP_RECORD_HEADER
from fleetcap.node_agent.capture.source import CaptureSource, SourceFactory
from fleetcap.node_agent.capture.standby import SEGMENTS, TRIGGER_SLACK_S, Standby, assemble, segment_path

log = logging.getLogger(__name__)

# libpcap's read timeout: how long a partly filled ring block waits before it is handed over.
READ_TIMEOUT_MS = 100
STATS_INTERVAL_S = 0.2
# A fleet budget (coordinator/budget.py): an unanswered request is sent again after this, and a
# capture that wrote nothing for IDLE_RETURN_S gives back the allowance it holds.
BUDGET_RETRY_S = 5.0
IDLE_RETURN_S = 1.0
# The smallest record payload: an Ethernet header.
MIN_FRAME = 14


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
class CaptureFile:
    index: int
    path: str
    size: int = 0
    sha256: str = ""  # set by the agent once the file is closed (hashing is off the capture thread)
    closed: bool = False
    deleted: bool = False  # removed by the ring
    packets: int = 0
    tail_from: int = 24  # a record boundary near the end: where the last batch of records began
    first_us: int = 0  # first and last packet times, µs since the epoch (0 = none), set with sha256
    last_us: int = 0
    ended: float = 0.0  # flight recorder: wall time of its newest packet (the ring drops it by its age)


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


@dataclasses.dataclass(frozen=True)
class Trigger:
    at: float  # wall time, the coordinator's
    after_s: float
    source: str


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
        # The files being written; the reported files are the same list, except for a flight
        # recorder, whose ring is internal and whose one file exists only after a trigger.
        self._writing: list[CaptureFile] = []
        self.files: list[CaptureFile] = self._writing if spec.standby is None else []
        self._trigger: Trigger | None = None
        self._on_change = on_change
        self._handle: CaptureSource | None = None
        self._stop_reason = ""
        self._stop_wall = 0.0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"capture-{spec.name}", daemon=True)
        self._timer: threading.Timer | None = None
        self._file_base = 0  # bytes of closed files, for counters.bytes
        self._unfiltered = 0  # packets read from the ring before the filter was attached
        self._segment_opened = time.time()  # flight recorder: when the current segment opened
        # A fleet budget: the bytes the file may hold until more is granted; grants come from
        # another thread (grant), and only this one lowers it (an idle give-back).
        self._allowance = spec.fleet_allowance
        self._last_grant = spec.fleet_allowance
        self._asked = 0.0  # when a request went unanswered (monotonic); 0 = none pending
        self._exhausted = False
        self._granted = threading.Event()
        self._last_write = time.monotonic()
        self._on_budget = on_budget
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
        self._granted.set()  # a capture waiting for its budget ends now
        if handle:
            handle.breakloop()

    def trigger(self, at: float, after_s: float, source: str) -> bool:
        """Freezes a flight recorder's window at wall time `at`: the packets from `at` minus the
        window are kept, recording goes on until `at + after_s`, and then the file is written.
        Returns False (and changes nothing) unless this is a flight recorder not yet triggered
        nor stopping."""
        with self._lock:
            if self.spec.standby is None or self._trigger is not None or self._stop_reason:
                return False
            self._trigger = Trigger(at, after_s, source)
            c = self.counters
            c.trigger_time, c.trigger_source = rfc3339(dt.datetime.fromtimestamp(at, dt.UTC)), source
            if c.status == Status.STANDBY:
                c.status = Status.TRIGGERED
            self._arm_timer(max(0.0, at + after_s - time.time()), StopReason.TRIGGER_WINDOW_ENDED)
        log.info(
            "capture %s triggered by %s: the window is [%.3f - %.0f s, + %.0f s]",
            self.spec.name,
            source,
            at,
            self.spec.standby.window_s,
            after_s,
        )
        self._on_change(self)
        return True

    def grant(self, granted: int, exhausted: bool) -> None:
        """More of the fleet budget (from the coordinator, through the runner), or its end."""
        with self._lock:
            if granted > 0:
                self._allowance += granted
                self._last_grant = granted
            self._exhausted = self._exhausted or exhausted
            self._asked = 0.0
        self._granted.set()

    def _ask(self, need: int) -> None:
        """Asks the coordinator for more budget: at once when nothing is pending, and again if
        an answer is lost (a control stream that dropped) after BUDGET_RETRY_S."""
        now = time.monotonic()
        if self._asked and now - self._asked < BUDGET_RETRY_S:
            return
        self._asked = now
        self._on_budget("request", need, self.counters.bytes)

    def _allow_room(self) -> int:
        """Bytes the fleet budget still lets the file take; -1 = no fleet budget."""
        return self._allowance - self.counters.bytes if self.spec.fleet_allowance else -1

    def _await_budget(self, hdr: ctypes._Pointer[PktHdr], data: int, size: int) -> bool:
        """The next record (`size` bytes) does not fit the allowance: the capture pauses (packets
        wait in the kernel's ring) until a grant lets it in, or the budget is spent
        (FleetBytesExceeded, the record unwritten), or the capture is stopped. Returns whether
        the record was written. `data` stays valid: nothing else is read from libpcap meanwhile."""
        while not self._stop_reason:
            with self._lock:
                room, exhausted = self._allow_room(), self._exhausted
                self._granted.clear()
            if size <= room:
                self._source().dump_one(hdr, data)
                return True
            if exhausted:
                self.stop(StopReason.FLEET_BYTES_EXCEEDED)
                return False
            self._ask(size - room)
            self._granted.wait(BUDGET_RETRY_S)
        return False

    def _give_back(self) -> None:
        """Idle for IDLE_RETURN_S: the allowance the file does not use goes back to the fleet,
        so that busier instances may use it."""
        with self._lock:
            spare = self._allow_room()
            if spare <= 0 or self._asked or self._exhausted:
                return
            self._allowance -= spare
        self._on_budget("return", spare, self.counters.bytes)

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
            self._open()
        except (PcapError, OSError, OutsideRoot) as e:
            kind = CaptureError.CAPTURE_FAILED if isinstance(e, PcapError) else CaptureError.LOCAL_FILE_FAILED
            self._finish_error(kind, str(e))
            return
        with self._lock:
            c.start_time = utc_now()
            if self.spec.standby is None:
                c.status = Status.RUNNING
            else:  # the time limit bounds the armed period; a trigger sets its own end
                c.status = Status.STANDBY if self._trigger is None else Status.TRIGGERED
            if self.spec.time_limit_s and self._trigger is None:
                standard = self.spec.ring is None or self.spec.standby is not None
                self._arm_timer(self.spec.time_limit_s, StopReason.TIME_EXCEEDED if standard else StopReason.SESSION_TIME_EXCEEDED)
        self._on_change(self)
        if self.spec.standby is not None or self.spec.fleet_allowance:
            threading.Thread(target=self._tick, name=f"tick-{self.spec.name}", daemon=True).start()
        try:
            self._loop()
            self._drain()
            self._close(final=True)
            if self.spec.standby is not None:
                self._write_window()
        except (PcapError, OSError) as e:
            log.exception("capture %s failed", self.spec.name)
            self._close(final=False)
            if self.spec.standby is not None:
                with contextlib.suppress(OSError):
                    self._remove_ring()
            self._finish_error(CaptureError.CAPTURE_FAILED, str(e))
            return
        c.status, c.stop_reason, c.stop_time = Status.STOPPED, self._stop_reason, utc_now()
        log.info("capture %s stopped: %s, %d packets, %d bytes", self.spec.name, c.stop_reason, c.packets, c.bytes)
        self.done.set()
        self._on_change(self)

    def _open(self) -> None:
        spec = self.spec
        first = spec.file_path(0)
        self._root.parts(first)  # OutsideRoot before anything is opened
        if spec.standby is not None and os.path.lexists(spec.path):  # written only at the end: fail now
            raise FileExistsError(f"{spec.path} already exists; fleetcap never overwrites a capture file")
        handle = self._open_source(spec.interface, snaplen=self.snaplen, buffer_size=spec.buffer_size, timeout_ms=READ_TIMEOUT_MS)
        try:
            handle.set_filter(spec.expression)
            handle.open_dump(self._create(first))
        except Exception:
            handle.close()
            raise
        with self._lock:
            self._handle = handle
            if self._stop_reason:  # a stop raced the open
                handle.breakloop()
        self._writing.append(CaptureFile(0, first, size=handle.file_position()))
        self.counters.bytes = self._writing[0].size
        self._discard_unfiltered()

    def _discard_unfiltered(self) -> None:
        """The ring may hold packets from before the filter was attached, which nothing
        filtered: they are dropped by their timestamp, and those from after it are kept. The
        block being filled is handed over only after the read timeout, so that much is waited."""
        handle = self._source()
        since = handle.filter_attached_at
        if not since:
            return
        handle.set_nonblocking(True)
        time.sleep(READ_TIMEOUT_MS / 1000 * 1.5)
        try:
            while not self._stop_reason:
                rc, hdr, data = handle.next_packet()
                if rc != 1 or hdr is None or data is None:
                    return
                h = hdr.contents
                if h.ts.tv_sec + h.ts.tv_usec / 1e6 < since:
                    self._unfiltered += 1  # not counted as received: the filter never saw it
                    continue  # unfiltered: it came before the filter
                if self._write_one(hdr, data) != 1:
                    return  # a limit: the capture ends here
                self._written(1)
        finally:
            handle.set_nonblocking(False)

    def _create(self, path: str) -> int:
        try:
            return self._root.create(path)
        except FileExistsError:
            raise FileExistsError(f"{path} already exists; fleetcap never overwrites a capture file") from None

    def _source(self) -> CaptureSource:
        """The open source; only the capture thread calls this, between open and close."""
        if self._handle is None:
            raise PcapError("the capture source is closed")
        return self._handle

    def _room(self) -> int:
        """Bytes left in the current file; -1 = unlimited."""
        limit = self.file_limit
        return limit - self._writing[-1].size if limit else -1

    def _written(self, n: int) -> None:
        self.counters.packets += n
        current = self._writing[-1]
        current.packets += n
        if n:
            current.tail_from = current.size  # the batch just written began where the file ended
            self._last_write = time.monotonic()
        if n and self.spec.standby is not None:
            current.ended = time.time()  # the newest packet's time, near enough: the ring drops by it
        current.size = self._source().file_position()
        self.counters.bytes = self._file_base + current.size

    def _loop(self) -> None:
        handle, c = self._source(), self.counters
        max_record = PCAP_RECORD_HEADER + self.snaplen
        last_stats = time.monotonic()
        while not self._stop_reason:
            room = self._room()
            if 0 <= room < PCAP_RECORD_HEADER + MIN_FRAME:  # not even the smallest frame fits
                if self.spec.ring is None:
                    self.stop(StopReason.TOTAL_BYTES_EXCEEDED)
                    break
                self._rotate(self.spec.ring)
                continue
            allow = self._allow_room()
            if allow != -1:  # a fleet budget: the batch fits the allowance too; ask ahead when half is used
                room = allow if room == -1 else min(room, allow)
                if allow < self._last_grant // 2 and time.monotonic() - self._last_write < IDLE_RETURN_S:
                    self._ask(0)  # busy: before it runs out (an idle one asks only when a packet needs it)
            if self.spec.clock_shift_us:  # test only: one packet at a time, its time moved
                n = self._write_one_if_it_fits(room if room != -1 else 1 << 62, cutoff=None)
            elif room == -1:
                n = handle.dispatch_to_file(-1)
            elif room >= max_record:
                n = handle.dispatch_to_file(room // max_record)
            else:
                n = self._write_one_if_it_fits(room, cutoff=None)
            if n > 0:
                # On disk at once: a packet counted is a packet a crash cannot take back. One
                # write per ring block at high rates, so this costs next to nothing.
                handle.flush()
                self._written(n)
            if self._stop_reason:
                break
            now = time.monotonic()
            if now - last_stats >= STATS_INTERVAL_S:
                c.received, c.kernel_drops, c.interface_drops = self._stats(handle)
                last_stats = now
                if self.spec.standby is not None:
                    self._standby_upkeep(self.spec.standby)
                if self.spec.fleet_allowance and now - self._last_write >= IDLE_RETURN_S:
                    self._give_back()

    def _stats(self, handle: CaptureSource) -> tuple[int, int, int]:
        """libpcap's counters, less the packets that came before the filter (discarded unread)."""
        received, kernel_drops, interface_drops = handle.stats()
        return max(0, received - self._unfiltered), kernel_drops, interface_drops

    def _standby_upkeep(self, standby: Standby) -> None:
        """Armed: closes a segment older than an eighth of the window, and drops the segments
        whose every packet has left the window. Triggered: stops once the recording after the
        trigger alone could fill the file (the disk's bound; the file's limit is exact in
        _write_window)."""
        if self._trigger is not None:
            if self.spec.total_bytes and self.counters.bytes >= self.spec.total_bytes + standby.ring_bytes:
                self.stop(StopReason.TOTAL_BYTES_EXCEEDED)
            return
        now = time.time()
        current = self._writing[-1]
        if current.packets and now - self._segment_opened >= standby.segment_age_s and self.spec.ring:
            self._rotate(self.spec.ring)  # (a standby spec always has its ring: __post_init__)
        for f in self._writing[:-1]:
            if f.ended < now - standby.window_s - TRIGGER_SLACK_S:
                self._delete(f)
        self._writing[:] = [f for f in self._writing if not f.deleted]

    def _tick(self) -> None:
        """Wakes the loop now and then (it waits in libpcap while no packet comes): an armed
        flight recorder's ring drops what left the window, and an idle capture under a fleet
        budget gives back what it does not use."""
        standby = self.spec.standby
        while not self.done.wait(min(standby.segment_age_s, 1.0) if standby else 1.0):
            with self._lock:
                if (standby is not None and self._trigger is not None) or self._stop_reason:
                    return
                if self._handle is not None:
                    self._handle.breakloop()

    def _write_window(self) -> None:
        """After a flight recorder stops: the window's packets go into the capture file, and the
        ring is removed. Stopped while armed, it stores nothing."""
        c, trig, standby = self.counters, self._trigger, self.spec.standby
        segments = [f.path for f in self._writing if not f.deleted]
        try:
            out = (
                None
                if trig is None or standby is None
                else assemble(
                    self._root,
                    segments,
                    self.spec.path,
                    since=trig.at - standby.window_s,
                    until=trig.at + trig.after_s,
                    limit=self.spec.total_bytes,
                )
            )
        finally:
            self._remove_ring()
        if out is None:
            c.packets = c.bytes = 0
            return
        if out.full:
            self._stop_reason = StopReason.TOTAL_BYTES_EXCEEDED
        self.files.append(CaptureFile(0, self.spec.path, size=out.size, closed=True, packets=out.packets, tail_from=out.last_offset))
        c.packets, c.bytes = out.packets, out.size
        log.info("capture %s: %d packets of the window written to %s", self.spec.name, out.packets, self.spec.path)

    def _remove_ring(self) -> None:
        for f in self._writing:
            if not f.deleted:
                self._root.remove(f.path)
                f.deleted = True
        self._writing.clear()

    def _write_one_if_it_fits(self, room: int, cutoff: float | None) -> int:
        """Takes one packet and writes it if it fits in `room` and arrived by `cutoff`.
        Returns 1 if written, 0 if none was ready or it came after the cutoff, -2 after
        breakloop. A packet that does not fit goes to `_full`."""
        handle = self._source()
        rc, hdr, data = handle.next_packet()
        if rc != 1 or hdr is None or data is None:
            return rc
        h = hdr.contents
        if cutoff is not None and h.ts.tv_sec + h.ts.tv_usec / 1e6 > cutoff:
            return 0
        if PCAP_RECORD_HEADER + h.caplen > room:
            return self._write_one(hdr, data)
        if self.spec.clock_shift_us:
            us = h.ts.tv_sec * 1_000_000 + h.ts.tv_usec + self.spec.clock_shift_us
            moved = PktHdr(caplen=h.caplen, len=h.len)
            moved.ts.tv_sec, moved.ts.tv_usec = divmod(us, 1_000_000)
            hdr = ctypes.pointer(moved)
        handle.dump_one(hdr, data)
        return 1

    def _write_one(self, hdr: ctypes._Pointer[PktHdr], data: int) -> int:
        """Writes one packet if the file's limit and the fleet budget let it (waiting for the
        budget if need be); one that does not fit the file goes to `_full`. Returns 1 if written."""
        size = PCAP_RECORD_HEADER + hdr.contents.caplen
        file_room, allow = self._room(), self._allow_room()
        if file_room != -1 and size > file_room:
            return 1 if self._full(hdr, data) else 0
        if allow != -1 and size > allow:
            return 1 if self._await_budget(hdr, data, size) else 0
        self._source().dump_one(hdr, data)
        return 1

    def _full(self, hdr: ctypes._Pointer[PktHdr], data: int) -> bool:
        """The current file cannot take this packet. Standard mode stops without it;
        continuous mode rotates and writes it into the next file. Returns whether it was written."""
        if self.spec.ring is None:
            self.stop(StopReason.TOTAL_BYTES_EXCEEDED)
            return False
        self._rotate(self.spec.ring)
        room = self._room()
        h = hdr.contents
        if PCAP_RECORD_HEADER + h.caplen > room:
            # Larger than a whole file: keep what fits, as a truncated record, rather than lose it.
            cut = PktHdr(ts=h.ts, caplen=room - PCAP_RECORD_HEADER, len=h.len)
            self._source().dump_one(ctypes.pointer(cut), data)
        else:
            self._source().dump_one(hdr, data)
        return True

    def _rotate(self, ring: Ring) -> None:
        handle = self._source()
        old = self._writing[-1]
        handle.flush()
        old.size = handle.file_position()  # exact once flushed; the path itself is never trusted
        handle.close_dump()
        old.closed = True
        self._file_base += old.size
        index = old.index + 1
        path = self.spec.file_path(index)
        handle.open_dump(self._create(path))
        self._writing.append(CaptureFile(index, path, size=handle.file_position()))
        self._segment_opened = time.time()
        self.counters.bytes = self._file_base + self._writing[-1].size
        if self._trigger is None:  # a triggered flight recorder's ring no longer turns
            for f in self._writing[: -ring.file_count]:
                self._delete(f)
        self._writing[:] = [f for f in self._writing if not f.deleted]
        self._on_change(self)

    def _delete(self, f: CaptureFile) -> None:
        if f.deleted:
            return
        self._root.remove(f.path)  # absent when already uploaded and removed (storage only)
        f.deleted = True
        if self.spec.standby is not None:  # the ring's counters are what it holds now
            self._file_base -= f.size
            self.counters.packets -= f.packets
            self.counters.bytes = self._file_base + self._writing[-1].size

    def _drain(self) -> None:
        """After a stop, writes what the ring still holds from before the stop."""
        if self._stop_reason == StopReason.TOTAL_BYTES_EXCEEDED:
            return
        handle = self._source()
        handle.set_nonblocking()
        # A partly filled block is handed over only after the read timeout.
        time.sleep(READ_TIMEOUT_MS / 1000 * 1.5)
        breaks = 0
        while True:
            room, allow = self._room(), self._allow_room()
            if allow != -1:
                room = allow if room == -1 else min(room, allow)
            n = self._write_one_if_it_fits(room if room != -1 else 1 << 62, cutoff=self._stop_wall)
            if n == -2 and breaks < 2:  # the pending breakloop is reported once
                breaks += 1
                continue
            if n != 1:
                break
            self._written(1)

    def _close(self, *, final: bool) -> None:
        if self._timer:
            self._timer.cancel()
        handle, c = self._handle, self.counters
        if handle is None:
            return
        if final:
            handle.flush()
            self._written(0)
            c.received, c.kernel_drops, c.interface_drops = self._stats(handle)
        with self._lock:
            self._handle = None
        handle.close()
        if final and self._writing:
            self._writing[-1].closed = True  # its size was read from the dumper before the close

    def _finish_error(self, kind: str, message: str) -> None:
        c = self.counters
        c.status, c.stop_reason, c.stop_time = Status.ERROR, StopReason.CAPTURE_FAILED, utc_now()
        c.errors, c.error_message = [kind], message
        log.error("capture %s failed: %s", self.spec.name, message)
        self.done.set()
        self._on_change(self)
