"""Agents coming back (coordinator/usecases/reconcile.py), on the memory store: what a
reconnecting agent is sent, or what its instance becomes, for every state its capture can be in."""

from __future__ import annotations

import asyncio

from fleetcap.core.vocabulary import CaptureError, Status, StopReason
from fleetcap.v1 import fleet_pb2, state_pb2
from tests.unit.coordinator_support import params, progress, setup

K0, K1 = "local/rg/vmss/web/0", "local/rg/vmss/web/1"
WEB0 = fleet_pb2.AgentIdentity(resource_group="rg", vmss_name="web", instance_id="0")
WEB2 = fleet_pb2.AgentIdentity(resource_group="rg", vmss_name="web", instance_id="2")


def hello(identity: fleet_pb2.AgentIdentity, *reports: fleet_pb2.CaptureProgress) -> fleet_pb2.AgentHello:
    return fleet_pb2.AgentHello(identity=identity, captures=list(reports))


def sent_to(rec, key: str) -> list[str]:
    return [m.WhichOneof("body") for k, m in rec.sent if k == key]


def test_a_reconnecting_agent_is_stopped_triggered_started_or_failed_as_its_capture_stands(tmp_path):
    async def body() -> None:
        svc, rec = await setup(tmp_path)
        lc, rc = svc.uc.lifecycle, svc.uc.reconciler
        # 1. It reports a capture stopped meanwhile: it is told to stop, with the id it reported.
        stopped = await lc.create(name="stopped", resource_group="rg", subscription="", params=params(time_limit_in_seconds=60))
        await svc.uc.progress.apply_progress(K0, progress(stopped, "Running"))
        await lc.stop("stopped")
        rec.sent.clear()
        await rc.agent_connected(K0, hello(WEB0, progress(stopped, "Running")))
        [(key, stop)] = [(k, m) for k, m in rec.sent if m.HasField("stop")]
        assert (key, stop.stop.capture_name, stop.stop.capture_id, stop.stop.reason) == (
            K0,
            "stopped",
            f"{stopped.id}@{stopped.created_time}",
            StopReason.STOPPED_BY_USER,
        )
        # 2. A flight recorder triggered while it was away: it gets the trigger.
        armed = await lc.create(
            name="armed", resource_group="rg", subscription="", params=params(time_limit_in_seconds=600, standby_in_seconds=30)
        )
        await svc.uc.progress.apply_progress(K0, progress(armed, "Standby"))
        await svc.uc.recorder.trigger("armed", after_s=5, source="ops")
        rec.sent.clear()
        await rc.agent_connected(K0, hello(WEB0, progress(armed, "Standby")))
        assert sent_to(rec, K0) == ["trigger"]
        # 3. Never started and since stopped: the instance is stopped in its record, nothing sent.
        await lc.create(name="never", resource_group="rg", subscription="", params=params(time_limit_in_seconds=60))
        await lc.stop("never")
        rec.sent.clear()
        await rc.agent_connected(K1, hello(WEB0))
        inst = await svc.store.get_instance("never", K1)
        assert (inst.status.packet_capture_status, inst.status.stop_reason) == (Status.STOPPED, StopReason.STOPPED_BY_USER)
        # 4. Never started, still wanted (and triggered: armed late, it keeps what it can).
        await lc.create(name="late", resource_group="rg", subscription="", params=params(time_limit_in_seconds=600, standby_in_seconds=30))
        await svc.uc.recorder.trigger("late", after_s=5, source="ops")
        rec.sent.clear()
        await rc.agent_connected(K1, hello(WEB0))
        late_msgs = [m for k, m in rec.sent if k == K1 and getattr(m, m.WhichOneof("body")).capture_name == "late"]
        assert [m.WhichOneof("body") for m in late_msgs] == ["start", "trigger"]
        # 5. It was running but the agent has no record of it (restarted without its journal).
        lost = await lc.create(name="lost", resource_group="rg", subscription="", params=params(time_limit_in_seconds=60))
        await svc.uc.progress.apply_progress(K1, progress(lost, "Running"))
        await rc.agent_connected(K1, hello(WEB0))
        inst = await svc.store.get_instance("lost", K1)
        assert (inst.status.packet_capture_status, list(inst.status.packet_capture_error), inst.status.error_message) == (
            Status.ERROR,
            [CaptureError.AGENT_STOPPED],
            "the agent restarted and has no record of this capture",
        )
        await svc.store.close()

    asyncio.run(body())


def test_a_new_scale_set_instance_joins_only_a_capture_that_adds_new_instances(tmp_path):
    async def body() -> None:
        svc, rec = await setup(tmp_path)
        lc, rc = svc.uc.lifecycle, svc.uc.reconciler
        k2 = "local/rg/vmss/web/2"
        plain = await lc.create(name="plain", resource_group="rg", subscription="", params=params(time_limit_in_seconds=60))
        adds = await lc.create(
            name="adds", resource_group="rg", subscription="", params=params(time_limit_in_seconds=60, add_new_instances=True)
        )
        chosen = params(time_limit_in_seconds=60, add_new_instances=True)
        chosen.scope.include.append("0")  # a chosen set of instances: a new one is not among them
        await lc.create(name="chosen", resource_group="rg", subscription="", params=chosen)
        stopped = await lc.create(
            name="stopped", resource_group="rg", subscription="", params=params(time_limit_in_seconds=60, add_new_instances=True)
        )
        await lc.stop("stopped")
        rec.sent.clear()
        await svc.store.agents.register(k2, state_pb2.AgentRecord(identity=WEB2), ttl_s=60)
        await rc.agent_connected(k2, hello(WEB2))
        joined = {r.resource.name for r in await svc.store.list_captures() if k2 in r.instance_keys}
        assert joined == {"adds"}
        assert [(k, m.start.capture_name) for k, m in rec.sent if m.HasField("start")] == [(k2, "adds")]
        inst = await svc.store.get_instance("adds", k2)
        assert (inst.status.instance_id, inst.status.packet_capture_status) == ("2", Status.NOT_STARTED)
        assert (plain.name, stopped.name, adds.name) == ("plain", "stopped", "adds")
        # A capture whose every instance has ended takes no one.
        for key in (K0, K1, k2):
            await svc.uc.progress.apply_progress(key, progress(adds, "Stopped", "TimeExceeded"))
        k3 = "local/rg/vmss/web/3"
        web3 = fleet_pb2.AgentIdentity(resource_group="rg", vmss_name="web", instance_id="3")
        await rc.agent_connected(k3, hello(web3))
        assert k3 not in (await svc.store.get_capture("adds")).instance_keys
        await svc.store.close()

    asyncio.run(body())


def test_agents_lost_while_nobody_watched_fail_their_running_instances_once(tmp_path):
    async def body() -> None:
        svc, _ = await setup(tmp_path)
        lc, rc = svc.uc.lifecycle, svc.uc.reconciler
        created = await lc.create(name="c", resource_group="rg", subscription="", params=params(time_limit_in_seconds=60))
        await svc.uc.progress.apply_progress(K0, progress(created, "Running"))
        await svc.uc.progress.apply_progress(K1, progress(created, "Stopped", "TimeExceeded"))
        agents = await svc.store.agents.list()
        await svc.store.agents.remove(K0, agents[K0])
        await svc.store.agents.remove(K1, agents[K1])
        await rc.reconcile_absent_agents("gone")
        i0, i1 = await svc.store.get_instance("c", K0), await svc.store.get_instance("c", K1)
        assert (i0.status.packet_capture_status, i0.status.stop_reason, i0.status.error_message) == (
            Status.ERROR,
            StopReason.AGENT_STOPPED,
            "gone",
        )
        assert (i1.status.packet_capture_status, i1.status.stop_reason) == (Status.STOPPED, StopReason.TIME_EXCEEDED)  # final
        await rc.agent_lost(K0)  # already failed: left as it is
        assert (await svc.store.get_instance("c", K0)).status.error_message == "gone"
        await lc.delete("c")
        await rc.fail_instance("c", K0, CaptureError.AGENT_STOPPED, "after the delete")  # no error: the capture is gone
        await svc.store.close()

    asyncio.run(body())
