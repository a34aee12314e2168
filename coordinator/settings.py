"""The coordinator's settings: one frozen dataclass, built at the edge (the `fleetcap
coordinator` command) and passed down. The command's flag defaults are read from here."""
from __future__ import annotations

import dataclasses

from fleetcap.coordinator.api.oidc import OidcSettings
from fleetcap.core.naming import DEFAULT_SUBSCRIPTION
from fleetcap.core.transport import DEFAULT_ADDRESS, ServerTls

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
    """Addresses to serve on (host:port or unix:/path); callers bring a bearer token. A TCP
    address speaks TLS with tls_cert, else plaintext on loopback only; a unix socket is always
    plaintext (local, guarded by its file permissions)."""
    mtls_listen: tuple[str, ...] = ()
    """Addresses served with mutual TLS (tls_cert and tls_client_ca): every peer presents a
    certificate. Agents dial these; clients with certificates may too."""
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
    storage_accounts: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    """Azure Blob storage accounts: (name, connection string). "local" is always there."""
    service: ServiceConfig = ServiceConfig()
    metrics_listen: str = ""
    """HOST:PORT of the Prometheus /metrics endpoint; empty = none."""
    health_listen: str = ""
    """HOST:PORT of a plaintext gRPC server with only the health service (kubelet probes); empty = none."""
    tls_cert: str = ""
    """PEM certificate every listener serves TLS with; empty = plaintext, local addresses only."""
    tls_key: str = ""
    """Its private key."""
    tls_client_ca: str = ""
    """CA that client and agent certificates must chain to; agents must present one."""
    auth_file: str = ""
    """TOML file of bearer tokens (SHA-256 only) and revoked certificate names; reloaded on SIGHUP."""
    oidc: OidcSettings = OidcSettings()
    """OpenID Connect bearer tokens (Entra ID, Keycloak); off unless an issuer is set."""
    insecure: bool = False
    """Allow plaintext listeners beyond loopback (logged as a warning at every start)."""
    etcd_ca: str = ""
    """CA of an external etcd's certificate; set, etcd is reached over TLS."""
    etcd_cert: str = ""
    """Client certificate for an external etcd that requires client-certificate authentication."""
    etcd_key: str = ""
    """Its private key."""
    etcd_username: str = ""
    """etcd user (from ETCD_USERNAME, never a flag)."""
    etcd_password: str = dataclasses.field(default="", repr=False)
    """Its password (from ETCD_PASSWORD, never a flag; kept out of repr and logs)."""

    @property
    def server_tls(self) -> ServerTls | None:
        """For `listen`: the coordinator's certificate, no client certificate asked."""
        return ServerTls(self.tls_cert, self.tls_key) if self.tls_cert else None

    @property
    def mutual_tls(self) -> ServerTls:
        """For `mtls_listen`."""
        return ServerTls(self.tls_cert, self.tls_key, self.tls_client_ca)

    @property
    def local_storage_dir(self) -> str:
        return self.storage_dir or f"{self.data_dir.rstrip('/')}/storage"
