"""Every etcd key fleetcap writes, in one place.

    /fleetcap/v1/captures/{capture}                    CaptureRecord
    /fleetcap/v1/instances/{capture}/{instance_key}    InstanceRecord
    /fleetcap/v1/agents/{instance_key}                 AgentRecord, tied to its replica's lease
    /fleetcap/v1/leader                                the leading replica's name, tied to its lease
    /fleetcap/v1/fetches/{fetch_id}                    FetchRecord, tied to the downloading replica's lease
    /fleetcap/v1/budgets/{capture}                     BudgetRecord: a capture's fleet-wide byte budget

Records are protobuf's binary form (older coordinators wrote JSON, still read); `fleetcap state`
prints them as JSON.

An instance key names a VM or scale-set instance, lower-cased as Azure names are
case-insensitive: "{subscription}/{resource_group}/vm/{name}" or
"{subscription}/{resource_group}/vmss/{name}/{instance_id}".
"""

from __future__ import annotations

from google.protobuf.message import Message

from fleetcap.core.naming import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION
from fleetcap.v1 import fleet_pb2, state_pb2

ROOT = "/fleetcap/v1/"
CAPTURES = ROOT + "captures/"
INSTANCES = ROOT + "instances/"
AGENTS = ROOT + "agents/"
LEADER = ROOT + "leader"
FETCHES = ROOT + "fetches/"
BUDGETS = ROOT + "budgets/"


def record_type(key: str) -> type[Message] | None:
    """The record type stored at a key (None for the leader key, whose value is a name)."""
    for prefix, cls in (
        (CAPTURES, state_pb2.CaptureRecord),
        (INSTANCES, state_pb2.InstanceRecord),
        (AGENTS, state_pb2.AgentRecord),
        (FETCHES, state_pb2.FetchRecord),
        (BUDGETS, state_pb2.BudgetRecord),
    ):
        if key.startswith(prefix):
            return cls
    return None


def capture(name: str) -> str:
    return CAPTURES + name


def instances_of(name: str) -> str:
    return f"{INSTANCES}{name}/"


def instance(name: str, instance_key: str) -> str:
    return instances_of(name) + instance_key


def budget(name: str) -> str:
    return BUDGETS + name


def fetch(fetch_id: str) -> str:
    return FETCHES + fetch_id


def agent(instance_key: str) -> str:
    return AGENTS + instance_key


def instance_key_of(agent_key: str) -> str:
    """The instance key of an agent record's key (the inverse of `agent`)."""
    return agent_key[len(AGENTS) :]


def capture_name_of_instance(instance_key: str) -> str:
    """The capture name of an instance record's key (see `instance`)."""
    return instance_key[len(INSTANCES) :].split("/", 1)[0]


def capture_name_of(capture_key: str) -> str:
    """The capture name of a capture record's key (the inverse of `capture`)."""
    return capture_key[len(CAPTURES) :]


def instance_key(identity: fleet_pb2.AgentIdentity) -> str:
    sub = (identity.subscription or DEFAULT_SUBSCRIPTION).lower()
    rg = (identity.resource_group or DEFAULT_RESOURCE_GROUP).lower()
    if identity.vmss_name:
        return f"{sub}/{rg}/vmss/{identity.vmss_name.lower()}/{identity.instance_id}"
    return f"{sub}/{rg}/vm/{identity.vm_name.lower()}"
