"""The instance state machine and the capture-level aggregate."""

from __future__ import annotations

import pytest

from fleetcap.coordinator import status as st
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import state_pb2


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        ("NotStarted", "Running", True),
        ("Running", "Running", True),
        ("Running", "Stopped", True),
        ("Running", "Error", True),
        ("Stopped", "Error", True),
        ("Stopped", "Stopped", True),
        ("Stopped", "Running", False),
        ("Error", "Running", False),
        ("Error", "Stopped", False),
        ("Running", "NotStarted", False),
        ("NotStarted", "Bogus", False),
    ],
)
def test_transitions(old, new, ok):
    if ok:
        st.check_transition(old, new)
    else:
        with pytest.raises(st.IllegalTransition):
            st.check_transition(old, new)


def test_an_instance_lost_only_by_silence_recovers_when_its_agent_returns():
    st.check_transition("Error", "Running", ["AgentStopped"])
    st.check_transition("Error", "Stopped", ["AgentStopped"])
    with pytest.raises(st.IllegalTransition):
        st.check_transition("Error", "Running", ["CaptureFailed"])
    with pytest.raises(st.IllegalTransition):
        st.check_transition("Error", "Stopped", ["AgentStopped", "StorageFailed"])


def record(stop_requested=""):
    return state_pb2.CaptureRecord(resource=pb.PacketCaptureResult(name="c", id="/x/c"), stop_requested=stop_requested)


def inst(iid, status, reason="", errors=(), start=""):
    return state_pb2.InstanceRecord(
        status=pb.InstanceStatus(
            instance_id=iid, packet_capture_status=status, stop_reason=reason, packet_capture_error=list(errors), capture_start_time=start
        )
    )


def test_aggregate_states_and_reasons():
    agg = st.aggregate(record(), [inst("10", "NotStarted"), inst("2", "NotStarted")])
    assert agg.packet_capture_status == "NotStarted"
    assert [i.instance_id for i in agg.instances] == ["2", "10"]
    agg = st.aggregate(
        record(), [inst("0", "Running", start="2026-01-01T00:00:02Z"), inst("1", "Stopped", "TimeExceeded", start="2026-01-01T00:00:01Z")]
    )
    assert (agg.packet_capture_status, agg.stop_reason, agg.capture_start_time) == ("Running", "", "2026-01-01T00:00:01Z")
    agg = st.aggregate(record(), [inst("0", "Stopped", "TimeExceeded"), inst("1", "Stopped", "TimeExceeded")])
    assert (agg.packet_capture_status, agg.stop_reason) == ("Stopped", "TimeExceeded")
    agg = st.aggregate(record(), [inst("0", "Stopped", "TotalBytesExceeded"), inst("1", "Stopped", "TimeExceeded")])
    assert agg.stop_reason == "Mixed"
    agg = st.aggregate(
        record("StoppedByUser"), [inst("0", "Stopped", "StoppedByUser"), inst("1", "Error", "AgentStopped", ["AgentStopped"])]
    )
    assert (agg.packet_capture_status, agg.stop_reason, list(agg.packet_capture_error)) == ("Stopped", "StoppedByUser", ["AgentStopped"])
    agg = st.aggregate(record(), [inst("0", "Error", "CaptureFailed", ["CaptureFailed"])])
    assert agg.packet_capture_status == "Error"


def test_uploads_settled():
    never = pb.InstanceStatus(packet_capture_status="Stopped", files=[pb.CaptureFile(file_path="/var/captures/a.cap")])
    assert st.uploads_settled(never, upload=True)
    assert st.uploads_settled(never, upload=False)
    s = pb.InstanceStatus(
        packet_capture_status="Stopped", capture_start_time="2026-12-02T21:00:00.000000Z", files=[pb.CaptureFile(upload_complete=False)]
    )
    # Kept on the instance: settled once the agent has hashed the file (what a download checks).
    assert not st.uploads_settled(s, upload=True)
    assert not st.uploads_settled(s, upload=False)
    s.files[0].sha256 = "ab" * 32
    assert st.uploads_settled(s, upload=False)
    assert not st.uploads_settled(s, upload=True)
    s.files[0].upload_complete = True
    assert st.uploads_settled(s, upload=True)
    assert not st.uploads_settled(pb.InstanceStatus(packet_capture_status="Running"), upload=False)
    assert st.uploads_settled(
        pb.InstanceStatus(packet_capture_status="Stopped", capture_start_time="2026-12-02T21:00:00Z"), upload=True
    )  # a flight recorder stopped while armed
    assert st.uploads_settled(pb.InstanceStatus(packet_capture_status="Error", files=[pb.CaptureFile()]), upload=False)
