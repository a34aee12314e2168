"""Target resolution: names and ARM ids, scope include/exclude by id, name or ARM id."""

from __future__ import annotations

import pytest

from fleetcap.coordinator import targets
from fleetcap.coordinator.errors import InvalidArgument, NotFound
from fleetcap.coordinator.state import keys
from fleetcap.v1 import fleet_pb2, state_pb2

BASE = "/subscriptions/local/resourceGroups/rg1/providers/Microsoft.Compute"


def agents():
    out = {}
    idents = [fleet_pb2.AgentIdentity(resource_group="rg1", vmss_name="Web", instance_id=str(i)) for i in range(4)]
    idents.append(fleet_pb2.AgentIdentity(resource_group="rg1", vm_name="db1"))
    idents.append(fleet_pb2.AgentIdentity(resource_group="rg2", vmss_name="web", instance_id="0"))
    for ident in idents:
        out[keys.instance_key(ident)] = state_pb2.AgentRecord(identity=ident)
    return out


def resolve(target, target_type="AzureVMSS", include=(), exclude=(), rg="rg1"):
    return targets.resolve(target, target_type, list(include), list(exclude), subscription="", resource_group=rg, agents=agents())


def test_all_instances_when_scope_is_empty():
    r = resolve("web")
    assert r.target_id == f"{BASE}/virtualMachineScaleSets/Web"
    assert list(r.instances) == [f"local/rg1/vmss/web/{i}" for i in range(4)]
    assert r.scope_include == []
    assert r.scope_exclude == []


def test_include_exclude_by_id_name_and_arm_id():
    r = resolve("web", include=["0", "Web_1", f"{BASE}/virtualMachineScaleSets/Web/virtualMachines/3"], exclude=["3"])
    assert list(r.instances) == ["local/rg1/vmss/web/0", "local/rg1/vmss/web/1"]
    assert r.scope_include == [f"{BASE}/virtualMachineScaleSets/Web/virtualMachines/{i}" for i in (0, 1, 3)]
    assert r.scope_exclude == [f"{BASE}/virtualMachineScaleSets/Web/virtualMachines/3"]


def test_exclude_only():
    assert list(resolve("web", exclude=["0", "2"]).instances) == ["local/rg1/vmss/web/1", "local/rg1/vmss/web/3"]


def test_arm_id_target_picks_its_own_resource_group():
    r = resolve("/subscriptions/local/resourceGroups/rg2/providers/Microsoft.Compute/virtualMachineScaleSets/web")
    assert list(r.instances) == ["local/rg2/vmss/web/0"]


def test_vm_target():
    r = resolve("DB1", target_type="AzureVM")
    assert r.target_id == f"{BASE}/virtualMachines/db1"
    assert list(r.instances) == ["local/rg1/vm/db1"]


def test_unknown_targets_and_instances_are_not_found():
    with pytest.raises(NotFound, match="no scale set 'api'"):
        resolve("api")
    with pytest.raises(NotFound, match="no virtual machine 'web'"):
        resolve("web", target_type="AzureVM")
    with pytest.raises(NotFound, match=r"scope.include\[1\]: '9' is not an instance"):
        resolve("web", include=["0", "9"])
    with pytest.raises(NotFound, match=r"scope.exclude\[0\]"):
        resolve("web", exclude=["other_1"])


def test_scope_selecting_nothing_and_mismatched_type_are_invalid():
    with pytest.raises(InvalidArgument) as e:
        resolve("web", include=["1"], exclude=["1"])
    assert e.value.field == "scope"
    with pytest.raises(InvalidArgument) as e:
        resolve(f"{BASE}/virtualMachines/db1", target_type="AzureVMSS")
    assert e.value.field == "targetType"
    with pytest.raises(InvalidArgument) as e:
        resolve(f"{BASE}/virtualMachineScaleSets/Web/virtualMachines/1")
    assert e.value.field == "target"


@pytest.mark.parametrize(
    ("target", "target_type", "rg"),
    [
        ("web", "AzureVMSS", "rg1"),
        ("WEB", "AzureVMSS", "rg2"),
        ("db1", "AzureVM", "rg1"),
        (f"{BASE}/virtualMachineScaleSets/Web", "AzureVMSS", "other"),
    ],
)
def test_the_agents_under_the_prefix_resolve_as_all_agents_do(target, target_type, rg):
    """A create reads only the agents under agents_prefix (a scale set's, not the fleet's): that
    must resolve exactly as the whole registry does."""
    prefix = targets.agents_prefix(target, target_type, subscription="", resource_group=rg)
    under = {k: r for k, r in agents().items() if k.startswith(prefix)}
    assert under
    assert len(under) < len(agents())
    whole = targets.resolve(target, target_type, [], [], subscription="", resource_group=rg, agents=agents())
    assert targets.resolve(target, target_type, [], [], subscription="", resource_group=rg, agents=under) == whole


def test_a_scale_set_prefix_does_not_take_in_a_longer_name():
    assert targets.agents_prefix("web", "AzureVMSS", subscription="", resource_group="rg1") == "local/rg1/vmss/web/"
    assert not "local/rg1/vmss/web2/0".startswith(targets.agents_prefix("web", "AzureVMSS", subscription="", resource_group="rg1"))
