"""The agent's settings: one frozen dataclass, built at the edge (the `fleetcap agent`
command) and passed down. The command's flag defaults are read from here."""

from __future__ import annotations

import dataclasses

from fleetcap.core.naming import CAPTURE_ROOT
from fleetcap.core.transport import DEFAULT_ADDRESS, ClientCredentials
from fleetcap.v1 import fleet_pb2


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    identity: fleet_pb2.AgentIdentity
    """The VM or scale-set instance this agent captures on."""
    coordinator: str = DEFAULT_ADDRESS
    """host:port or unix:/path of the coordinator; several, comma-separated, for replicas (the
    agent moves to the next one when it loses its connection)."""
    interface: str = ""
    """Capture interface; empty = the first non-loopback interface that is up."""
    capture_root: str = CAPTURE_ROOT
    """Where the API's /var/captures lives on this machine."""
    buffer_size: int = 32 << 20
    """Kernel capture ring per capture, in bytes (libpcap's default is 2 MiB)."""
    storage_retry_s: float = 300.0
    """How long an upload retries while the coordinator reports its storage failing."""
    metrics_listen: str = ""
    """HOST:PORT of the Prometheus /metrics endpoint; empty = none."""
    test_clock_offset_s: float = 0.0
    """Test only (FLEETCAP_TEST_CLOCK_OFFSET_S): this agent's clock runs this far ahead, in the
    packet times it writes and in its clock probes; for tests of the merge's clock correction."""
    credentials: ClientCredentials = dataclasses.field(default=ClientCredentials(), repr=False)
    """The CA the coordinator must chain to, the agent's certificate, or a token (docs/security.md)."""
