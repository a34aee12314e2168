"""What an agent may say: every field it supplies is bounded before etcd (coordinator/fleet/
reports.py), a settled record is final, and changes of state are paced per agent."""

from __future__ import annotations

import asyncio

import pytest

from fleetcap.coordinator.fleet import reports
from fleetcap.coordinator.fleet.agents import CHANGE_BURST, CHANGES_PER_S
from fleetcap.coordinator.token_bucket import TokenBucket
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import fleet_pb2
from tests.unit.coordinator_support import params, setup


def report(**status) -> fleet_pb2.CaptureProgress:
    return fleet_pb2.CaptureProgress(capture_name="pc1", capture_id="x@1", status=pb.InstanceStatus(**status))


def test_a_huge_error_message_is_cut_and_the_rest_of_the_report_kept():
    r = report(packet_capture_status="Error", packet_capture_error=["CaptureFailed"], error_message="E" * 1_400_000)
    reports.check_progress(r)
    assert r.status.error_message == "E" * reports.MAX_ERROR_MESSAGE_CHARS + "..."
    assert list(r.status.packet_capture_error) == ["CaptureFailed"]


@pytest.mark.parametrize(
    ("progress", "message"),
    [
        (report(packet_capture_status="Hacked"), "packetCaptureStatus: 'Hacked' is not a status"),
        (report(packet_capture_status="Stopped", stop_reason="Because"), "stopReason: 'Because' is not a stop reason"),
        (
            report(packet_capture_status="Error", packet_capture_error=["CaptureFailed", "CaptureFailed"]),
            "packetCaptureError: each a known error word, at most once",
        ),
        (
            report(packet_capture_status="Error", packet_capture_error=["Pwned"]),
            "packetCaptureError: each a known error word, at most once",
        ),
        (report(packet_capture_status="Running", capture_start_time="2" * 41), "capture_start_time: 41 characters, at most 40"),
        (
            report(packet_capture_status="Running", files=[pb.CaptureFile(file_path="/var/captures/a.cap")] * 10_003),
            "files: 10003, at most 10002",
        ),
        (
            report(packet_capture_status="Running", files=[pb.CaptureFile(file_path="/" + "a" * 2000)]),
            "files.file_path: 2001 characters, at most 1024",
        ),
        (report(packet_capture_status="Running", trigger_source="s" * 600), "trigger_source: 600 characters, at most 512"),
        (
            fleet_pb2.CaptureProgress(capture_name="a\nb", status=pb.InstanceStatus(packet_capture_status="Running")),
            "capture_name: 'a\nb' is not a capture name",
        ),
    ],
)
def test_a_report_out_of_bounds_is_refused_naming_the_field(progress, message):
    with pytest.raises(reports.ReportRefused) as e:
        reports.check_progress(progress)
    assert str(e.value) == message


def test_a_hello_out_of_bounds_is_refused_naming_the_field():
    for hello, message in (
        (fleet_pb2.AgentHello(hostname="h" * 300), "hostname: 300 characters, at most 253"),
        (fleet_pb2.AgentHello(interface="i" * 65), "interface: 65 characters, at most 64"),
        (fleet_pb2.AgentHello(addresses=["10.0.0.1"] * 257), "addresses: 257, at most 256"),
        (fleet_pb2.AgentHello(captures=[report(packet_capture_status="Nope")]), "packetCaptureStatus: 'Nope' is not a status"),
    ):
        with pytest.raises(reports.ReportRefused) as e:
            reports.check_hello(hello)
        assert str(e.value) == message


def test_changes_of_state_are_paced_never_dropped():
    pace = TokenBucket(CHANGE_BURST, CHANGES_PER_S)
    assert [pace.when(100.0) for _ in range(CHANGE_BURST)] == [100.0] * CHANGE_BURST
    assert pace.when(100.0) == pytest.approx(100.0 + 1 / CHANGES_PER_S)
    assert pace.when(100.0 + 1 / CHANGES_PER_S) == pytest.approx(100.0 + 1 / CHANGES_PER_S)


def test_a_settled_record_is_final(tmp_path):
    async def body():
        svc, _ = await setup(tmp_path)
        created = await svc.uc.lifecycle.create(name="fin", resource_group="rg", subscription="", params=params(time_limit_in_seconds=5))
        sid = f"{created.id}@{created.created_time}"
        key = "local/rg/vmss/web/0"
        done = pb.InstanceStatus(
            packet_capture_status="Stopped",
            stop_reason="TimeExceeded",
            packets_captured=7,
            capture_start_time="2026-12-08T00:00:00Z",
            files=[pb.CaptureFile(file_path="/var/captures/a.cap", size_bytes=100, sha256="ab" * 32)],
        )
        await svc.uc.progress.apply_progress(key, fleet_pb2.CaptureProgress(capture_name="fin", capture_id=sid, status=done))
        forged = pb.InstanceStatus()
        forged.CopyFrom(done)
        forged.packets_captured, forged.error_message = 10**9, "rewritten"
        forged.files[0].sha256 = "cd" * 32
        await svc.uc.progress.apply_progress(key, fleet_pb2.CaptureProgress(capture_name="fin", capture_id=sid, status=forged))
        [inst] = [i for i in (await svc.uc.queries.get_status("fin")).instances if i.instance_id == "0"]
        assert (inst.packets_captured, inst.error_message, inst.files[0].sha256) == (7, "", "ab" * 32)
        await svc.store.close()

    asyncio.run(body())
