"""What the agent says of a closed capture file: its SHA-256, and the times of its first and
last packet (for the signed manifest), in one read of the file.

The hash needs every byte; the times need the record headers, but only the first record and
the last ones: the session remembers where its last batch of records began (`tail_from`), so
the headers are walked from there only, not across a gigabyte of small packets in Python.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct

from fleetcap.node_agent.capture.capture_root import CaptureRoot
from fleetcap.node_agent.capture.pcap_format import PCAP_FILE_HEADER, PCAP_RECORD_HEADER, record_format

CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class FileSummary:
    sha256: str
    first_us: int  # microseconds since the epoch; 0 = no packet
    last_us: int


def summarize(root: CaptureRoot, path: str, tail_from: int = PCAP_FILE_HEADER) -> FileSummary:
    """`tail_from` must be a record boundary (or the file header's end); every record from
    there on is walked, and the last whole one gives the last packet's time."""
    h = hashlib.sha256()
    head = bytearray()
    carry, pos = b"", 0
    next_rec = max(PCAP_FILE_HEADER, tail_from)
    last: tuple[int, int, int] | None = None  # (sec, frac, end offset) of the last header read
    whole: tuple[int, int] | None = None  # (sec, frac) of the last record known to be whole
    order, div = "<", 1
    with os.fdopen(root.open_read(path), "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if len(head) < PCAP_FILE_HEADER + PCAP_RECORD_HEADER:
                head += chunk[: PCAP_FILE_HEADER + PCAP_RECORD_HEADER - len(head)]
                order, div = record_format(bytes(head)) or ("<", 1)
            data = carry + chunk
            base = pos - len(carry)
            pos += len(chunk)
            while next_rec + PCAP_RECORD_HEADER <= base + len(data) and next_rec >= base:
                sec, frac, caplen, _ = struct.unpack_from(order + "IIII", data, next_rec - base)
                if last is not None and last[2] <= pos:
                    whole = (last[0], last[1])
                last = (sec, frac, next_rec + PCAP_RECORD_HEADER + caplen)
                next_rec = last[2]
            carry = data[next_rec - base :] if base <= next_rec < base + len(data) else b""
    if last is not None and last[2] <= pos:
        whole = (last[0], last[1])
    first = 0
    if len(head) >= PCAP_FILE_HEADER + PCAP_RECORD_HEADER:
        sec, frac, caplen, _ = struct.unpack_from(order + "IIII", head, PCAP_FILE_HEADER)
        if PCAP_FILE_HEADER + PCAP_RECORD_HEADER + caplen <= pos:
            first = sec * 1_000_000 + frac // div
    last_us = whole[0] * 1_000_000 + whole[1] // div if whole and first else 0
    return FileSummary(h.hexdigest(), first, last_us)
