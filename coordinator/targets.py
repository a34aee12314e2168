"""Target resolution: a VM or scale-set (bare name or ARM id) plus scope → instance keys.

Scope entries may be an instance id ("3"), an instance name ("web_3") or a full instance ARM
id. An entry that names no instance of the scale set is NOT_FOUND. Include empty = every
instance; exclude is applied after include. Resolution uses the agents registered now.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from fleetcap.coordinator.errors import InvalidArgument, NotFound
from fleetcap.core.naming import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, parse_compute_id, resource_id
from fleetcap.core.vocabulary import TargetType
from fleetcap.v1 import state_pb2


@dataclasses.dataclass(frozen=True)
class Resolved:
    target_id: str  # full ARM id of the VM or scale set
    instances: dict[str, state_pb2.AgentRecord]  # instance key -> agent record
    scope_include: list[str]  # normalized to full instance ids
    scope_exclude: list[str]


def _parse_target(target: str, target_type: str, subscription: str, resource_group: str) -> tuple[str, str, str]:
    parsed = parse_compute_id(target)
    if parsed is None:
        if "/" in target:
            raise InvalidArgument("target", f"'{target}' is neither a name nor a VM or scale-set ARM id")
        return subscription, resource_group, target.strip()
    kind = TargetType.VMSS if parsed.scale_set else TargetType.VM
    if parsed.instance_id:
        raise InvalidArgument("target", f"'{target}' is a scale-set instance; target the scale set and use scope.include")
    if kind != target_type:
        raise InvalidArgument("targetType", f"'{target_type}' does not match target '{target}' ({kind})")
    return parsed.subscription, parsed.resource_group, parsed.name


def _scope_instance_id(entry: str, scale_set: str) -> str:
    """Reduces a scope entry to an instance id, or raises InvalidArgument."""
    e = entry.strip()
    parsed = parse_compute_id(e)
    if parsed and parsed.instance_id:
        return parsed.instance_id if parsed.name.lower() == scale_set.lower() else f"<{e}>"
    if e.lower().startswith(scale_set.lower() + "_"):
        return e[len(scale_set) + 1 :]
    return e


def agents_prefix(target: str, target_type: str, *, subscription: str, resource_group: str) -> str:
    """The instance keys a target can resolve to all start with this (the agents to read for
    `resolve`: a scale set's 1,000, not a fleet's 10,000). Raises InvalidArgument as resolve does."""
    sub, rg, name = _parse_target(target, target_type, subscription or DEFAULT_SUBSCRIPTION, resource_group or DEFAULT_RESOURCE_GROUP)
    kind = "vm" if target_type == TargetType.VM else "vmss"
    return f"{sub.lower()}/{rg.lower()}/{kind}/{name.lower()}" + ("" if kind == "vm" else "/")


def resolve(
    target: str,
    target_type: str,
    include: list[str],
    exclude: list[str],
    *,
    subscription: str,
    resource_group: str,
    agents: Mapping[str, state_pb2.AgentRecord],
) -> Resolved:
    sub, rg, name = _parse_target(target, target_type, subscription or DEFAULT_SUBSCRIPTION, resource_group or DEFAULT_RESOURCE_GROUP)
    if target_type == TargetType.VM:
        ident_key = f"{sub.lower()}/{rg.lower()}/vm/{name.lower()}"
        if ident_key not in agents:
            raise NotFound(f"target: no virtual machine '{name}' in resource group '{rg}' (subscription '{sub}') has a connected agent")
        record = agents[ident_key]
        return Resolved(resource_id(record.identity), {ident_key: record}, [], [])

    prefix = f"{sub.lower()}/{rg.lower()}/vmss/{name.lower()}/"
    members = {k[len(prefix) :]: (k, r) for k, r in agents.items() if k.startswith(prefix)}
    if not members:
        raise NotFound(f"target: no scale set '{name}' in resource group '{rg}' (subscription '{sub}') has a connected agent")
    any_record = next(iter(members.values()))[1]
    scale_set_name = any_record.identity.vmss_name

    def pick(entries: list[str], field: str) -> list[str]:
        ids = []
        for i, entry in enumerate(entries):
            iid = _scope_instance_id(entry, scale_set_name)
            if iid not in members:
                raise NotFound(
                    f"{field}[{i}]: '{entry}' is not an instance of scale set '{scale_set_name}' "
                    f"(instances: {', '.join(sorted(members, key=_numeric))})"
                )
            ids.append(iid)
        return ids

    included = pick(list(include), "scope.include") or list(members)
    excluded = set(pick(list(exclude), "scope.exclude"))
    chosen = sorted((i for i in included if i not in excluded), key=_numeric)
    if not chosen:
        raise InvalidArgument("scope", "selects no instance (everything included is excluded)")

    def full(iid: str) -> str:
        return resource_id(members[iid][1].identity)

    target_id = full(chosen[0]).rsplit("/virtualMachines/", 1)[0]
    return Resolved(
        target_id=target_id,
        instances={members[i][0]: members[i][1] for i in dict.fromkeys(chosen)},
        scope_include=[full(i) for i in dict.fromkeys(pick(list(include), "scope.include"))],
        scope_exclude=[full(i) for i in dict.fromkeys(pick(list(exclude), "scope.exclude"))],
    )


def _numeric(instance_id: str) -> tuple[int, str]:
    return (int(instance_id), "") if instance_id.isdigit() else (1 << 62, instance_id)
