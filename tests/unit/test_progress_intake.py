"""Progress intake (coordinator/usecases/progress.py) when a report cannot be applied: etcd
failing, a call cancelled under it, a capture that is gone, an agent that is not its target, a
file the capture does not have. Each report gets its exact outcome; none waits for ever."""

from __future__ import annotations

import asyncio

import pytest

from fleetcap.coordinator.errors import StoreUnavailable
from fleetcap.coordinator.state.memory_store import MemoryKV
from fleetcap.core.vocabulary import Status
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import fleet_pb2
from tests.unit.coordinator_support import params, progress, setup

K0 = "local/rg/vmss/web/0"


class FailingKV(MemoryKV):
    """A memory store whose next multi-key transactions fail (etcd away), or are cancelled
    under the caller (a gRPC channel closing), as many times as asked."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[BaseException] = []

    async def put_if(self, *args, **kwargs):
        if self.failures:
            raise self.failures.pop(0)
        return await super().put_if(*args, **kwargs)


def test_a_report_fails_with_etcd_and_is_applied_once_etcd_answers(tmp_path):
    async def body() -> None:
        svc, _ = await setup(tmp_path)
        kv = FailingKV()
        kv.__dict__.update(svc.store.kv.__dict__)  # the same data, with failures on demand
        svc.store.kv = kv
        created = await svc.uc.lifecycle.create(name="c", resource_group="rg", subscription="", params=params(time_limit_in_seconds=60))
        kv.failures = [StoreUnavailable("etcd unreachable"), asyncio.CancelledError()]
        with pytest.raises(StoreUnavailable, match="etcd unreachable"):
            await svc.uc.progress.apply_progress(K0, progress(created, "Running"))
        with pytest.raises(StoreUnavailable, match="an etcd call was cancelled"):
            await svc.uc.progress.apply_progress(K0, progress(created, "Running"))
        assert (await svc.store.get_instance("c", K0)).status.packet_capture_status == Status.NOT_STARTED
        await svc.uc.progress.apply_progress(K0, progress(created, "Running"))  # the writer lives on
        assert (await svc.store.get_instance("c", K0)).status.packet_capture_status == Status.RUNNING
        await svc.store.close()

    asyncio.run(body())


def test_reports_that_cannot_apply_are_settled_and_change_nothing(tmp_path):
    async def body() -> None:
        svc, _ = await setup(tmp_path)
        created = await svc.uc.lifecycle.create(name="c", resource_group="rg", subscription="", params=params(time_limit_in_seconds=60))
        before = await svc.store.get_instance("c", K0)
        gone = fleet_pb2.CaptureProgress(capture_name="gone", capture_id="x", status=pb.InstanceStatus(packet_capture_status="Running"))
        other_session = fleet_pb2.CaptureProgress(
            capture_name="c", capture_id="c@an-earlier-capture", status=pb.InstanceStatus(packet_capture_status="Running")
        )
        stranger = progress(created, "Running")
        unknown_file = progress(created, "Running")
        unknown_file.status.files.add(file_path="/var/captures/other.cap", size_bytes=24)
        await asyncio.gather(
            svc.uc.progress.apply_progress(K0, gone),
            svc.uc.progress.apply_progress(K0, other_session),
            svc.uc.progress.apply_progress("local/rg/vmss/web/9", stranger),
            svc.uc.progress.apply_progress(K0, unknown_file),
        )
        assert await svc.store.get_instance("c", K0) == before
        assert await svc.store.get_instance("c", "local/rg/vmss/web/9") is None
        await svc.store.close()

    asyncio.run(body())
