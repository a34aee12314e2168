"""The coordinator's settings: one frozen dataclass, built at the edge (the `fleetcap
coordinator` command) and passed down. The command's flag defaults are read from here."""
from __future__ import annotations

import dataclasses

from fleetcap.core.naming import DEFAULT_SUBSCRIPTION
from fleetcap.core.transport import DEFAULT_ADDRESS

LOCAL_ACCOUNT = "local"
"""The built-in storage account: a directory on the coordinator."""


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """Identity and limits of this deployment (it plays one regional Network Watcher)."""

    subscription: str = DEFAULT_SUBSCRIPTION
    watcher_resource_group: str = "NetworkWatcherRG"
    watcher_name: str = "NetworkWatcher_local"
    max_captures: int = 10000
    """Concurrent (not yet stopped) captures allowed, as Azure's per-region limit."""


@dataclasses.dataclass(frozen=True)
class CoordinatorSettings:
    listen: tuple[str, ...] = (DEFAULT_ADDRESS,)
    """Addresses to serve both the API and the fleet on: host:port or unix:/path."""
    etcd: tuple[str, ...] = ()
    """etcd endpoints (host:port). Empty = start an embedded single-node etcd in data_dir."""
    store: str = "etcd"
    """"etcd", or "memory" for a throwaway coordinator without durable state."""
    data_dir: str = "/var/lib/fleetcap"
    """Holds the embedded etcd and, by default, the storage directory."""
    storage_dir: str = ""
    """Directory of the built-in storage account "local"; empty = data_dir/storage."""
    agent_ttl_s: int = 10
    """Lease of an agent's registration: a silent agent is declared stopped after this."""
    storage_accounts: tuple[tuple[str, str], ...] = ()
    """Azure Blob storage accounts: (name, connection string). "local" is always there."""
    service: ServiceConfig = ServiceConfig()
    metrics_listen: str = ""
    """HOST:PORT of the Prometheus /metrics endpoint; empty = none."""

    @property
    def local_storage_dir(self) -> str:
        return self.storage_dir or f"{self.data_dir.rstrip('/')}/storage"
