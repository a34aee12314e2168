"""The coordinator's settings: one frozen dataclass, built at the edge (the `fleetcap
coordinator` command) and passed down. The command's flag defaults are read from here."""

from __future__ import annotations

import dataclasses

from fleetcap.core.naming import DEFAULT_SUBSCRIPTION
from fleetcap.core.transport import DEFAULT_ADDRESS, ServerTls, is_local
from fleetcap.core.vocabulary import StorageKind


@dataclasses.dataclass(frozen=True)
class OidcSettings:
    """OpenID Connect bearer tokens the coordinator accepts (api/oidc.py verifies them)."""

    issuer: str = ""
    audience: str = ""
    jwks: str = ""  # an https:// URL (http:// only on loopback), or a JWKS file
    roles_claim: str = "roles"
    role_map: tuple[tuple[str, str], ...] = ()  # (claim value, role)

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)


@dataclasses.dataclass(frozen=True)
class StorageAccount:
    """A storage account captures can name: its kind, its name, and where its secret is."""

    kind: StorageKind
    name: str
    secret: str = dataclasses.field(repr=False)
    """A reference (env:VAR or file:PATH, fleetcap.core.secrets), read when the sink is built."""


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
    manifest_key: str = ""
    """PEM file of the Ed25519 key that signs capture manifests, created (0600) if absent;
    empty = data_dir/manifest-key.pem. The replicas of one deployment share one file."""
    agent_ttl_s: int = 10
    """Lease of an agent's registration: a silent agent is declared stopped after this."""
    storage_accounts: tuple[StorageAccount, ...] = ()
    """Storage accounts beyond LOCAL_ACCOUNT ("local"), which is always there."""
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
    def manifest_key_path(self) -> str:
        return self.manifest_key or f"{self.data_dir.rstrip('/')}/manifest-key.pem"

    @property
    def local_storage_dir(self) -> str:
        return self.storage_dir or f"{self.data_dir.rstrip('/')}/storage"


def parse_etcd_endpoints(value: str, *, tls: bool, insecure: bool = False) -> tuple[str, ...]:
    """--etcd as etcd and etcdctl take it: a comma list of `host:port`, `host` (port 2379),
    `http://host:port` or `https://host:port`, IPv6 as `[addr]:port`. Returns host:port strings.
    https:// needs TLS (--etcd-ca) and http:// refuses it, so that a scheme never silently means
    the other. Plaintext beyond loopback is refused without `insecure` (it would carry
    ETCD_PASSWORD and every record in the clear), before anything is dialled. Raises ValueError
    naming --etcd and the rule."""
    endpoints = []
    schemes = set()
    for raw in (v.strip() for v in value.split(",")):
        if not raw:
            continue
        scheme, sep, rest = raw.partition("://")
        if not sep:
            scheme, rest = "", raw
        elif scheme not in ("http", "https"):
            raise ValueError(f"--etcd: '{raw}': the scheme must be http:// or https://")
        schemes.add(scheme)
        rest = rest.rstrip("/")
        if "/" in rest or "@" in rest or not rest:
            raise ValueError(f"--etcd: '{raw}' is not host:port or a URL of one (no path, no user)")
        if rest.startswith("["):
            host, _, port = rest[1:].partition("]")
            port = port.removeprefix(":")
        elif rest.count(":") > 1:
            raise ValueError(f"--etcd: '{raw}': write an IPv6 address as [addr]:port")
        else:
            host, _, port = rest.partition(":")
        port = port or "2379"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--etcd: '{raw}' is not host:port")
        endpoints.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if not endpoints:
        raise ValueError("--etcd: give at least one endpoint")
    if "https" in schemes and not tls:
        raise ValueError("--etcd: https:// endpoints need --etcd-ca (the CA of etcd's certificate)")
    if "http" in schemes and tls:
        raise ValueError("--etcd: http:// is plaintext, but --etcd-ca asks for TLS; write https://")
    if not tls and not insecure:
        for endpoint in endpoints:
            if not is_local(endpoint):
                raise ValueError(
                    f"--etcd {endpoint}: not a local address, and there is no --etcd-ca; give --etcd-ca "
                    "(with --etcd-cert and --etcd-key) to reach etcd over TLS, or --insecure to send "
                    "plaintext, ETCD_PASSWORD included"
                )
    return tuple(endpoints)
