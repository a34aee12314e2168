"""The composition root: the `fleetcap` command.

The client verbs and the gateway come from fleetcap.clients.cli; this module adds the two
daemons, `fleetcap coordinator` and `fleetcap agent`, and is the only module that reaches all
three components. Each daemon's flags take their defaults from its settings dataclass, and
its package is imported only when it runs, so a client command never loads etcd's client,
the Blob SDK or libpcap.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import Sequence

from fleetcap.clients import cli
from fleetcap.coordinator.settings import CoordinatorSettings, OidcSettings, ServiceConfig, StorageAccount, parse_etcd_endpoints
from fleetcap.coordinator.storage import registry
from fleetcap.core import transport
from fleetcap.core.vocabulary import LOCAL_ACCOUNT
from fleetcap.node_agent.settings import AgentSettings
from fleetcap.v1 import fleet_pb2

_COORDINATOR = CoordinatorSettings()
_SERVICE = ServiceConfig()


def storage_accounts(specs: Sequence[str]) -> tuple[StorageAccount, ...]:
    """`[KIND:]NAME[=env:VAR|=file:PATH]` → the accounts, each secret checked readable now (and
    read again when the sink is built). KIND is a registry flag; left out, the secret says it
    (an S3 connection string begins `S3Endpoint=`; anything else is Azure Blob's). Without a
    reference the kind's default applies (Blob: env:AZURE_STORAGE_CONNECTION_STRING). A secret
    itself is refused: a command line is visible to every user of the machine."""
    out: list[StorageAccount] = []
    for spec in specs:
        account, sep, reference = spec.partition("=")
        kind_flag, colon, name = account.rpartition(":")
        try:
            backend = registry.by_flag(kind_flag) if colon else registry.DEFAULT
        except registry.UnknownKind as e:
            raise cli.UsageError(f"--storage-account {account}: {e}") from None
        if not name or name == LOCAL_ACCOUNT or "/" in name or name in (a.name for a in out):
            raise cli.UsageError(f"--storage-account '{name}': the name must be non-empty, unique, not '{LOCAL_ACCOUNT}', without '/'")
        source = reference if sep else backend.default_secret
        secret = cli.secret(f"--storage-account {account}", source)
        if not colon:
            backend = registry.by_secret(secret)
        require_extra(backend.extra, f"--storage-account {account} ({backend.kind})", *backend.packages)
        out.append(StorageAccount(kind=backend.kind, name=name, secret=source))
    return tuple(out)


def require_extra(extra: str, what: str, *modules: str) -> None:
    """Refuses, naming the extra to install, a command whose packages this install lacks: an
    agent install (`pip install fleetcap`) has only what the agent imports."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise cli.UsageError(f"{what} needs {', '.join(missing)}, which this install lacks: pip install 'fleetcap[{extra}]'")


def cmd_coordinator(args: argparse.Namespace) -> int:
    require_extra("coordinator", "fleetcap coordinator", "aetcd", "jwt", "grpc_health", "grpc_reflection", "cryptography")
    from fleetcap.coordinator import app

    if bool(args.tls_cert) != bool(args.tls_key):
        raise cli.UsageError("--tls-cert and --tls-key go together")
    if args.mtls_listen and not (args.tls_cert and args.tls_client_ca):
        raise cli.UsageError("--mtls-listen needs --tls-cert, --tls-key and --tls-client-ca")
    for address in args.listen or ([] if args.mtls_listen else _COORDINATOR.listen):
        if not args.tls_cert and not transport.is_local(address) and not args.insecure:
            raise cli.UsageError(
                f"--listen {address}: not a local address, and there is no --tls-cert; give "
                "--tls-cert and --tls-key (and --tls-client-ca for agents), or --insecure"
            )
    from fleetcap.coordinator.api import oidc

    try:
        oidc_settings = OidcSettings(
            issuer=args.oidc_issuer,
            audience=args.oidc_audience,
            jwks=args.oidc_jwks,
            roles_claim=args.oidc_roles_claim,
            role_map=oidc.parse_role_map(args.oidc_role),
        )
        if oidc_settings.enabled or args.oidc_audience or args.oidc_jwks:
            oidc.OidcVerifier(oidc_settings)  # refuse unusable settings now, naming the flag
    except oidc.OidcError as e:
        raise cli.UsageError(str(e)) from None
    try:
        etcd = parse_etcd_endpoints(args.etcd, tls=bool(args.etcd_ca), insecure=args.insecure) if args.etcd else ()
    except ValueError as e:
        raise cli.UsageError(str(e)) from None
    settings = CoordinatorSettings(
        oidc=oidc_settings,
        storage_accounts=storage_accounts(args.storage_account or []),
        listen=tuple(args.listen or ([] if args.mtls_listen else _COORDINATOR.listen)),
        mtls_listen=tuple(args.mtls_listen or ()),
        etcd=etcd,
        store=args.store,
        data_dir=args.data_dir,
        storage_dir=args.storage_dir,
        manifest_key=args.manifest_key,
        agent_ttl_s=args.agent_ttl,
        service=ServiceConfig(max_captures=args.max_captures),
        metrics_listen=args.metrics_listen,
        health_listen=args.health_listen,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_file=args.auth_file,
        insecure=args.insecure,
        etcd_ca=args.etcd_ca,
        etcd_cert=args.etcd_cert,
        etcd_key=args.etcd_key,
        etcd_username=os.environ.get("ETCD_USERNAME", ""),
        etcd_password=os.environ.get("ETCD_PASSWORD", ""),
    )
    try:
        asyncio.run(app.serve(settings, hard_exit=True))
    except app.StoreUnreachable as e:
        print(f"fleetcap: error: {e}", file=sys.stderr)
        return cli.EXIT_ERROR
    return cli.EXIT_OK


def cmd_agent(args: argparse.Namespace) -> int:
    if bool(args.vm) == bool(args.vmss):
        raise cli.UsageError("give exactly one of --vm NAME or --vmss NAME --instance-id N")
    if args.vmss and (args.instance_id is None or not args.instance_id.isdigit()):
        raise cli.UsageError("--vmss needs --instance-id, a non-negative integer")
    from fleetcap.node_agent import app

    identity = fleet_pb2.AgentIdentity(
        subscription=args.subscription or "",
        resource_group=args.resource_group or "",
        vm_name=args.vm or "",
        vmss_name=args.vmss or "",
        instance_id=args.instance_id if args.vmss else "",
    )
    coordinator = args.coordinator or AgentSettings.coordinator
    credentials = cli.credentials(args)
    for address in coordinator.split(","):
        try:
            credentials.channel_credentials(address.strip())
        except ValueError as e:
            raise cli.UsageError(str(e)) from None
    settings = AgentSettings(
        coordinator=coordinator,
        identity=identity,
        interface=args.interface,
        capture_root=args.capture_root,
        buffer_size=args.buffer_size_mb << 20,
        storage_retry_s=args.storage_retry,
        metrics_listen=args.metrics_listen,
        credentials=credentials,
        test_clock_offset_s=test_clock_offset(),
    )
    asyncio.run(app.serve(settings))
    return cli.EXIT_OK


def test_clock_offset() -> float:
    """FLEETCAP_TEST_CLOCK_OFFSET_S: a test-only skew of the agent's clock (docs/operations.md)."""
    text = os.environ.get("FLEETCAP_TEST_CLOCK_OFFSET_S", "")
    try:
        return float(text) if text else 0.0
    except ValueError:
        raise cli.UsageError(f"FLEETCAP_TEST_CLOCK_OFFSET_S: '{text}' is not a number of seconds") from None


STATE_READ_S = 15.0


def cmd_state(args: argparse.Namespace) -> int:
    """Prints the records the coordinators keep in etcd, one JSON object per line (etcd holds
    them in protobuf's binary form)."""
    require_extra("coordinator", "fleetcap state", "aetcd")
    from google.protobuf import json_format
    from google.protobuf.message import Message

    from fleetcap.coordinator.state.etcd_store import EtcdAccess, EtcdKV
    from fleetcap.coordinator.state.store import Store

    try:
        endpoints = parse_etcd_endpoints(args.etcd, tls=bool(args.etcd_ca))
    except ValueError as e:
        raise cli.UsageError(str(e)) from None
    access = EtcdAccess(
        args.etcd_ca, args.etcd_cert, args.etcd_key, os.environ.get("ETCD_USERNAME", ""), os.environ.get("ETCD_PASSWORD", "")
    )

    async def read() -> list[tuple[str, Message | bytes]]:
        store = Store(EtcdKV(list(endpoints), access=access))
        try:
            return await asyncio.wait_for(store.records(args.prefix), STATE_READ_S)
        finally:
            await store.close()

    for flag, path in (("--etcd-ca", args.etcd_ca), ("--etcd-cert", args.etcd_cert), ("--etcd-key", args.etcd_key)):
        if path and not os.path.isfile(path):
            raise cli.UsageError(f"{flag} {path}: no such file")
    try:
        records = asyncio.run(read())
    except TimeoutError:
        print(f"fleetcap: error: --etcd {args.etcd}: etcd does not answer after {STATE_READ_S:g} s", file=sys.stderr)
        return cli.EXIT_ERROR
    for key, value in records:
        line = (
            {"key": key, "record": json_format.MessageToDict(value)}
            if isinstance(value, Message)
            else {"key": key, "value": value.decode(errors="replace")}
        )
        print(json.dumps(line, sort_keys=True))
    return cli.EXIT_OK


def add_daemons(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("coordinator", help="run the coordinator")
    c.add_argument(
        "--listen",
        action="append",
        help="address to serve on (repeatable): TLS with --tls-cert (callers bring a token), else plaintext "
        f"on a local address only; default {', '.join(_COORDINATOR.listen)}",
    )
    c.add_argument(
        "--mtls-listen",
        action="append",
        help="address served with mutual TLS (repeatable): agents dial it, and clients with certificates "
        "may; needs --tls-cert, --tls-key and --tls-client-ca",
    )
    c.add_argument(
        "--etcd",
        help="etcd endpoints as etcdctl takes them: host:port or http(s)://host:port, comma-separated; default: start an embedded etcd",
    )
    c.add_argument("--store", choices=["etcd", "memory"], default=_COORDINATOR.store)
    c.add_argument("--data-dir", default=_COORDINATOR.data_dir)
    c.add_argument("--storage-dir", default=_COORDINATOR.storage_dir, help="the 'local' storage account; default DATA_DIR/storage")
    c.add_argument(
        "--manifest-key",
        default=_COORDINATOR.manifest_key,
        metavar="PEM",
        help="the Ed25519 key that signs capture manifests, created (0600) if absent; replicas share one "
        "file; default DATA_DIR/manifest-key.pem",
    )
    c.add_argument("--agent-ttl", type=int, default=_COORDINATOR.agent_ttl_s, help="seconds before a silent agent is declared stopped")
    c.add_argument(
        "--max-captures",
        type=int,
        default=_SERVICE.max_captures,
        help="captures that may run at once (Azure: 10,000 per region); more get RESOURCE_EXHAUSTED",
    )
    c.add_argument(
        "--storage-account",
        action="append",
        metavar="[KIND:]NAME[=env:VAR|=file:PATH]",
        help="a storage account captures can name (repeatable). KIND: "
        + ", ".join(f"{b.flag} ({b.kind}; its secret is {b.secret}, by default from {b.default_secret})" for b in registry.BACKENDS)
        + f"; without KIND, {registry.DEFAULT.flag}",
    )
    c.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        default=_COORDINATOR.metrics_listen,
        help="serve Prometheus metrics at http://HOST:PORT/metrics",
    )
    c.add_argument(
        "--health-listen",
        metavar="HOST:PORT",
        default=_COORDINATOR.health_listen,
        help="also serve gRPC health checks alone, in plaintext, here (Kubernetes gRPC probes); the main listeners serve them too",
    )
    c.add_argument("--tls-cert", default=_COORDINATOR.tls_cert, help="certificate (PEM) every listener serves TLS with")
    c.add_argument("--tls-key", default=_COORDINATOR.tls_key, help="its private key (PEM)")
    c.add_argument(
        "--tls-client-ca",
        default=_COORDINATOR.tls_client_ca,
        help="CA (PEM) that client and agent certificates chain to; agents must present one",
    )
    c.add_argument(
        "--auth-file",
        default=_COORDINATOR.auth_file,
        help="TOML file of bearer tokens (hashes) and revoked certificates; reloaded on SIGHUP (fleetcap tls token create)",
    )
    c.add_argument("--insecure", action="store_true", help="allow plaintext listeners beyond loopback (never in production)")
    c.add_argument(
        "--oidc-issuer",
        default="",
        help="accept OpenID Connect bearer tokens from this issuer (its 'iss', e.g. https://login.microsoftonline.com/TENANT/v2.0)",
    )
    c.add_argument("--oidc-audience", default="", help="the 'aud' those tokens must carry (e.g. api://fleetcap)")
    c.add_argument("--oidc-jwks", default="", help="the issuer's signing keys: a JWKS URL (https) or file")
    c.add_argument(
        "--oidc-roles-claim",
        default="roles",
        help="claim holding the caller's roles, a dotted path (Keycloak: realm_access.roles); default roles",
    )
    c.add_argument(
        "--oidc-role",
        action="append",
        default=[],
        metavar="VALUE=ROLE",
        help="map a claim value to a role (repeatable), e.g. FleetCap.Operator=contributor; a value that is a role's name grants it as is",
    )
    c.add_argument("--etcd-ca", default=_COORDINATOR.etcd_ca, help="CA of an external etcd; set, etcd is reached over TLS")
    c.add_argument("--etcd-cert", default=_COORDINATOR.etcd_cert, help="client certificate for an external etcd")
    c.add_argument(
        "--etcd-key",
        default=_COORDINATOR.etcd_key,
        help="its private key; etcd's user and password come from ETCD_USERNAME and ETCD_PASSWORD",
    )
    c.set_defaults(func=cmd_coordinator, daemon=True)

    st = sub.add_parser("state", help="print the coordinators' records in etcd as JSON lines (read only)")
    st.add_argument("prefix", nargs="?", default="", help="only keys under /fleetcap/v1/PREFIX, e.g. captures/ or instances/NAME/")
    st.add_argument("--etcd", required=True, help="etcd endpoints, as for fleetcap coordinator")
    st.add_argument("--etcd-ca", default="", help="CA of etcd; set, etcd is reached over TLS")
    st.add_argument("--etcd-cert", default="", help="client certificate")
    st.add_argument("--etcd-key", default="", help="its private key; etcd's user and password come from ETCD_USERNAME and ETCD_PASSWORD")
    st.set_defaults(func=cmd_state, daemon=True)

    a = sub.add_parser("agent", help="run a node agent")
    a.add_argument(
        "--coordinator",
        default=argparse.SUPPRESS,
        help=f"coordinator address, host:port or unix:/path (env FLEETCAP_COORDINATOR; default {AgentSettings.coordinator})",
    )
    a.add_argument("--vm")
    a.add_argument("--vmss")
    a.add_argument("--instance-id")
    a.add_argument("--resource-group", "-g")
    a.add_argument("--subscription")
    a.add_argument("--interface", default=AgentSettings.interface, help="capture interface; default the first non-loopback one that is up")
    a.add_argument("--capture-root", default=AgentSettings.capture_root, help="where the API's /var/captures is")
    a.add_argument("--buffer-size-mb", type=int, default=AgentSettings.buffer_size >> 20, help="kernel capture ring per capture")
    a.add_argument(
        "--storage-retry",
        type=float,
        default=AgentSettings.storage_retry_s,
        help="seconds an upload keeps retrying while storage fails before the instance reports StorageFailed (the file is kept)",
    )
    a.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        default=AgentSettings.metrics_listen,
        help="serve Prometheus metrics at http://HOST:PORT/metrics",
    )
    cli.add_credential_flags(a)
    a.set_defaults(func=cmd_agent, daemon=True)


def build_parser() -> argparse.ArgumentParser:
    """The whole `fleetcap` command line: the client verbs, the gateway and the daemons."""
    parser, sub = cli.build_parser()
    add_daemons(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
