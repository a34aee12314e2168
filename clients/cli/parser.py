"""The command line: the global flags, each verb group's parsers (added by its own module), the
examples under every --help, TOML defaults (--config) and shell completion."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from fleetcap.clients import sdk
from fleetcap.clients.cli import capture, fleet, gateway, manifests, reading
from fleetcap.clients.cli.common import LOG_LEVELS, Parser, UsageError, add_credential_flags, credentials, has, version
from fleetcap.clients.cli.output import OUTPUTS
from fleetcap.clients.cli.tls import add_tls_parser
from fleetcap.core import transport


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    """The client verbs (and the gateway, a client too); returns the parser and its
    subcommands, to which the composition root (fleetcap.main) adds the daemons."""
    p = Parser(prog="fleetcap", description="Packet capture across a fleet (Azure Network Watcher style).")
    p.add_argument(
        "--coordinator",
        default=os.environ.get("FLEETCAP_COORDINATOR"),
        help=f"coordinator address, host:port or unix:/path (env FLEETCAP_COORDINATOR; default {transport.DEFAULT_ADDRESS})",
    )
    p.add_argument(
        "-o", "--output", choices=OUTPUTS, default="json", help="json (default), jsonc (colored), yaml, yamlc, table, tsv or none, as az's"
    )
    p.add_argument(
        "--query",
        metavar="JMESPATH",
        help='a JMESPath query applied to the result, as az\'s (e.g. "instances[?packetsCaptured > `0`].instanceId")',
    )
    p.add_argument("--only-show-errors", action="store_true", help="log errors only (no warnings), as az's")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("FLEETCAP_LOG_FORMAT", "text"),
        help="text, or json: one JSON object a line (time, level, logger, message, exception), for a "
        "log pipeline (env FLEETCAP_LOG_FORMAT)",
    )
    p.add_argument(
        "--subscription", help="accepted on every command, as az's; a deployment is one subscription (create takes it as the capture's)"
    )
    p.add_argument("--version", action="version", version=f"fleetcap {version()}")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="TOML defaults for any flag: top-level keys for the global flags, "
        "a table per command ([coordinator], [agent], [gateway], "
        "[capture.create]); the command line wins (env FLEETCAP_CONFIG)",
    )
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=os.environ.get("FLEETCAP_LOG_LEVEL", "INFO").upper(),
        help="DEBUG, INFO, WARNING or ERROR (env FLEETCAP_LOG_LEVEL)",
    )
    add_credential_flags(p)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    gateway.add_parser(sub)
    add_tls_parser(sub)
    manifests.add_parsers(sub)
    fleet.add_parsers(sub)

    cap = sub.add_parser("capture", help="manage packet captures (az network watcher packet-capture)")
    verbs = cap.add_subparsers(dest="verb", required=True, parser_class=Parser)
    capture.add_create_parser(verbs)
    capture.add_trigger_parser(verbs)
    manifests.add_capture_parsers(verbs)
    capture.add_simple_parsers(verbs)
    reading.add_parsers(verbs)
    return p, sub  # type: ignore[return-value]  # Parser is an ArgumentParser


_LOCAL_GLOBALS = ("-o", "--log-level", "--only-show-errors", "--log-format", "--config")


# Examples shown by every command's --help; tests/unit/test_cli_docs.py parses each one.
EXAMPLES: dict[str, list[str]] = {
    "gateway": [
        "fleetcap --coordinator coord.example:7770 --tls-ca ca/ca.pem gateway --listen [::]:8443 "
        "--tls-cert certs/gw1.pem --tls-key certs/gw1-key.pem --public-host gw.example "
        "--webhook-token file:/etc/fleetcap/webhook.token"
    ],
    "tls ca create": ["fleetcap tls ca create --out ca"],
    "tls cert create": [
        "fleetcap tls cert create --ca ca --out certs --coordinator --dns coord.example",
        "fleetcap tls cert create --ca ca --out certs --agent --vmss web --instance-id 3 -g rg1",
        "fleetcap tls cert create --ca ca --out certs --client alice --role contributor",
        "fleetcap tls cert create --ca ca --out certs --gateway gw1 --dns gw.example",
    ],
    "tls token create": ["fleetcap tls token create --name ops --role contributor --auth-file auth.toml"],
    "tls token revoke": ["fleetcap tls token revoke --name ops --auth-file auth.toml"],
    "agents list": ["fleetcap agents list -o table"],
    "storage-accounts list": ["fleetcap storage-accounts list -o table"],
    "capture create": [
        "fleetcap capture create -n pc1 -g rg1 --vm vm1 --file-path /var/captures/pc1.cap --time-limit 60",
        "fleetcap capture create -n pc2 -g rg1 --target web --target-type AzureVMSS --include 0 3 "
        '--storage-account local --filters \'[{"protocol": "TCP", "localPort": "443"}]\'',
        "fleetcap capture create -n rec1 -g rg1 --target web --target-type AzureVMSS --storage-account local --standby 300 --time-limit 0",
        "fleetcap capture create -n pc3 -g rg1 --target web --target-type AzureVMSS --storage-account local "
        "--capture-size 128 --dry-run -o table",
    ],
    "capture manifest": ["fleetcap capture manifest -n pc1 --out pc1/manifest.json"],
    "capture verify": ["fleetcap capture verify -n pc1 --dir ./pc1 -o table"],
    "manifest-key show": ["fleetcap manifest-key show --out fleetcap-manifest-key.pem"],
    "verify": ["fleetcap verify pc1/manifest.json ./pc1 --public-key fleetcap-manifest-key.pem"],
    "capture trigger": ["fleetcap capture trigger -n rec1 --after 30 --note INC-4711"],
    "capture show": ["fleetcap capture show -n pc1 -o yaml"],
    "capture stop": ["fleetcap capture stop -n pc1"],
    "capture delete": ["fleetcap capture delete -n pc1"],
    "capture show-status": [
        "fleetcap capture show-status -n pc1 -o table",
        'fleetcap capture show-status -n pc1 --query "instances[?kernelDrops > `0`].instanceId"',
    ],
    "capture query-status": ["fleetcap capture query-status --packet-capture-name pc1"],
    "capture list": [
        "fleetcap capture list -o table",
        'fleetcap capture list --query "[].name" -o tsv',
        "fleetcap capture list --max-items 100 -o table",
    ],
    "capture download": ["fleetcap capture download -n pc1 --dest ./pc1 --merge"],
    "capture follow": ["fleetcap capture follow -n pc1 --instance-id 3 | wireshark -k -i -"],
    "capture watch": ["fleetcap capture watch -n pc1"],
    "capture wait": [
        "fleetcap capture wait -n pc1 --progress",
        "fleetcap capture wait -n pc1 --created --interval 2",
        "fleetcap capture wait -n pc1 --custom \"status.packetCaptureStatus=='Running'\" --interval 1 --timeout 60",
    ],
    "coordinator": [
        "fleetcap coordinator --listen 0.0.0.0:7770 --mtls-listen 0.0.0.0:7771 --tls-cert certs/coordinator.pem "
        "--tls-key certs/coordinator-key.pem --tls-client-ca ca/ca.pem --auth-file auth.toml"
    ],
    "state": [
        "fleetcap state captures/ --etcd https://10.0.0.11:2379 --etcd-ca etcd/ca.pem --etcd-cert etcd/client.pem "
        "--etcd-key etcd/client-key.pem"
    ],
    "agent": [
        "fleetcap agent --coordinator coord.example:7771 --vmss web --instance-id 3 -g rg1 --tls-ca ca/ca.pem "
        "--tls-cert certs/agent.pem --tls-key certs/agent-key.pem"
    ],
}


def with_examples(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Puts EXAMPLES in each command's --help."""

    def visit(p: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    key = " ".join((*path, name))
                    if key in EXAMPLES:
                        child.epilog = "examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES[key])
                        child.formatter_class = argparse.RawDescriptionHelpFormatter
                    visit(child, (*path, name))

    visit(parser, ())
    return parser  # the global options that also mean something to a daemon


def globals_anywhere(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Lets the global options come anywhere on the line, as az's do: `fleetcap capture
    show-status -n pc1 -o table` as well as `fleetcap -o table capture show-status -n pc1`. Each
    subcommand gets a copy of them whose default is SUPPRESS, so a value given after the verb
    wins and an absent one leaves the global default alone. Daemons and local commands get only
    the output and log options (a coordinator's --token would mean nothing); an option a
    subcommand has of its own (the gateway's --tls-cert) is left to it."""
    if getattr(parser, "_globals_anywhere", False):
        return parser
    globals_ = [a for a in parser._actions if a.option_strings and a.dest != "help" and not isinstance(a, argparse._VersionAction)]

    def visit(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in set(action.choices.values()):
                    local_only = child.get_default("daemon") is True
                    for g in globals_:
                        if local_only and not set(g.option_strings) & set(_LOCAL_GLOBALS):
                            continue
                        if set(g.option_strings) & set(child._option_string_actions):
                            continue
                        if isinstance(g, argparse._StoreTrueAction | argparse._StoreConstAction):
                            child.add_argument(
                                *g.option_strings, dest=g.dest, action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
                            )
                        else:
                            child.add_argument(
                                *g.option_strings,
                                dest=g.dest,
                                type=g.type,
                                choices=g.choices,
                                metavar=g.metavar,
                                default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS,
                            )
                    visit(child)

    visit(parser)
    parser._globals_anywhere = True  # type: ignore[attr-defined]
    return parser


def apply_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Defaults from a TOML file (`--config FILE` anywhere on the line, or $FLEETCAP_CONFIG): the
    global flags at the top level or in `[global]` (the client's `coordinator` address must go
    there, since `[coordinator]` is the daemon's table), and a table per command for its flags,
    each key a flag's name without its dashes (`[coordinator]`, `[agent]`, `[capture.create]`).
    The command line wins over the file. Secrets stay `env:` or `file:` references, as on the
    command line. Raises UsageError naming the file, the table and the key."""
    import tomllib

    path = os.environ.get("FLEETCAP_CONFIG", "")
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if not path:
        return
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise UsageError(f"--config: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--config: {path} is not valid TOML ({e})") from None

    def apply(p: argparse.ArgumentParser, table: dict[str, Any], where: str) -> None:
        children = next((a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)), {})
        defaults: dict[str, Any] = {}
        for key, value in table.items():
            here = f"{path}: {where}{key}"
            if isinstance(value, dict) and key == "global" and not where:
                apply(p, value, "global.")  # the global flags (a table, since `coordinator` is also a command)
                continue
            if isinstance(value, dict):
                if key not in children:
                    raise UsageError(f"--config: {here}: no command '{key}' here")
                apply(children[key], value, f"{where}{key}.")
                continue
            action = p._option_string_actions.get(f"--{key}")
            if action is None or action.dest in ("help", "config") or isinstance(action, argparse._VersionAction):
                raise UsageError(f"--config: {here}: not a flag of this command")
            defaults[action.dest] = _config_value(action, value, here)
        p.set_defaults(**defaults)

    apply(parser, doc, "")


def _config_value(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(action, argparse._StoreConstAction):  # store_true and its kind
        if not isinstance(value, bool):
            raise UsageError(f"--config: {where}: must be true or false")
        return action.const if value else action.default
    many = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")
    values = value if isinstance(value, list) else [value]
    if not many and isinstance(value, list):
        raise UsageError(f"--config: {where}: takes one value, not a list")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise UsageError(f"--config: {where}: must be a string or a number")
        try:
            converted = action.type(str(v)) if callable(action.type) else str(v)
        except (TypeError, ValueError):
            raise UsageError(f"--config: {where}: '{v}' is not valid") from None
        if action.choices is not None and converted not in action.choices:
            raise UsageError(f"--config: {where}: '{v}' is not one of {', '.join(map(str, action.choices))}")
        out.append(converted)
    return out if many else out[0]


def _completion_client(parsed: argparse.Namespace) -> sdk.Client:
    creds = credentials(parsed)
    return sdk.Client(
        getattr(parsed, "coordinator", None),
        timeout_s=2,
        tls_ca=creds.tls_ca,
        tls_cert=creds.tls_cert,
        tls_key=creds.tls_key,
        token=creds.token,
        insecure=creds.insecure,
    )


def _complete_capture_names(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Shell completion of --name: the coordinator's captures (none when it does not answer)."""
    try:
        with _completion_client(parsed_args) as c:
            return [x.name for x in c.list() if x.name.startswith(prefix)]
    except (sdk.FleetcapError, ValueError, UsageError):
        return []


def _complete_instance_ids(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Shell completion of --instance-id: the instances of the capture named on the line."""
    try:
        with _completion_client(parsed_args) as c:
            status = c.get_status(name=parsed_args.name)
        return [i.instance_id for i in status.instances if i.instance_id.startswith(prefix)]
    except (sdk.FleetcapError, ValueError, UsageError, AttributeError):
        return []


def with_completion(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """argcomplete's completers: verbs and flags from the parser, capture names and instance ids
    from the coordinator. Only when the shell asks (`_ARGCOMPLETE` set), then it exits."""
    if "_ARGCOMPLETE" not in os.environ or not has("argcomplete"):
        return parser
    import argcomplete

    def visit(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in set(action.choices.values()):
                    visit(child)
            elif action.dest == "name" and "--name" in action.option_strings:
                action.completer = _complete_capture_names  # type: ignore[attr-defined]
            elif action.dest == "instance_id" and p.get_default("daemon") is not True:
                action.completer = _complete_instance_ids  # type: ignore[attr-defined]

    visit(parser)
    argcomplete.autocomplete(parser)
    return parser
