"""`fleetcap tls`: the deployment's CA, certificates and bearer tokens."""

from __future__ import annotations

import argparse
import os
import sys

from fleetcap.clients.cli.common import EXIT_OK, Parser, UsageError, optional
from fleetcap.core.auth import AuthFile as AuthFileT
from fleetcap.core.auth import Role


def cmd_tls_ca_create(args: argparse.Namespace) -> int:
    optional("cryptography", "fleetcap tls")
    from fleetcap.core import pki

    issued = pki.create_ca(args.out)
    print(f"wrote {issued.cert_path} and {issued.key_path} (keep the key offline; give agents and clients ca.pem)")
    return EXIT_OK


def cmd_tls_cert_create(args: argparse.Namespace) -> int:
    optional("cryptography", "fleetcap tls")
    from fleetcap.core import auth, naming, pki
    from fleetcap.v1 import fleet_pb2

    kinds = [k for k in ("coordinator", "agent", "client", "gateway") if getattr(args, k)]
    if len(kinds) != 1:
        raise UsageError("give exactly one of --coordinator, --agent, --client NAME or --gateway NAME")
    if kinds[0] not in ("coordinator", "gateway") and (args.dns or args.ip):
        raise UsageError("--dns and --ip go with --coordinator or --gateway")
    if kinds[0] != "agent" and (args.vm or args.vmss or args.instance_id or args.resource_group or args.subscription):
        raise UsageError("--vm, --vmss, --instance-id, -g and --subscription go with --agent")
    if kinds[0] != "client" and args.role:
        raise UsageError("--role goes with --client")
    try:
        if args.coordinator:
            issued = pki.issue_coordinator(args.ca, args.out, dns=args.dns or [], ips=args.ip or [])
        elif args.agent:
            if bool(args.vm) == bool(args.vmss) or (args.vmss and not (args.instance_id or "").isdigit()):
                raise UsageError("--agent needs --vm NAME, or --vmss NAME --instance-id N")
            ident = fleet_pb2.AgentIdentity(
                vm_name=args.vm or "",
                vmss_name=args.vmss or "",
                instance_id=args.instance_id if args.vmss else "",
                resource_group=args.resource_group or "",
                subscription=args.subscription or "",
            )
            arm_id = naming.resource_id(ident)
            issued = pki.issue_agent(args.ca, args.out, arm_id=arm_id, instance_name=naming.instance_name(arm_id))
        elif args.client:
            if not auth.NAME_RE.match(args.client):
                raise UsageError(f"--client: '{args.client}' must match {auth.NAME_RE.pattern}")
            roles = sorted(auth.parse_roles(args.role or [], "--role"))
            if not roles:
                raise UsageError("--client needs at least one --role (" + ", ".join(auth.Role) + ")")
            issued = pki.issue_client(args.ca, args.out, name=args.client, roles=roles)
        else:
            if not auth.NAME_RE.match(args.gateway):
                raise UsageError(f"--gateway: '{args.gateway}' must match {auth.NAME_RE.pattern}")
            issued = pki.issue_gateway(args.ca, args.out, name=args.gateway, dns=args.dns or [], ips=args.ip or [])
    except (pki.PkiError, auth.AuthError) as e:
        raise UsageError(str(e)) from None
    print(f"wrote {issued.cert_path} and {issued.key_path}")
    return EXIT_OK


def _auth_file(path: str) -> AuthFileT:
    from fleetcap.core import auth

    if not os.path.exists(path):
        return auth.AuthFile()
    try:
        return auth.AuthFile.load(path)
    except (OSError, auth.AuthError) as e:
        raise UsageError(f"--auth-file: {e}") from None


def cmd_tls_token_create(args: argparse.Namespace) -> int:
    from fleetcap.core import auth

    try:
        roles = auth.parse_roles([args.role], "--role")
        token = auth.new_token()
        _auth_file(args.auth_file).with_token(args.name, roles, token).save(args.auth_file)
    except auth.AuthError as e:
        raise UsageError(str(e)) from None
    print(token)  # shown once: only its hash is kept
    print(f"token '{args.name}' ({args.role}) added to {args.auth_file}; send the coordinator SIGHUP to load it", file=sys.stderr)
    return EXIT_OK


def cmd_tls_token_revoke(args: argparse.Namespace) -> int:
    from fleetcap.core import auth

    try:
        _auth_file(args.auth_file).without_token(args.name).save(args.auth_file)
    except auth.AuthError as e:
        raise UsageError(str(e)) from None
    print(f"token '{args.name}' removed from {args.auth_file}; send the coordinator SIGHUP to apply it", file=sys.stderr)
    return EXIT_OK


def add_tls_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    tls = sub.add_parser("tls", help="a small PKI and bearer tokens, for deployments without their own")
    kinds = tls.add_subparsers(dest="kind", required=True, parser_class=Parser)
    ca = kinds.add_parser("ca", help="certificate authority").add_subparsers(dest="verb", required=True, parser_class=Parser)
    cc = ca.add_parser("create", help="create a CA: OUT/ca.pem and OUT/ca-key.pem (0600)")
    cc.add_argument("--out", required=True, help="directory to write into")
    cc.set_defaults(func=cmd_tls_ca_create, daemon=True)
    cert = kinds.add_parser("cert", help="certificates").add_subparsers(dest="verb", required=True, parser_class=Parser)
    ce = cert.add_parser(
        "create",
        help="create one certificate and its key (0600), signed by the CA",
        epilog="examples:\n  fleetcap tls cert create --ca ca --out certs --coordinator --dns coord.example\n"
        "  fleetcap tls cert create --ca ca --out certs --agent --vmss web --instance-id 3 -g rg1\n"
        "  fleetcap tls cert create --ca ca --out certs --client alice --role contributor",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ce.add_argument("--ca", required=True, help="directory holding ca.pem and ca-key.pem")
    ce.add_argument("--out", required=True, help="directory to write into")
    ce.add_argument("--coordinator", action="store_true", help="a coordinator's server certificate")
    ce.add_argument("--dns", action="append", help="coordinator or gateway: a DNS name it is reached by (repeatable)")
    ce.add_argument("--ip", action="append", help="coordinator or gateway: an IP address it is reached by (repeatable)")
    ce.add_argument("--agent", action="store_true", help="an agent's certificate, bound to its instance")
    ce.add_argument("--vm", help="agent: its VM name")
    ce.add_argument("--vmss", help="agent: its scale set")
    ce.add_argument("--instance-id", help="agent: its instance id in the scale set")
    ce.add_argument("--resource-group", "-g", help="agent: its resource group")
    ce.add_argument("--subscription", help="agent: its subscription")
    ce.add_argument("--client", metavar="NAME", help="a client's certificate (CLI, SDK, scripts)")
    ce.add_argument("--role", action="append", help="client: a role it has (repeatable): " + ", ".join(Role))
    ce.add_argument(
        "--gateway",
        metavar="NAME",
        help="a gateway's certificate: its HTTPS listener and its mutual TLS to the coordinator (it forwards its callers' tokens)",
    )
    ce.set_defaults(func=cmd_tls_cert_create, daemon=True)
    token = kinds.add_parser("token", help="bearer tokens").add_subparsers(dest="verb", required=True, parser_class=Parser)
    tc = token.add_parser("create", help="create a token: printed once, only its hash is stored")
    tc.add_argument("--name", required=True)
    tc.add_argument("--role", required=True, choices=list(Role))
    tc.add_argument("--auth-file", required=True, help="the coordinator's auth file (TOML), created if absent")
    tc.set_defaults(func=cmd_tls_token_create, daemon=True)
    tr = token.add_parser("revoke", help="remove a token (the coordinator applies it on SIGHUP)")
    tr.add_argument("--name", required=True)
    tr.add_argument("--auth-file", required=True)
    tr.set_defaults(func=cmd_tls_token_revoke, daemon=True)
