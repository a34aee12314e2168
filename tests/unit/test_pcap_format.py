"""Which pcap files the agent reads (node_agent/capture/pcap_format.py): either byte order,
microsecond or nanosecond timestamps; anything else is not a pcap file."""

import struct

import pytest

from fleetcap.node_agent.capture.pcap_format import record_format


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (struct.pack("<I", 0xA1B2C3D4), ("<", 1)),
        (struct.pack(">I", 0xA1B2C3D4), (">", 1)),
        (struct.pack("<I", 0xA1B23C4D), ("<", 1000)),
        (struct.pack(">I", 0xA1B23C4D), (">", 1000)),
        (b"\x0a\x0d\x0d\x0a", None),  # pcapng: not what a capture file of ours is
        (b"\xd4\xc3", None),  # too short to say
        (b"", None),
    ],
)
def test_the_magic_says_the_byte_order_and_the_timestamp_unit(header, expected):
    assert record_format(header + b"\x00" * 20 if len(header) == 4 else header) == expected
