"""The CLI's shared pieces: exit codes (a table keyed on the SDK's ErrorCode), the parser class,
the extras a verb may need, and the credential flags every client verb takes."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, NoReturn, TypeAlias

from fleetcap.clients.errors import ErrorCode
from fleetcap.core import secrets, transport

log = logging.getLogger(__name__)


EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_EXISTS = 0, 1, 2, 3, 4


EXIT_UNAUTHENTICATED, EXIT_DENIED = 6, 7


# The SDK's error code → the exit code; any other error is EXIT_ERROR.
EXIT_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.RESOURCE_EXHAUSTED: 5,
    ErrorCode.UNAUTHENTICATED: EXIT_UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: EXIT_DENIED,
    ErrorCode.INVALID_ARGUMENT: EXIT_INVALID,
    ErrorCode.NOT_FOUND: EXIT_NOT_FOUND,
    ErrorCode.ALREADY_EXISTS: EXIT_EXISTS,
}


LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class UsageError(Exception):
    """Bad command-line input, reported with exit code 2."""


CLI_EXTRA = "pip install 'fleetcap[cli]'"


def optional(module: str, what: str) -> Any:
    """Imports a package of an extra (the CLI's: rich, jmespath, PyYAML, argcomplete,
    cryptography), or says which extra brings it: `pip install fleetcap` alone is the agent and
    the SDK, and an agent host carries nothing it does not import."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{what} needs {module.split('.')[0]}, which this install lacks: {CLI_EXTRA}") from None


def has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fleetcap")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 as well; keep its usage line
        self.print_usage(sys.stderr)
        print(f"fleetcap: error: {message}", file=sys.stderr)
        sys.exit(EXIT_INVALID)


def secret(flag: str, source: str) -> str:
    """A secret from `env:VAR` or `file:PATH` (fleetcap.core.secrets). A literal value is refused:
    a command line is visible to every user of the machine (ps, /proc)."""
    try:
        return secrets.resolve(source)
    except secrets.SecretError as e:
        raise UsageError(f"{flag}: {e}") from None


def add_credential_flags(parser: argparse.ArgumentParser) -> None:
    """--tls-ca, --tls-cert, --tls-key, --token and --insecure, for clients and agents."""
    parser.add_argument(
        "--tls-ca",
        default=argparse.SUPPRESS,
        help="CA (PEM) the coordinator's certificate chains to; set, TLS with no plaintext fallback (env FLEETCAP_TLS_CA)",
    )
    parser.add_argument("--tls-cert", default=argparse.SUPPRESS, help="client certificate (PEM), for mutual TLS (env FLEETCAP_TLS_CERT)")
    parser.add_argument("--tls-key", default=argparse.SUPPRESS, help="its private key (env FLEETCAP_TLS_KEY)")
    parser.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        metavar="env:VAR|file:PATH",
        help="bearer token, from an environment variable or a file (env FLEETCAP_TOKEN holds the token itself)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=argparse.SUPPRESS,
        help="allow plaintext to a coordinator beyond loopback (never in production)",
    )


def credentials(args: argparse.Namespace) -> transport.ClientCredentials:
    token = getattr(args, "token", "")
    return transport.ClientCredentials.from_env(
        tls_ca=getattr(args, "tls_ca", ""),
        tls_cert=getattr(args, "tls_cert", ""),
        tls_key=getattr(args, "tls_key", ""),
        token=secret("--token", token) if token else "",
        insecure=getattr(args, "insecure", False),
    )


def az_ignored(parser: argparse.ArgumentParser) -> None:
    """az's watcher-picking flags, accepted so that az command lines run unchanged: a fleetcap
    deployment is one watcher in one region."""
    parser.add_argument("--location", "-l", help="accepted for az compatibility; ignored")
    parser.add_argument("--network-watcher-name", help="accepted for az compatibility; ignored")
    parser.add_argument("--resource-group", "-g", help="accepted for az compatibility; ignored")


# A verb group's subcommands, to which each module adds its own parsers.
Commands: TypeAlias = "argparse._SubParsersAction[Parser]"
