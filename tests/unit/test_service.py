"""The capture service on the memory store: dispatch, progress under the state machine, quota."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from fleetcap.coordinator import usecases
from fleetcap.coordinator.errors import ResourceExhausted
from fleetcap.coordinator.settings import ServiceConfig
from fleetcap.coordinator.storage.local_sink import LocalSink
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import fleet_pb2
from tests.unit.coordinator_support import connected_session, params, progress, setup


def test_dispatch_progress_and_quota(tmp_path):
    async def body():
        svc, rec = await setup(tmp_path, max_captures=1)
        first = await svc.uc.lifecycle.create(name="a", resource_group="rg", subscription="", params=params(time_limit_in_seconds=5))
        starts = [(k, m.start) for k, m in rec.sent]
        assert [k for k, _ in starts] == ["local/rg/vmss/web/0", "local/rg/vmss/web/1"]
        assert all(
            s.time_limit_s == 5 and s.total_bytes == 1073741824 and s.file_path == "/var/captures/a.cap" and not s.upload and s.keep_local
            for _, s in starts
        )
        with pytest.raises(ResourceExhausted, match="1 captures are running, the limit is 1"):
            await svc.uc.lifecycle.create(name="b", resource_group="rg", subscription="", params=params())
        for i in range(2):
            await svc.uc.progress.apply_progress(f"local/rg/vmss/web/{i}", progress(first, "Running"))
        # An illegal report (back to NotStarted) is ignored, not applied.
        await svc.uc.progress.apply_progress("local/rg/vmss/web/0", progress(first, "NotStarted"))
        assert (await svc.uc.queries.get_status("a")).packet_capture_status == "Running"
        for i in range(2):
            await svc.uc.progress.apply_progress(f"local/rg/vmss/web/{i}", progress(first, "Stopped", "TimeExceeded"))
        status = await svc.uc.queries.get_status("a")
        assert (status.packet_capture_status, status.stop_reason) == ("Stopped", "TimeExceeded")
        await svc.uc.lifecycle.create(name="b", resource_group="rg", subscription="", params=params())  # quota freed
        await svc.uc.lifecycle.stop("b")
        etag = (await svc.uc.queries.get("b")).etag
        await svc.uc.lifecycle.stop("b")  # idempotent: the resource does not change; stops are re-sent to be sure
        assert (await svc.uc.queries.get("b")).etag == etag
        stops = [m.stop for _, m in rec.sent if m.HasField("stop")]
        assert {s.reason for s in stops} == {"StoppedByUser"}
        assert len(stops) == 4
        await svc.store.close()

    asyncio.run(body())


def test_a_reconnecting_agents_hello_never_overwrites_a_newer_report(tmp_path):
    """The hello carries the agent's state as it dialed; a report sent after the welcome is
    newer (here: its upload committed meanwhile) and must be what stays."""
    from fleetcap.coordinator.api.auth import serve_as
    from fleetcap.coordinator.fleet.agents import AgentSessions
    from fleetcap.coordinator.fleet.fleet_servicer import FleetServicer
    from fleetcap.core.auth import Principal, Role
    from fleetcap.core.naming import resource_id

    async def body():
        svc, _ = await setup(tmp_path)
        p = params(time_limit_in_seconds=5)
        p.storage_location.storage_id = "local"  # it uploads: the instance settles once its file is committed
        created = await svc.uc.lifecycle.create(name="h", resource_group="rg", subscription="", params=p)
        key = "local/rg/vmss/web/1"
        ident = fleet_pb2.AgentIdentity(resource_group="rg", vmss_name="web", instance_id="1")
        old = progress(created, "Stopped", "TimeExceeded")
        old.status.capture_start_time = "2026-12-08T00:00:00Z"
        old.status.files.add(file_path="/var/captures/a.cap", size_bytes=100, uploaded_bytes=0, sha256="ab")
        new = fleet_pb2.CaptureProgress()
        new.CopyFrom(old)
        new.status.files[0].uploaded_bytes, new.status.files[0].upload_complete = 100, True
        applied_new = asyncio.Event()

        async def agent_messages():
            yield fleet_pb2.AgentMessage(hello=fleet_pb2.AgentHello(identity=ident, captures=[old]))
            yield fleet_pb2.AgentMessage(progress=new)
            applied_new.set()  # the reader asks for the next message only once `new` is applied
            await asyncio.Event().wait()  # the stream stays open

        class Context:
            async def abort(self, code, details, trailing_metadata=()):
                raise AssertionError(f"aborted: {code} {details}")

        servicer = FleetServicer(svc.store, {"local": LocalSink(str(tmp_path))}, svc.uc, AgentSessions(), agent_ttl_s=60, replica="r1")
        serve_as(Principal("web_1", frozenset({Role.AGENT}), "certificate", agent_id=resource_id(ident)))
        stream = servicer.Connect(agent_messages(), Context())
        welcome = await stream.__anext__()
        assert welcome.HasField("welcome")
        await asyncio.wait_for(applied_new.wait(), timeout=10)
        pending = asyncio.ensure_future(stream.__anext__())  # the stream goes on: nothing more to send
        await asyncio.sleep(0.1)
        [inst] = [i for i in await svc.store.get_instances("h") if i.instance_key == key]
        assert inst.status.files[0].upload_complete
        assert inst.status.files[0].uploaded_bytes == 100
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        await stream.aclose()
        await svc.store.close()

    asyncio.run(body())


def test_a_fleet_budget_never_grants_past_its_limit_and_trusts_no_agent(tmp_path, monkeypatch):
    """Grants shrink with the pool and never pass the limit; a return gives back at most what an
    instance holds; a request the pool cannot meet waits for returns, then exhausts the budget
    and stops the capture everywhere; a request from an instance the capture does not target, or
    for another session of the name, is refused."""
    from fleetcap.coordinator import budget

    monkeypatch.setattr(budget, "RETURN_WAIT_S", 0.05)

    async def body():
        svc, rec = await setup(tmp_path)
        limit = 1 << 20
        created = await svc.uc.lifecycle.create(name="b", resource_group="rg", subscription="", params=params(fleet_bytes_limit=limit))
        record = await svc.store.get_capture("b")
        k0, k1 = sorted(record.instance_keys)
        starts = [m.start for _, m in rec.sent if m.HasField("start")]
        assert [s.fleet_allowance for s in starts] == [limit // 4] * 2
        sid = f"{created.id}@{created.created_time}"

        def grants():
            out = [(k, m.budget_grant.granted, m.budget_grant.exhausted) for k, m in rec.sent if m.HasField("budget_grant")]
            rec.sent.clear()
            return out

        def req(need, capture_id=sid, name="b"):
            return fleet_pb2.BudgetRequest(capture_name=name, capture_id=capture_id, used=0, need=need)

        rec.sent.clear()
        await svc.uc.budget.request(k0, req(0))  # ahead of time: a quarter of what is left over two instances
        assert grants() == [(k0, (limit // 2) // 4, False)]
        await svc.uc.budget.request("local/rg/vmss/web/7", req(100))  # not an instance of the capture
        await svc.uc.budget.request(k0, req(100, capture_id="other-session"))
        await svc.uc.budget.request(k0, req(100, name="nope"))
        assert grants() == []
        await svc.uc.budget.give_back(k1, fleet_pb2.BudgetReturn(capture_name="b", capture_id=sid, returned=10**12))
        b = await svc.store.update_budget("b", lambda r: False)
        assert (b.allowance[k1], b.granted) == (0, limit // 4 + (limit // 2) // 4)  # all of it back, never more
        await svc.uc.budget.give_back(k1, fleet_pb2.BudgetReturn(capture_name="b", capture_id=sid, returned=-5))
        assert (await svc.store.update_budget("b", lambda r: False)).granted == b.granted
        while True:  # instance 0 takes it all, never past the limit
            await svc.uc.budget.request(k0, req(1000))
            [(_, g, exhausted)] = grants()
            b = await svc.store.update_budget("b", lambda r: False)
            assert b.granted <= limit
            assert b.allowance[k0] + b.allowance[k1] == b.granted
            if exhausted:
                break
            assert g >= 1000
        assert limit - b.granted < 1000
        record = await svc.store.get_capture("b")
        assert record.stop_requested == "FleetBytesExceeded"
        await svc.uc.budget.request(k0, req(1))  # spent: the answer is at once
        assert [(k, g, e) for k, g, e in grants()] == [(k0, 0, True)]

    asyncio.run(body())


def test_a_report_whose_waiter_went_away_is_applied_with_its_whole_batch(tmp_path):
    """An agent's stream closes while its report waits to be written (its writer is cancelled):
    the report is still applied, and so is every other report of the same batch. (Found by the
    chaos soak: the cancelled waiter's future made the batch raise, and the other agents'
    reports were counted failed.)"""

    async def body():
        svc, _ = await setup(tmp_path)
        created = await svc.uc.lifecycle.create(name="w", resource_group="rg", subscription="", params=params(time_limit_in_seconds=5))
        gone = asyncio.ensure_future(svc.uc.progress.apply_progress("local/rg/vmss/web/0", progress(created, "Running")))
        stays = asyncio.ensure_future(svc.uc.progress.apply_progress("local/rg/vmss/web/1", progress(created, "Running")))
        await asyncio.sleep(0)  # both queued in one batch, not yet written
        gone.cancel()
        await asyncio.wait_for(stays, timeout=10)  # resolved, not failed
        assert gone.cancelled()
        statuses = {i.instance_key: i.status.packet_capture_status for i in await svc.store.get_instances("w")}
        assert statuses == {"local/rg/vmss/web/0": "Running", "local/rg/vmss/web/1": "Running"}
        await svc.store.close()

    asyncio.run(body())


def test_a_stop_made_while_no_watch_ran_reaches_the_agents_when_the_watch_is_back(tmp_path):
    """A replica's capture watch is re-established after etcd restarted; a stop taken by
    another replica in the gap came as no event. On READY the replica reads every record, so
    its connected agent gets the stop. (Found by bench/chaos_soak.py: 8 of 100 instances ran
    on past the user's stop.)"""
    from fleetcap.coordinator.fleet.agents import AgentSession, AgentSessions
    from fleetcap.coordinator.fleet.dispatch import _follow_captures

    async def body():
        svc, _ = await setup(tmp_path)
        created = await svc.uc.lifecycle.create(name="g", resource_group="rg", subscription="", params=params(time_limit_in_seconds=60))
        for key in ("local/rg/vmss/web/0", "local/rg/vmss/web/1"):
            await svc.uc.progress.apply_progress(key, progress(created, "Running"))
        await svc.uc.lifecycle.stop("g")  # "on another replica", before this replica watches again
        sessions = AgentSessions()
        here = AgentSession("local/rg/vmss/web/1")
        sessions.attach(here)
        replica = usecases.build(svc.store, sessions, {}, ServiceConfig())
        follow = asyncio.ensure_future(_follow_captures(svc.store, replica.lifecycle, replica.recorder, sessions))
        message = await asyncio.wait_for(here.queue.get(), timeout=10)
        assert message.stop.capture_name == "g"
        assert message.stop.reason == "StoppedByUser"
        assert message.stop.capture_id == f"{created.id}@{created.created_time}"
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow
        await svc.store.close()

    asyncio.run(body())


def test_a_report_etcd_could_not_take_is_written_again(monkeypatch):
    """etcd away while an agent's stream stays up: its Stopped report fails once (etcd
    unreachable, then a call cancelled under it) and is written when etcd is back, not dropped.
    (Found by bench/chaos_soak.py: instances stayed Running for good after an etcd restart.)"""
    from fleetcap.coordinator.errors import StoreUnavailable
    from fleetcap.coordinator.fleet import agents as agents_module

    monkeypatch.setattr(agents_module, "RETRY_REPORT_S", 0.05)

    class FlakyService:
        def __init__(self):
            self.failures = [StoreUnavailable("etcd unreachable"), asyncio.CancelledError()]
            self.written: list[str] = []

        async def apply_progress(self, instance_key, progress):
            if self.failures:
                raise self.failures.pop(0)
            self.written.append(progress.status.packet_capture_status)

    async def body():
        service = FlakyService()
        session = connected_session(service)
        stopped = fleet_pb2.CaptureProgress(
            capture_name="c", capture_id="x", status=pb.InstanceStatus(packet_capture_status="Stopped", stop_reason="TimeExceeded")
        )
        await session.handle(fleet_pb2.AgentMessage(progress=stopped))
        for _ in range(100):
            if service.written:
                break
            await asyncio.sleep(0.02)
        assert (service.failures, service.written) == ([], ["Stopped"])
        session.close()

    asyncio.run(body())


def test_an_etcd_call_cut_off_by_a_shutting_down_etcd_is_retried_and_a_refusal_is_not():
    import aetcd.exceptions
    import grpc

    from fleetcap.coordinator.state.etcd_store import retryable

    def client_error(code):
        cause = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "No status received")
        try:
            raise aetcd.exceptions.ClientError("No status received") from cause
        except aetcd.exceptions.ClientError as e:
            return e

    assert retryable(client_error(grpc.StatusCode.UNKNOWN))
    assert retryable(client_error(grpc.StatusCode.CANCELLED))
    assert retryable(aetcd.exceptions.ConnectionFailedError("etcd down"))
    assert not retryable(client_error(grpc.StatusCode.PERMISSION_DENIED))
    assert not retryable(aetcd.exceptions.InvalidArgumentError("bad key"))
    assert not retryable(aetcd.exceptions.ClientError("no cause"))


def test_a_report_that_comes_while_another_is_written_is_the_one_written():
    """Two captures' reports wait; while the first is written (etcd slow), the second capture's
    Stopped comes. The Stopped is what gets written, not the older report the writer had
    already seen. (Found by bench/chaos_soak.py: an etcd restart left instances Running for
    good, their Stopped deleted unwritten.)"""

    class SlowService:
        def __init__(self):
            self.release = asyncio.Event()
            self.written: list[tuple[str, str]] = []

        async def apply_progress(self, instance_key, progress):
            if progress.capture_name == "first":
                await self.release.wait()
            self.written.append((progress.capture_name, progress.status.packet_capture_status))

    def report(name, status):
        return fleet_pb2.AgentMessage(
            progress=fleet_pb2.CaptureProgress(capture_name=name, capture_id="x", status=pb.InstanceStatus(packet_capture_status=status))
        )

    async def body():
        service = SlowService()
        session = connected_session(service)
        await session.handle(report("first", "Running"))
        await session.handle(report("second", "Running"))
        await asyncio.sleep(0.05)  # the writer has both, and waits on the first
        await session.handle(report("second", "Stopped"))
        service.release.set()
        for _ in range(100):
            if ("second", "Stopped") in service.written:
                break
            await asyncio.sleep(0.02)
        assert service.written == [("first", "Running"), ("second", "Stopped")]
        session.close()

    asyncio.run(body())
