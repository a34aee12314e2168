"""The capture thread's work between opening the source and closing it.

While the current file has room for `n` records of the largest possible size (16-byte header +
snaplen), pcap_dispatch writes up to `n` packets in C, without a Python frame per packet. Only
in the last stretch, where the next record might not fit, packets are taken one at a time; the
one that would cross the limit ends the capture unwritten, or, in continuous mode, opens the
next file of the ring and goes there. A fleet budget's gate (budget_gate.py) bounds each batch
too, and a flight recorder's ring (flight_recorder.py) is kept to its window as it goes.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fleetcap.core.libpcap import PktHdr
from fleetcap.core.vocabulary import StopReason
from fleetcap.node_agent.capture.budget_gate import IDLE_RETURN_S, BudgetGate, Verdict
from fleetcap.node_agent.capture.files import CaptureFile, CaptureFiles
from fleetcap.node_agent.capture.flight_recorder import FlightRecorder
from fleetcap.node_agent.capture.pcap_format import PCAP_RECORD_HEADER
from fleetcap.node_agent.capture.source import CaptureSource

if TYPE_CHECKING:
    from fleetcap.node_agent.capture.session import CaptureSpec, Counters, Ring

# libpcap's read timeout: how long a partly filled ring block waits before it is handed over.
READ_TIMEOUT_MS = 100
STATS_INTERVAL_S = 0.2
# The smallest record payload: an Ethernet header.
MIN_FRAME = 14


class CaptureLoop:
    def __init__(
        self,
        spec: CaptureSpec,
        handle: CaptureSource,
        out: CaptureFiles,
        counters: Counters,
        *,
        snaplen: int,
        file_limit: int,
        recorder: FlightRecorder | None,
        budget: BudgetGate,
        stop_reason: Callable[[], str],
        stop: Callable[[str], None],
        on_change: Callable[[], None],
    ):
        """`stop_reason()` is the session's reason to stop ("" while it runs), `stop(reason)`
        ends it, and `on_change()` reports a file opened, closed or deleted."""
        self.spec = spec
        self.handle = handle
        self._out = out
        self.counters = counters
        self.snaplen = snaplen
        self.file_limit = file_limit
        self.recorder = recorder
        self.budget = budget
        self._stop_reason = stop_reason
        self._stop = stop
        self._on_change = on_change
        self.unfiltered = 0  # packets read from the ring before the filter was attached
        self.last_write = time.monotonic()

    def discard_unfiltered(self) -> None:
        """The ring may hold packets from before the filter was attached, which nothing
        filtered: they are dropped by their timestamp, and those from after it are kept. The
        block being filled is handed over only after the read timeout, so that much is waited."""
        handle = self.handle
        since = handle.filter_attached_at
        if not since:
            return
        handle.set_nonblocking(True)
        time.sleep(READ_TIMEOUT_MS / 1000 * 1.5)
        try:
            while not self._stop_reason():
                rc, hdr, data = handle.next_packet()
                if rc != 1 or hdr is None or data is None:
                    return
                h = hdr.contents
                if h.ts.tv_sec + h.ts.tv_usec / 1e6 < since:
                    self.unfiltered += 1  # not counted as received: the filter never saw it
                    continue  # unfiltered: it came before the filter
                if self._write_one(hdr, data) != 1:
                    return  # a limit: the capture ends here
                self.written(1)
        finally:
            handle.set_nonblocking(False)

    def room(self) -> int:
        """Bytes left in the current file; -1 = unlimited."""
        return self._out.room(self.file_limit)

    def written(self, n: int) -> None:
        self.counters.packets += n
        current = self._out.current
        current.packets += n
        if n:
            current.tail_from = current.size  # the batch just written began where the file ended
            self.last_write = time.monotonic()
        if n and self.recorder is not None:
            current.ended = time.time()  # the newest packet's time, near enough: the ring drops by it
        current.size = self.handle.file_position()
        self.counters.bytes = self._out.total_bytes

    def run(self) -> None:
        handle, c = self.handle, self.counters
        max_record = PCAP_RECORD_HEADER + self.snaplen
        last_stats = time.monotonic()
        while not self._stop_reason():
            room = self.room()
            if 0 <= room < PCAP_RECORD_HEADER + MIN_FRAME:  # not even the smallest frame fits
                if self.spec.ring is None:
                    self._stop(StopReason.TOTAL_BYTES_EXCEEDED)
                    break
                self._rotate(self.spec.ring)
                continue
            allow = self.budget.room(c.bytes)
            if allow != -1:  # a fleet budget: the batch fits the allowance too; ask ahead when half is used
                room = allow if room == -1 else min(room, allow)
                if allow < self.budget.last_grant // 2 and time.monotonic() - self.last_write < IDLE_RETURN_S:
                    self.budget.ask(0, c.bytes)  # busy: before it runs out (an idle one asks only when a packet needs it)
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
                self.written(n)
            if self._stop_reason():
                break
            now = time.monotonic()
            if now - last_stats >= STATS_INTERVAL_S:
                c.received, c.kernel_drops, c.interface_drops = self.stats(handle)
                last_stats = now
                if self.recorder is not None:
                    self._standby_upkeep(self.recorder)
                if self.budget.enabled and now - self.last_write >= IDLE_RETURN_S:
                    self.budget.give_back(c.bytes)

    def stats(self, handle: CaptureSource) -> tuple[int, int, int]:
        """libpcap's counters, less the packets that came before the filter (discarded unread)."""
        received, kernel_drops, interface_drops = handle.stats()
        return max(0, received - self.unfiltered), kernel_drops, interface_drops

    def _standby_upkeep(self, recorder: FlightRecorder) -> None:
        """Armed: closes a segment old enough, and drops the segments whose every packet has
        left the window. Triggered: stops once the recording after the trigger could fill the file."""
        if recorder.past_bound(self.counters.bytes, self.spec.total_bytes):
            self._stop(StopReason.TOTAL_BYTES_EXCEEDED)
        now = time.time()
        if recorder.segment_due(self._out.current.packets, now) and self.spec.ring:
            self._rotate(self.spec.ring)  # (a standby spec always has its ring: __post_init__)
        for f in self._out.writing[:-1]:
            if recorder.out_of_window(f.ended, now):
                self._delete(f)
        self._out.forget_deleted()

    def _write_one_if_it_fits(self, room: int, cutoff: float | None) -> int:
        """Takes one packet and writes it if it fits in `room` and arrived by `cutoff`.
        Returns 1 if written, 0 if none was ready or it came after the cutoff, -2 after
        breakloop. A packet that does not fit goes to `_full`."""
        handle = self.handle
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
        file_room, allow = self.room(), self.budget.room(self.counters.bytes)
        if file_room != -1 and size > file_room:
            return 1 if self._full(hdr, data) else 0
        if allow != -1 and size > allow:
            return 1 if self._await_budget(hdr, data, size) else 0
        self.handle.dump_one(hdr, data)
        return 1

    def _await_budget(self, hdr: ctypes._Pointer[PktHdr], data: int, size: int) -> bool:
        """The next record does not fit the fleet budget's allowance: the capture pauses until a
        grant lets it in (written), the budget is spent (FleetBytesExceeded, unwritten), or the
        capture stops. `data` stays valid: nothing else is read from libpcap meanwhile."""
        verdict = self.budget.wait(size, lambda: self.counters.bytes, lambda: bool(self._stop_reason()))
        if verdict is Verdict.FITS:
            self.handle.dump_one(hdr, data)
            return True
        if verdict is Verdict.SPENT:
            self._stop(StopReason.FLEET_BYTES_EXCEEDED)
        return False

    def _full(self, hdr: ctypes._Pointer[PktHdr], data: int) -> bool:
        """The current file cannot take this packet. Standard mode stops without it;
        continuous mode rotates and writes it into the next file. Returns whether it was written."""
        if self.spec.ring is None:
            self._stop(StopReason.TOTAL_BYTES_EXCEEDED)
            return False
        self._rotate(self.spec.ring)
        room = self.room()
        h = hdr.contents
        if PCAP_RECORD_HEADER + h.caplen > room:
            # Larger than a whole file: keep what fits, as a truncated record, rather than lose it.
            cut = PktHdr(ts=h.ts, caplen=room - PCAP_RECORD_HEADER, len=h.len)
            self.handle.dump_one(ctypes.pointer(cut), data)
        else:
            self.handle.dump_one(hdr, data)
        return True

    def _rotate(self, ring: Ring) -> None:
        self._out.rotate(self.handle)
        if self.recorder is not None:
            self.recorder.segment_opened = time.time()
        self.counters.bytes = self._out.total_bytes
        if self.recorder is None or self.recorder.trigger is None:  # a triggered flight recorder's ring no longer turns
            for f in self._out.writing[: -ring.file_count]:
                self._delete(f)
        self._out.forget_deleted()
        self._on_change()

    def _delete(self, f: CaptureFile) -> None:
        standby = self.recorder is not None  # the ring's counters are what it holds now
        if self._out.delete(f, uncount=standby) and standby:
            self.counters.packets -= f.packets
            self.counters.bytes = self._out.total_bytes

    def drain(self, stop_wall: float) -> None:
        """After a stop, writes what the ring still holds from before the stop."""
        if self._stop_reason() == StopReason.TOTAL_BYTES_EXCEEDED:
            return
        handle = self.handle
        handle.set_nonblocking()
        # A partly filled block is handed over only after the read timeout.
        time.sleep(READ_TIMEOUT_MS / 1000 * 1.5)
        breaks = 0
        while True:
            room, allow = self.room(), self.budget.room(self.counters.bytes)
            if allow != -1:
                room = allow if room == -1 else min(room, allow)
            n = self._write_one_if_it_fits(room if room != -1 else 1 << 62, cutoff=stop_wall)
            if n == -2 and breaks < 2:  # the pending breakloop is reported once
                breaks += 1
                continue
            if n != 1:
                break
            self.written(1)
