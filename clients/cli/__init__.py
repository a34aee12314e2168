"""The `fleetcap` command: the daemons, and `az network watcher packet-capture`'s verbs.

Exit codes: 0 ok, 2 invalid input, 3 not found, 4 already exists, 5 quota exceeded,
6 not authenticated, 7 not allowed (the role lacks the right), 1 anything else.

A module per verb group (capture, reading, manifests, fleet, gateway, tls), each with its
commands and the function that adds their parsers; `parser` puts them together under the global
flags, and `run` runs what was parsed.
"""

from fleetcap.clients.cli.capture import CAPTURE_TABLE, merge_newer_group_flags
from fleetcap.clients.cli.common import (
    EXIT_BY_CODE,
    EXIT_DENIED,
    EXIT_ERROR,
    EXIT_EXISTS,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAUTHENTICATED,
    UsageError,
    add_credential_flags,
    credentials,
    secret,
)
from fleetcap.clients.cli.fleet import AGENT_TABLE
from fleetcap.clients.cli.output import QueryError, emit
from fleetcap.clients.cli.parser import EXAMPLES, apply_config, build_parser, globals_anywhere
from fleetcap.clients.cli.run import main

__all__ = [
    "AGENT_TABLE",
    "CAPTURE_TABLE",
    "EXAMPLES",
    "EXIT_BY_CODE",
    "EXIT_DENIED",
    "EXIT_ERROR",
    "EXIT_EXISTS",
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAUTHENTICATED",
    "QueryError",
    "UsageError",
    "add_credential_flags",
    "apply_config",
    "build_parser",
    "credentials",
    "emit",
    "globals_anywhere",
    "main",
    "merge_newer_group_flags",
    "secret",
]
