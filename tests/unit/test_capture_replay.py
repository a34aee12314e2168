"""The agent's capture engine on a replayed pcap: limits, ring files, snap length and stop
reasons, without root or network namespaces. Every file it writes is read back by
tests/pcaps.py (struct and dpkt), not by the code that wrote it."""

from __future__ import annotations

import threading

import dpkt
import pytest

from fleetcap.core.vocabulary import Status, StopReason
from fleetcap.node_agent.capture.pcap_format import PCAP_FILE_HEADER, PCAP_RECORD_HEADER
from fleetcap.node_agent.capture.replay_source import ReplaySourceFactory
from fleetcap.node_agent.capture.session import CaptureSession, CaptureSpec, Ring
from tests import pcaps
from tests.replay_traces import write_trace


def run(spec: CaptureSpec, trace: str, *, stop_after_s: float | None = None) -> CaptureSession:
    session = CaptureSession(spec, open_source=ReplaySourceFactory(trace))
    session.start()
    if stop_after_s is not None:
        threading.Timer(stop_after_s, session.stop, args=(StopReason.STOPPED_BY_USER,)).start()
    assert session.join(30), "the capture did not end"
    return session


def spec(tmp_path, **kw) -> CaptureSpec:
    base = {
        "name": "t",
        "capture_id": "t@1",
        "interface": "replay",
        "root": str(tmp_path),
        "path": str(tmp_path / "out.cap"),
        "expression": "udp port 5001",
    }
    base.update(kw)
    return CaptureSpec(**base)


def test_byte_limit_keeps_exactly_the_packets_that_fit(tmp_path):
    trace = str(tmp_path / "in.pcap")
    udp = write_trace(trace, 60)
    record = PCAP_RECORD_HEADER + len(udp[0])
    limit = PCAP_FILE_HEADER + 25 * record + record - 1  # 25 fit, the 26th misses by one byte
    s = run(spec(tmp_path, total_bytes=limit), trace)
    got = pcaps.read(s.spec.path)
    assert (s.counters.status, s.counters.stop_reason) == (Status.STOPPED, StopReason.TOTAL_BYTES_EXCEEDED)
    assert [r.seq for r in got.records] == list(range(25))
    assert {r.dport for r in got.records} == {5001}
    assert got.size == PCAP_FILE_HEADER + 25 * record == s.counters.bytes
    assert s.counters.packets == 25


def test_snap_length_cuts_each_record_and_keeps_the_wire_length(tmp_path):
    trace = str(tmp_path / "in.pcap")
    udp = write_trace(trace, 12)
    s = run(spec(tmp_path, snaplen=42), trace, stop_after_s=0.5)
    with open(s.spec.path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.snaplen == 42
        records = [(bytes(buf), len(buf)) for _, buf in reader]
    assert [data for data, _ in records] == [u[:42] for u in udp]
    assert s.counters.stop_reason == StopReason.STOPPED_BY_USER


def test_time_limit_stops_with_time_exceeded_and_a_prefix_of_the_trace(tmp_path):
    trace = str(tmp_path / "in.pcap")
    write_trace(trace, 200, interval_s=0.01, every_third_tcp=False)  # two seconds of traffic
    s = run(spec(tmp_path, time_limit_s=0.5), trace)
    seqs = [r.seq for r in pcaps.read(s.spec.path).records]
    assert s.counters.stop_reason == StopReason.TIME_EXCEEDED
    assert seqs == list(range(len(seqs)))
    assert 0 < len(seqs) < 200


def test_ring_keeps_the_newest_files_and_every_packet_in_them(tmp_path):
    trace = str(tmp_path / "in.pcap")
    udp = write_trace(trace, 40, every_third_tcp=False)
    record = PCAP_RECORD_HEADER + len(udp[0])
    per_file = 4
    s = run(spec(tmp_path, ring=Ring(file_size=PCAP_FILE_HEADER + per_file * record, file_count=3)), trace, stop_after_s=0.6)
    assert s.counters.stop_reason == StopReason.STOPPED_BY_USER
    kept = sorted(s.files, key=lambda f: f.index)
    # 40 packets, 4 a file: files 0..9 are full, and a full file is rotated at once, so file 10
    # is open and empty. The newest 3 are kept.
    assert [f.index for f in kept] == [8, 9, 10]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == ["out_00008.cap", "out_00009.cap", "out_00010.cap"]
    seqs = [r.seq for f in kept for r in pcaps.read(f.path).records]
    assert seqs == list(range(32, 40))


@pytest.mark.parametrize("reason", [StopReason.STOPPED_BY_USER, StopReason.DELETED])
def test_stop_on_an_idle_source_ends_with_the_reason_given(tmp_path, reason):
    trace = str(tmp_path / "in.pcap")
    write_trace(trace, 3, every_third_tcp=False)
    session = CaptureSession(spec(tmp_path), open_source=ReplaySourceFactory(trace))
    session.start()
    while session.counters.packets < 3:  # played out: the source is idle now
        assert not session.join(0.05)
    session.stop(reason)
    assert session.join(10)
    assert (session.counters.status, session.counters.stop_reason, session.counters.packets) == (Status.STOPPED, reason, 3)
