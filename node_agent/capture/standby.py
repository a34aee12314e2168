"""The flight recorder's ring and the file cut from it.

While armed, a capture writes into a ring of SEGMENTS hidden files next to its capture file,
each at most an eighth of the ring's bytes; the oldest goes when a new one would cross the
byte cap, or once every packet in it is older than the window. A trigger stops the ring from
turning; when the seconds after it have passed, `assemble` copies the records whose time falls
in [trigger - window, trigger + after] into the capture file, in order, exactly as they were
captured, and the ring is removed.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import struct

from fleetcap.node_agent.capture.capture_root import CaptureRoot
from fleetcap.node_agent.capture.pcap_format import PCAP_FILE_HEADER, PCAP_RECORD_HEADER, record_format

SEGMENTS = 8
# A segment is dropped for its age only this long after it left the window: a trigger takes
# time to reach the agent, and its time is the coordinator's.
TRIGGER_SLACK_S = 5.0


@dataclasses.dataclass(frozen=True)
class Standby:
    """Keep the last window_s seconds of packets, in at most ring_bytes on disk."""

    window_s: float
    ring_bytes: int

    @property
    def segment_size(self) -> int:
        # The ninth file exists for a moment (opened before the oldest goes) with its header only.
        return (self.ring_bytes - PCAP_FILE_HEADER) // SEGMENTS

    @property
    def segment_age_s(self) -> float:
        """A segment is closed after this long, so that time drops the ring an eighth at a time."""
        return self.window_s / SEGMENTS


def segment_path(path: str, index: int) -> str:
    """/var/x/a.cap -> /var/x/.a.cap.standby-00003: hidden, and never a name the API reports."""
    head, tail = posixpath.split(path)
    return posixpath.join(head, f".{tail}.standby-{index:05d}")


def remove_segments(root: CaptureRoot, path: str) -> int:
    """Removes every segment of the capture at `path` (an armed ring an agent restart left)."""
    head, tail = posixpath.split(path)
    prefix = f".{tail}.standby-"
    removed = 0
    try:
        names = os.listdir(head)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            root.remove(posixpath.join(head, name))
            removed += 1
    return removed


@dataclasses.dataclass
class Assembled:
    packets: int
    size: int
    full: bool  # the next record in the window would have crossed the byte limit
    last_offset: int = PCAP_FILE_HEADER  # where the file's last record begins


def assemble(root: CaptureRoot, segments: list[str], out_path: str, *, since: float, until: float, limit: int) -> Assembled:
    """Writes the records of `segments` (in order) whose time is in [since, until] into a new
    file at `out_path`, byte for byte, under `limit` bytes (0 = none) with the same rule as a
    standard capture: the first record that would cross the limit ends the file, unwritten."""
    out = os.fdopen(root.create(out_path), "wb")
    packets, size, full, header_written = 0, 0, False, False
    last_offset = PCAP_FILE_HEADER
    with out:
        for seg in segments:
            with os.fdopen(root.open_read(seg), "rb") as f:
                data = f.read()
            fmt = record_format(data[:PCAP_FILE_HEADER]) if len(data) >= PCAP_FILE_HEADER else None
            if fmt is None:
                continue  # a segment cut before its header was written holds nothing
            order, divisor = fmt
            if not header_written:
                out.write(data[:PCAP_FILE_HEADER])
                size, header_written = PCAP_FILE_HEADER, True
            record = struct.Struct(order + "IIII")
            off, run_start = PCAP_FILE_HEADER, -1
            while off + PCAP_RECORD_HEADER <= len(data):
                sec, frac, caplen, _ = record.unpack_from(data, off)
                end = off + PCAP_RECORD_HEADER + caplen
                if end > len(data):
                    break  # a partial record (the ring was cut mid-write): never invented
                t = sec + frac // divisor / 1e6
                keep = since <= t <= until
                if keep and limit and size + (end - off) > limit:
                    full = True
                    break
                if keep:
                    if run_start < 0:
                        run_start = off
                    last_offset = size
                    size += end - off
                    packets += 1
                elif run_start >= 0:
                    out.write(data[run_start:off])
                    run_start = -1
                off = end
            if run_start >= 0:
                out.write(data[run_start:off])
            if full:
                break
        if not header_written:
            raise OSError("the flight recorder's ring holds no readable segment")
        out.flush()
        os.fsync(out.fileno())
    return Assembled(packets, size, full, last_offset)
