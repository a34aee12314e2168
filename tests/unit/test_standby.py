"""The flight recorder's cut: `assemble` copies exactly the records of the window, byte for
byte, in order, under the byte limit's rule, and never invents a partial record."""

from __future__ import annotations

import hashlib
import struct

import pytest

from fleetcap.node_agent.capture.capture_root import CaptureRoot
from fleetcap.node_agent.capture.file_summary import summarize
from fleetcap.node_agent.capture.standby import Standby, assemble, remove_segments, segment_path

HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def record(t: float, payload: bytes) -> bytes:
    sec = int(t)
    return struct.pack("<IIII", sec, round((t - sec) * 1e6), len(payload), len(payload)) + payload


def segment(root, name: str, *records: bytes) -> str:
    path = str(root / name)
    with open(path, "wb") as f:
        f.write(HEADER + b"".join(records))
    return path


@pytest.fixture
def root(tmp_path):
    return tmp_path


def test_only_the_window_is_kept_byte_for_byte_across_segments(root):
    r = [record(100 + i, bytes([i]) * (20 + i)) for i in range(10)]
    a = segment(root, "s0", *r[:4])
    b = segment(root, "s1", *r[4:8])
    c = segment(root, "s2", *r[8:])
    out = assemble(CaptureRoot(str(root)), [a, b, c], str(root / "out.cap"), since=102, until=108.5, limit=0)
    assert (out.packets, out.full) == (7, False)
    data = (root / "out.cap").read_bytes()
    assert data == HEADER + b"".join(r[2:9])  # 102 and 108 are in: both ends are closed
    assert out.size == len(data)


def test_the_byte_limit_ends_the_file_before_the_record_that_would_cross_it(root):
    r = [record(100 + i, b"x" * 100) for i in range(5)]  # 116 bytes each
    a = segment(root, "s0", *r)
    out = assemble(CaptureRoot(str(root)), [a], str(root / "out.cap"), since=0, until=1e10, limit=24 + 3 * 116 + 115)
    assert (out.packets, out.size, out.full) == (3, 24 + 3 * 116, True)
    assert (root / "out.cap").read_bytes() == HEADER + b"".join(r[:3])
    exact = assemble(CaptureRoot(str(root)), [a], str(root / "out2.cap"), since=0, until=1e10, limit=24 + 5 * 116)
    assert (exact.packets, exact.full) == (5, False)


def test_a_partial_record_at_a_segment_end_is_left_out(root):
    whole, cut = record(100, b"a" * 50), record(101, b"b" * 50)[:30]
    a = segment(root, "s0", whole, cut)
    b = segment(root, "s1", record(102, b"c" * 10))
    out = assemble(CaptureRoot(str(root)), [a, b], str(root / "out.cap"), since=0, until=1e10, limit=0)
    assert out.packets == 2
    assert (root / "out.cap").read_bytes() == HEADER + whole + record(102, b"c" * 10)


def test_an_existing_file_is_never_overwritten(root):
    a = segment(root, "s0", record(100, b"a"))
    (root / "out.cap").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        assemble(CaptureRoot(str(root)), [a], str(root / "out.cap"), since=0, until=1e10, limit=0)
    assert (root / "out.cap").read_bytes() == b"keep"


def test_segments_are_hidden_and_removed_by_name_only(root):
    path = str(root / "rec.cap")
    assert segment_path(path, 3) == str(root / ".rec.cap.standby-00003")
    for i in range(3):
        (root / f".rec.cap.standby-{i:05d}").write_bytes(b"")
    (root / ".rec.cap.standby-notanumber").write_bytes(b"")
    (root / ".other.cap.standby-00000").write_bytes(b"")
    assert remove_segments(CaptureRoot(str(root)), path) == 3
    assert sorted(p.name for p in root.iterdir()) == [".other.cap.standby-00000", ".rec.cap.standby-notanumber"]


def test_the_ring_is_eight_segments_within_its_byte_cap():
    s = Standby(window_s=30, ring_bytes=8 << 20)
    assert 8 * s.segment_size + 24 <= 8 << 20
    assert s.segment_size >= 16 + 262144  # the largest record fits in one segment
    assert s.segment_age_s == 30 / 8


def test_a_file_summary_gives_the_hash_and_first_and_last_packet_times(root):
    r = [record(1_700_000_000 + i + 0.000007 * i, bytes([i]) * (30 + i)) for i in range(6)]
    path = segment(root, "f.cap", *r)
    data = open(path, "rb").read()
    boundary = 24 + sum(len(x) for x in r[:4])
    for tail_from in (24, boundary):  # walked from the start, or from the last batch's start
        s = summarize(CaptureRoot(str(root)), path, tail_from)
        assert (s.sha256, s.first_us, s.last_us) == (hashlib.sha256(data).hexdigest(), 1_700_000_000_000_000, 1_700_000_005_000_035)
    # A file cut mid-record (an agent killed while writing): the last whole record's time.
    with open(path, "ab") as f:
        f.write(record(1_700_000_099, b"z" * 40)[:30])
    assert summarize(CaptureRoot(str(root)), path, boundary).last_us == 1_700_000_005_000_035
    empty = summarize(CaptureRoot(str(root)), segment(root, "empty.cap"), 24)
    assert (empty.first_us, empty.last_us) == (0, 0)
