"""What the coordinator's unit tests share: a memory store with two registered agents of scale
set web, the use cases wired on it, and a recorder in place of the agents' control streams."""

from __future__ import annotations

import dataclasses

from fleetcap.coordinator import usecases
from fleetcap.coordinator.settings import ServiceConfig
from fleetcap.coordinator.state import keys
from fleetcap.coordinator.state.memory_store import MemoryKV
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.storage.local_sink import LocalSink
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import fleet_pb2, state_pb2


@dataclasses.dataclass
class Harness:
    uc: usecases.UseCases
    store: Store


class Recorder:
    """Stands in for the agents' control streams: records what would be sent."""

    def __init__(self):
        self.sent: list[tuple[str, fleet_pb2.CoordinatorMessage]] = []

    def send(self, instance_key, message):
        self.sent.append((instance_key, message))
        return True


def params(**kw):
    return pb.PacketCaptureParameters(
        target="web", target_type="AzureVMSS", storage_location=pb.PacketCaptureStorageLocation(file_path="/var/captures/a.cap"), **kw
    )


async def setup(tmp_path, max_captures=10000):
    store = Store(MemoryKV())
    for i in range(2):
        ident = fleet_pb2.AgentIdentity(resource_group="rg", vmss_name="web", instance_id=str(i))
        await store.agents.register(keys.instance_key(ident), state_pb2.AgentRecord(identity=ident), ttl_s=60)
    rec = Recorder()
    uc = usecases.build(store, rec, {"local": LocalSink(str(tmp_path))}, ServiceConfig(max_captures=max_captures))
    return Harness(uc, store), rec


def progress(svc_record, status, reason=""):
    return fleet_pb2.CaptureProgress(
        capture_name=svc_record.name,
        capture_id=f"{svc_record.id}@{svc_record.created_time}",
        status=pb.InstanceStatus(packet_capture_status=status, stop_reason=reason),
    )


def connected_session(service):
    """A ControlSession of one connected agent, on `service` (anything with apply_progress)."""
    from fleetcap.coordinator.fleet.agents import AgentSession, AgentSessions, ControlSession

    class Presence:
        def release(self, *args, **kwargs):
            pass

    session = ControlSession(service, None, None, AgentSessions(), presence=Presence(), agent_ttl_s=10, replica="r1")  # type: ignore[arg-type]
    session.session = AgentSession("local/rg/vmss/web/0")
    return session
