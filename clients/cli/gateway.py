"""`fleetcap gateway`: the ARM-shaped REST API, the web portal and the alert webhooks."""

from __future__ import annotations

import argparse
import os

from fleetcap.clients.cli.common import EXIT_OK, Commands, UsageError, log, secret
from fleetcap.core import transport


def cmd_gateway(args: argparse.Namespace) -> int:
    try:
        from fleetcap.clients.rest import alerts, gateway, server
    except ImportError as e:  # starlette or uvicorn missing: an agent-only install
        raise UsageError(f"the gateway needs its extra: pip install 'fleetcap[gateway]' ({e.name} is missing)") from None
    if args.alert_rules:
        try:
            alerts.AlertRules.load(args.alert_rules)  # fail at start, naming the rule and field
        except (OSError, alerts.RuleError) as e:
            raise UsageError(f"--alert-rules: {e}") from None
    webhook_token = secret("--webhook-token", args.webhook_token) if args.webhook_token else os.environ.get("FLEETCAP_WEBHOOK_TOKEN", "")
    token = getattr(args, "token", "")
    try:
        own = transport.ClientCredentials.from_env(
            tls_ca=getattr(args, "tls_ca", ""),
            tls_cert=args.client_cert or "",
            tls_key=args.client_key or "",
            token=secret("--token", token) if token else "",
            insecure=getattr(args, "insecure", False),
        )
        settings = gateway.GatewaySettings(
            coordinator=args.coordinator or transport.DEFAULT_ADDRESS,
            listen=args.listen,
            tls_cert=args.tls_cert or "",
            tls_key=args.tls_key or "",
            public_hosts=tuple(args.public_host or ()),
            webhook_token=webhook_token,
            alert_rules=args.alert_rules or "",
            credentials=own,
            max_requests=args.max_requests,
            max_requests_per_caller=args.max_requests_per_caller,
            max_streams=args.max_streams,
            max_streams_per_caller=args.max_streams_per_caller,
            request_timeout_s=args.request_timeout,
            idle_timeout_s=args.idle_timeout,
        )
        server.check(settings, insecure_listen=args.insecure_listen)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.insecure_listen and not settings.tls_cert:
        log.warning("serving plain HTTP beyond loopback (--insecure-listen): bearer tokens cross the network in clear")
    server.serve(settings)
    return EXIT_OK


def add_parser(sub: Commands) -> None:
    """Adds the `gateway` command."""
    gw = sub.add_parser("gateway", help="serve the ARM-shaped REST API, the web portal and alert webhooks")
    gw.add_argument(
        "--coordinator", default=argparse.SUPPRESS, help="coordinator address(es), host:port or unix:/path (env FLEETCAP_COORDINATOR)"
    )
    gw.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT, IPv6 as [ADDR]:PORT; default 127.0.0.1:8080")
    gw.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM; required beyond loopback)")
    gw.add_argument("--tls-key", help="its private key (PEM)")
    gw.add_argument(
        "--public-host",
        action="append",
        metavar="NAME",
        help="a Host name clients use to reach the gateway (repeatable); other Host headers get 400",
    )
    gw.add_argument(
        "--insecure-listen", action="store_true", help="allow plain HTTP beyond loopback (tokens then cross the network in clear)"
    )
    gw.add_argument("--alert-rules", help="JSON rules mapping alerts to captures (docs/alerts.md)")
    gw.add_argument(
        "--webhook-token",
        metavar="env:VAR|file:PATH",
        help="secret the webhooks require as Authorization: Bearer; required beyond loopback "
        "(env FLEETCAP_WEBHOOK_TOKEN holds the token itself)",
    )
    gw.add_argument("--tls-ca", default=argparse.SUPPRESS, help="CA (PEM) the coordinator's certificate chains to (env FLEETCAP_TLS_CA)")
    gw.add_argument("--client-cert", help="the gateway's certificate for mutual TLS to the coordinator (env FLEETCAP_TLS_CERT)")
    gw.add_argument("--client-key", help="its private key (env FLEETCAP_TLS_KEY)")
    gw.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        metavar="env:VAR|file:PATH",
        help="the gateway's own bearer token, used only by alert rules (env FLEETCAP_TOKEN); API calls carry their callers' tokens",
    )
    gw.add_argument(
        "--insecure",
        action="store_true",
        default=argparse.SUPPRESS,
        help="allow plaintext to a coordinator beyond loopback (never in production)",
    )
    gw.add_argument("--max-requests", type=int, default=256, help="requests served at once; more get 503")
    gw.add_argument("--max-requests-per-caller", type=int, default=64, help="requests one token may have in progress at once; more get 429")
    gw.add_argument(
        "--max-streams", type=int, default=64, help="event streams (/events) served at once, on a connection of their own; more get 503"
    )
    gw.add_argument("--max-streams-per-caller", type=int, default=4, help="event streams one token may have open at once; more get 429")
    gw.add_argument("--request-timeout", type=float, default=60.0, help="seconds from a request to the first byte of its response")
    gw.add_argument(
        "--idle-timeout", type=float, default=10.0, help="seconds a connection may stay open without sending a complete request"
    )
    gw.set_defaults(func=cmd_gateway, daemon=True)
