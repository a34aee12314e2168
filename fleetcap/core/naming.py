"""Names every component agrees on: ARM ids of VMs and scale-set instances, the files of a
capture ring, and RFC 3339 times.

The compute ARM id has one grammar, `COMPUTE_ID`; everything that reads an id parses it here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from fleetcap.v1 import fleet_pb2

DEFAULT_SUBSCRIPTION = "local"
DEFAULT_RESOURCE_GROUP = "default"
# The API's capture directory on every Linux instance (Azure's rule: paths start with it).
CAPTURE_ROOT = "/var/captures"
# Azure's compute ids. Azure compares them case-insensitively, so this does too.
COMPUTE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
    r"(?P<kind>virtualMachines|virtualMachineScaleSets)/(?P<name>[^/]+)(?:/virtualMachines/(?P<inst>[^/]+))?/?$",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class ComputeId:
    """A parsed compute ARM id: a VM, a scale set, or one instance of a scale set."""

    subscription: str
    resource_group: str
    scale_set: bool  # virtualMachineScaleSets (with or without an instance)
    name: str  # the VM's or the scale set's name
    instance_id: str  # the scale-set instance, "" for a VM or a whole scale set

    @property
    def instance_name(self) -> str:
        """Azure's name of the machine: "web_3" for a scale-set instance, else the name."""
        return f"{self.name}_{self.instance_id}" if self.instance_id else self.name


def parse_compute_id(text: str) -> ComputeId | None:
    """The parts of a VM, scale-set or instance id; None for anything else."""
    m = COMPUTE_ID.match(text.strip())
    if m is None:
        return None
    return ComputeId(m["sub"], m["rg"], m["kind"].lower() == "virtualmachinescalesets", m["name"], m["inst"] or "")


def resource_id(identity: fleet_pb2.AgentIdentity) -> str:
    """The full ARM id of an agent's VM or scale-set instance."""
    sub = identity.subscription or DEFAULT_SUBSCRIPTION
    rg = identity.resource_group or DEFAULT_RESOURCE_GROUP
    base = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute"
    if identity.vmss_name:
        return f"{base}/virtualMachineScaleSets/{identity.vmss_name}/virtualMachines/{identity.instance_id}"
    return f"{base}/virtualMachines/{identity.vm_name}"


def instance_name(compute_id: str) -> str:
    """Azure's instance name from an ARM id ("web_3", or the VM's name); the last path
    segment for anything that is not a compute id."""
    parsed = parse_compute_id(compute_id)
    return parsed.instance_name if parsed else compute_id.rstrip("/").rsplit("/", 1)[-1]


def ring_file_path(base: str, index: int, continuous: bool) -> str:
    """The deterministic name of file `index` of a capture: /x/ring.cap -> /x/ring_00003.cap in
    continuous mode; the base itself otherwise."""
    if not continuous:
        return base
    stem = base[:-4] if base.endswith(".cap") else base
    return f"{stem}_{index:05d}.cap"


def rfc3339(t: dt.datetime) -> str:
    """UTC, microseconds, with a Z: the form every time field of the API carries."""
    return t.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def rfc3339_us(us: int) -> str:
    """A time in microseconds since the epoch (a pcap timestamp) as rfc3339; "" for 0 (none)."""
    if not us:
        return ""
    return rfc3339(dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us))


def parse_rfc3339(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def utc_now() -> str:
    return rfc3339(dt.datetime.now(dt.UTC))
