"""`agents list` and `storage-accounts list`."""

from __future__ import annotations

import argparse

from fleetcap.clients import sdk
from fleetcap.clients.cli.common import EXIT_OK, Commands, Parser
from fleetcap.clients.cli.output import emit

AGENT_TABLE = [("Id", "id"), ("Hostname", "hostname"), ("Interface", "interface"), ("Connected", "connectedTime")]


def cmd_agents_list(client: sdk.Client, args: argparse.Namespace) -> int:
    emit([sdk.to_dict(a) for a in client.list_agents()], args, AGENT_TABLE)
    return EXIT_OK


ACCOUNT_TABLE = [("Name", "name"), ("Kind", "kind"), ("Endpoint", "endpoint")]


def cmd_storage_accounts_list(client: sdk.Client, args: argparse.Namespace) -> int:
    emit([sdk.to_dict(a) for a in client.list_storage_accounts()], args, ACCOUNT_TABLE)
    return EXIT_OK


def add_parsers(sub: Commands) -> None:
    """Adds `agents list` and `storage-accounts list`."""
    ag = sub.add_parser("agents", help="list the connected agents (the possible targets)")
    ag_verbs = ag.add_subparsers(dest="verb", required=True, parser_class=Parser)
    ag_verbs.add_parser("list", help="list connected agents").set_defaults(func=cmd_agents_list)

    sa = sub.add_parser("storage-accounts", help="list the storage accounts captures can name")
    sa_verbs = sa.add_subparsers(dest="verb", required=True, parser_class=Parser)
    sa_verbs.add_parser("list", help="list storage accounts (no credentials)").set_defaults(func=cmd_storage_accounts_list)
