"""The gateway's streaming merge gives exactly the bytes of the CLI's merge of the same files,
however the streams are cut into chunks: ring files, a file cut mid-record, a header-only
file, nanosecond and big-endian pcaps."""

from __future__ import annotations

import asyncio
import io
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetcap.clients import pcapng


def pcap(records: list[tuple[int, bytes]], *, nsec: bool = False, big: bool = False, cut: int = 0) -> bytes:
    e = ">" if big else "<"
    out = struct.pack(e + "IHHiIII", 0xA1B23C4D if nsec else 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for ts_us, data in records:
        frac = (ts_us % 1_000_000) * (1000 if nsec else 1)
        out += struct.pack(e + "IIII", ts_us // 1_000_000, frac, len(data), len(data) + 4) + data
    return out[: len(out) - cut] if cut else out


FILES = {
    "a1": pcap([(1_000_000, b"a" * 60), (3_000_000, b"b" * 61)]),
    "a2": pcap([(5_000_000, b"c" * 62)]),  # the ring's next file
    "b1": pcap([(2_000_000, b"d" * 63), (4_000_000, b"e" * 64), (6_000_000, b"f" * 70)], nsec=True, cut=10),
    "c1": pcap([]),  # a header only
    "d1": pcap([(2_500_000, b"g" * 65), (2_500_000, b"h" * 66)], big=True),
}
SOURCES = [("web_0", ["a1", "a2"]), ("web_1", ["b1"]), ("web_2", ["c1"]), ("web_3", ["d1"])]


def merged_from_files(tmp_path) -> bytes:
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    out = io.BytesIO()
    pcapng.merge([pcapng.Source(name, f"id/{name}", [str(tmp_path / f) for f in files]) for name, files in SOURCES], out)
    return out.getvalue()


def merged_from_streams(cuts: list[int]) -> bytes:
    def opener(name: str):
        async def chunks():
            data, i, k = FILES[name], 0, 0
            while i < len(data):
                step = cuts[k % len(cuts)]
                yield data[i : i + step]
                i, k = i + step, k + 1

        return chunks

    async def run() -> bytes:
        sources = [pcapng.StreamSource(name, f"id/{name}", [opener(f) for f in files]) for name, files in SOURCES]
        return b"".join([chunk async for chunk in pcapng.merge_stream(sources)])

    return asyncio.run(run())


def packets(pcapng_bytes: bytes) -> list[tuple[int, int, bytes]]:
    """(interface, timestamp in µs, data) of each enhanced packet block."""
    out, i = [], 0
    while i < len(pcapng_bytes):
        kind, length = struct.unpack_from("<II", pcapng_bytes, i)
        if kind == 6:
            iface, hi, lo, caplen, _ = struct.unpack_from("<IIIII", pcapng_bytes, i + 8)
            out.append((iface, (hi << 32) | lo, pcapng_bytes[i + 28 : i + 28 + caplen]))
        i += length
    return out


def test_the_streamed_merge_is_the_file_merge(tmp_path):
    expected = merged_from_files(tmp_path)
    assert merged_from_streams([1 << 20]) == expected
    # In time order, ties by instance; b1's last record, cut mid-way, is left out.
    assert packets(expected) == [
        (0, 1_000_000, b"a" * 60),
        (1, 2_000_000, b"d" * 63),
        (3, 2_500_000, b"g" * 65),
        (3, 2_500_000, b"h" * 66),
        (0, 3_000_000, b"b" * 61),
        (1, 4_000_000, b"e" * 64),
        (0, 5_000_000, b"c" * 62),
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=8))
def test_any_chunking_gives_the_same_bytes(tmp_path_factory, cuts):
    expected = merged_from_files(tmp_path_factory.mktemp("m"))
    assert merged_from_streams(cuts) == expected
