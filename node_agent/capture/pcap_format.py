"""The classic pcap layout the agent writes and reads back: the header sizes, and how a file's
magic number says its byte order and timestamp unit (libpcap writes microseconds in the host's
order; a nanosecond file is read too)."""

from __future__ import annotations

PCAP_FILE_HEADER = 24
PCAP_RECORD_HEADER = 16
# magic (as the first 4 bytes read little-endian) -> the divisor from its fraction to µs
_DIVISOR = {0xA1B2C3D4: 1, 0xA1B23C4D: 1000}


def record_format(header: bytes) -> tuple[str, int] | None:
    """(struct byte order, divisor of the fraction to microseconds) of a file that starts with
    `header`; None when it is not a pcap file."""
    if len(header) < 4:
        return None
    for order in ("<", ">"):
        magic = int.from_bytes(header[:4], "little" if order == "<" else "big")
        if magic in _DIVISOR:
            return order, _DIVISOR[magic]
    return None
