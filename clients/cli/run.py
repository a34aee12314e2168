"""Running a parsed command: credentials, the client, and errors to exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fleetcap.clients import sdk
from fleetcap.clients.cli.common import EXIT_BY_CODE, EXIT_ERROR, EXIT_INVALID, UsageError, credentials, optional
from fleetcap.clients.cli.output import QueryError, cell
from fleetcap.clients.cli.parser import apply_config, build_parser, globals_anywhere, with_completion, with_examples
from fleetcap.clients.errors import ErrorCode
from fleetcap.core import logs, transport


def _unreachable(e: sdk.FleetcapError) -> bool:
    """The call never reached a coordinator (refused, no route, no name, a failed handshake), as
    opposed to a coordinator that answered UNAVAILABLE itself."""
    return e.code == ErrorCode.UNAVAILABLE and any(
        words in e.message
        for words in ("failed to connect to all addresses", "DNS resolution failed", "Connection refused", "No route to host")
    )


def _coordinator_source(argv: Sequence[str] | None, args: argparse.Namespace) -> str:
    """Where the client's coordinator address came from, for an error that says how to change it."""
    line = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--coordinator" or a.startswith("--coordinator=") for a in line):
        return "from --coordinator"
    if args.coordinator and args.coordinator != os.environ.get("FLEETCAP_COORDINATOR"):
        return "from --config"
    if args.coordinator:
        return "from FLEETCAP_COORDINATOR"
    return "the default"


def main(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Runs one command line. A daemon subcommand (set_defaults(daemon=True)) gets the parsed
    arguments; every other verb gets an SDK client too."""
    parser = with_examples(globals_anywhere(parser or build_parser()[0]))
    try:
        apply_config(parser, list(sys.argv[1:] if argv is None else argv))
    except UsageError as e:
        print(f"fleetcap: error: {e}", file=sys.stderr)
        return EXIT_INVALID
    args = with_completion(parser).parse_args(argv)
    level = "ERROR" if getattr(args, "only_show_errors", False) else args.log_level.upper()
    logs.configure(level, json_lines=args.log_format == "json")
    try:
        if getattr(args, "daemon", False):
            code: int = args.func(args)
            return code
        # The output's packages before any call: a create must not succeed and then fail to print.
        if getattr(args, "output", "json") in ("yaml", "yamlc"):
            optional("yaml", f"-o {args.output}")
        if getattr(args, "query", None):
            optional("jmespath", "--query")
        creds = credentials(args)
        with sdk.Client(
            args.coordinator,
            tls_ca=creds.tls_ca,
            tls_cert=creds.tls_cert,
            tls_key=creds.tls_key,
            token=creds.token,
            insecure=creds.insecure,
        ) as client:
            code = args.func(client, args)
            return code
    except UsageError as e:
        print(f"fleetcap: error: {e}", file=sys.stderr)
        return EXIT_INVALID
    except sdk.FleetcapError as e:
        if _unreachable(e):
            address = args.coordinator or transport.DEFAULT_ADDRESS
            print(
                f"fleetcap: cannot reach the coordinator at {cell(address)} ({_coordinator_source(argv, args)}; "
                "set --coordinator or FLEETCAP_COORDINATOR)",
                file=sys.stderr,
            )
            print(f"fleetcap: the connection failed with: {cell(e.message)}", file=sys.stderr)
            return EXIT_ERROR
        print(f"fleetcap: {e.code.name}: {cell(e.message)}", file=sys.stderr)
        return EXIT_BY_CODE.get(e.code, EXIT_ERROR)
    except TimeoutError as e:
        print(f"fleetcap: {e}", file=sys.stderr)
        return EXIT_ERROR
    except QueryError as e:
        print(f"fleetcap: error: {e}", file=sys.stderr)
        return EXIT_INVALID
    except ValueError as e:  # credentials that cannot be used (a file, plaintext beyond loopback)
        print(f"fleetcap: error: {e}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return EXIT_ERROR
