"""The `fleetcap` command: the daemons, and `az network watcher packet-capture`'s verbs.

Exit codes: 0 ok, 2 invalid input, 3 not found, 4 already exists, 5 quota exceeded,
6 not authenticated, 7 not allowed (the role lacks the right), 1 anything else.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from fleetcap.clients import sdk
from fleetcap.core import logs, transport
from fleetcap.core.auth import AuthFile as AuthFileT
from fleetcap.core.auth import Role
from fleetcap.core.vocabulary import Status, TargetType

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_EXISTS = 0, 1, 2, 3, 4
EXIT_UNAUTHENTICATED, EXIT_DENIED = 6, 7
EXIT_BY_CODE = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: 5,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_INVALID,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: EXIT_EXISTS,
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


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fleetcap")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 as well; keep its usage line
        self.print_usage(sys.stderr)
        print(f"fleetcap: error: {message}", file=sys.stderr)
        sys.exit(EXIT_INVALID)


# -- output -----------------------------------------------------------------------------------

OUTPUTS = ("json", "jsonc", "yaml", "yamlc", "table", "tsv", "none")


class QueryError(ValueError):
    """--query is not valid JMESPath."""


def _emit(data: Any, args: argparse.Namespace, table: list[tuple[str, str]] | None = None) -> None:
    """Prints a result as az does. json/jsonc (colored on a terminal) and yaml/yamlc: the whole
    object. table: the table's columns under a header; tsv: the same columns without a header,
    tab-separated, for `cut` and shell loops. none: nothing. --query (JMESPath) is applied first;
    a table of a query's result takes its columns from the result."""
    output, query = args.output, getattr(args, "query", None)
    if query:
        jmespath = optional("jmespath", "--query")
        optional("jmespath.exceptions", "--query")
        try:
            data = jmespath.search(query, data)
        except jmespath.exceptions.JMESPathError as e:
            raise QueryError(f"--query: {e}") from None
        table = _query_table(data) if output in ("table", "tsv") else None
    if output == "none":
        return
    if output in ("json", "jsonc") or (table is None and output in ("table", "tsv")):
        text = json.dumps(data, indent=2)
        if output == "jsonc" and sys.stdout.isatty() and has("rich"):
            from rich.console import Console

            Console().print_json(text)
        else:
            print(text)
        return
    if output in ("yaml", "yamlc"):
        yaml = optional("yaml", f"-o {output}")
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        if output == "yamlc" and sys.stdout.isatty() and has("rich"):
            from rich.console import Console
            from rich.syntax import Syntax

            Console().print(Syntax(text, "yaml"))
        else:
            print(text, end="")
        return
    assert table is not None
    rows = data if isinstance(data, list) else [data]
    if output == "tsv":
        for r in rows:
            print("\t".join(_cell(_get(r, path)) for _, path in table))
        return
    cols = [(h, [_cell(_get(r, path)) for r in rows]) for h, path in table]
    widths = [max([len(h)] + [len(v) for v in vals]) for h, vals in cols]
    print("  ".join(h.ljust(w) for (h, _), w in zip(cols, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for i in range(len(rows)):
        print("  ".join(vals[i].ljust(w) for (_, vals), w in zip(cols, widths)).rstrip())


def _cell(value: Any) -> str:
    """A value for a terminal: text that agents and callers chose (a hostname, an interface, an
    error) has its control characters escaped, so it can neither move the cursor nor recolour
    the screen nor break a table's or tsv's columns."""
    return logs.escape_control(str(value))


def _query_table(data: Any) -> list[tuple[str, str]]:
    """The columns of a query's result, as az's table: a dict's (or the first dict's) keys, or one
    column "Result" for scalars."""
    first = data[0] if isinstance(data, list) and data else data
    if isinstance(first, dict):
        return [(k[:1].upper() + k[1:], k) for k in first]
    return [("Result", "")]


def _get(d: Any, path: str) -> Any:
    if not path:  # a scalar row (a query's result)
        return d
    for part in path.split("."):
        d = d.get(part, "") if isinstance(d, dict) else ""
    return d


CAPTURE_TABLE = [
    ("Name", "name"),
    ("Target", "properties.target"),
    ("Type", "properties.targetType"),
    ("Created", "createdTime"),
    ("State", "provisioningState"),
]
STATUS_TABLE = [
    ("Instance", "instanceId"),
    ("Status", "packetCaptureStatus"),
    ("StopReason", "stopReason"),
    ("Packets", "packetsCaptured"),
    ("Bytes", "bytesCaptured"),
    ("Drops", "kernelDrops"),
]


def _status_out(status, args: argparse.Namespace) -> None:
    """The whole status for json, yaml and --query; per instance for table (under a summary
    line) and tsv."""
    d = sdk.to_dict(status)
    if getattr(args, "query", None) or args.output not in ("table", "tsv"):
        _emit(d, args)
        return
    if args.output == "table":
        print(
            _cell(
                f"{d['name']}: {d['packetCaptureStatus']}"
                + (f" ({d['stopReason']})" if d.get("stopReason") else "")
                + (f" errors: {', '.join(d['packetCaptureError'])}" if d.get("packetCaptureError") else "")
            )
        )
    _emit(d.get("instances", []), args, STATUS_TABLE)


# -- capture verbs ----------------------------------------------------------------------------


def _load_filters(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    if text.startswith("@"):
        try:
            with open(text[1:]) as f:
                text = f.read()
        except OSError as e:
            raise UsageError(f"--filters: cannot read {text[1:]}: {e.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--filters: not valid JSON ({e})") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise UsageError("--filters: must be a JSON list of filter objects")
    return value


def _target(args) -> tuple[str, str]:
    if args.target_type == TargetType.VMSS:
        if not args.target:
            raise UsageError("--target is required with --target-type AzureVMSS")
        return args.target, TargetType.VMSS
    target = args.vm or args.target
    if not target:
        raise UsageError("--vm (or --target) is required")
    return target, args.target_type


def _json_object(flag: str, text: str | None, keys: set[str]) -> dict[str, Any]:
    """A JSON object flag of the newer az group; keys may be camelCase or az's hyphenated form."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{flag}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag}: must be a JSON object")
    out = {}
    for k, v in value.items():
        camel = "".join(w if i == 0 else w[:1].upper() + w[1:] for i, w in enumerate(k.split("-")))
        if camel not in keys:
            raise UsageError(f"{flag}: unknown key '{k}' (known: {', '.join(sorted(keys))})")
        out[camel] = v
    return out


def _merge_newer_group_flags(args) -> None:
    """--scope, --storage-location and --capture-settings fill the flags they mirror; giving
    both forms of one setting is an error rather than a silent choice."""
    forms = [
        ("--scope", args.scope, {"include": "include", "exclude": "exclude"}),
        (
            "--storage-location",
            args.storage_location,
            {"storageId": "storage_account", "storagePath": "storage_path", "filePath": "file_path", "localPath": "local_path"},
        ),
        (
            "--capture-settings",
            args.capture_settings,
            {"fileCount": "file_count", "fileSizeInBytes": "file_size", "sessionTimeLimitInSeconds": "session_time_limit"},
        ),
    ]
    for flag, text, mapping in forms:
        for key, value in _json_object(flag, text, set(mapping)).items():
            dest = mapping[key]
            want = list if flag == "--scope" else int if flag == "--capture-settings" else str
            if (
                not isinstance(value, want)
                or isinstance(value, bool)
                or (isinstance(value, list) and not all(isinstance(v, (str, int)) for v in value))
            ):
                raise UsageError(f"{flag}: {key} must be {'a list of instance ids' if want is list else want.__name__}")
            if isinstance(value, list):
                value = [str(v) for v in value]
            if getattr(args, dest) not in (None, []):
                raise UsageError(f"{flag}: {key} is also given as --{dest.replace('_', '-')}")
            setattr(args, dest, value)


def cmd_create(client: sdk.Client, args) -> int:
    _merge_newer_group_flags(args)
    target, target_type = _target(args)
    if args.storage_path and not args.storage_account:
        raise UsageError("--storage-path needs --storage-account")
    create = client.dry_run if args.dry_run else client.create
    result = create(
        name=args.name,
        target=target,
        target_type=target_type,
        resource_group=args.resource_group or "",
        subscription=args.subscription or "",
        include=args.include or [],
        exclude=args.exclude or [],
        bytes_to_capture_per_packet=args.capture_size,
        total_bytes_per_session=args.capture_limit,
        time_limit_in_seconds=args.time_limit,
        storage_account=args.storage_account or "",
        storage_path=args.storage_path or "",
        file_path=args.file_path or "",
        filters=_load_filters(args.filters),
        bpf_filter=args.bpf_filter or "",
        continuous_capture=None if args.continuous_capture is None else args.continuous_capture == "true",
        local_path=args.local_path or "",
        file_count=args.file_count,
        file_size_in_bytes=args.file_size,
        session_time_limit_in_seconds=args.session_time_limit,
        add_new_instances=args.add_new_instances,
        standby_in_seconds=args.standby,
        standby_bytes=args.standby_bytes,
        fleet_bytes_limit=args.fleet_bytes_limit,
    )
    if isinstance(result, tuple):  # a dry run: what it would touch, nothing started
        d = sdk.to_dict(result[1])
        if args.output in ("table", "tsv"):
            _emit(d["instances"], args, DRY_RUN_TABLE)
            print(
                f"fleetcap: dry run: nothing was created; {len(d['instances'])} instance(s), at most "
                f"{d['estimatedBytesPerSecond']} bytes/s from the measured ones",
                file=sys.stderr,
            )
        else:
            _emit(d, args, DRY_RUN_TABLE)
        return EXIT_OK
    _emit(sdk.to_dict(result), args, CAPTURE_TABLE)
    return EXIT_OK


DRY_RUN_TABLE = [
    ("Instance", "instanceId"),
    ("Connected", "connected"),
    ("Measured", "measured"),
    ("InterfaceBytes/s", "interfaceBytesPerSecond"),
    ("InterfacePackets/s", "interfacePacketsPerSecond"),
    ("EstimatedBytes/s", "estimatedBytesPerSecond"),
]


def _write_out(path: str | None, data: bytes) -> None:
    if path:
        with open(path, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def cmd_manifest(client: sdk.Client, args) -> int:
    _write_out(args.out, client.manifest(name=args.name))
    return EXIT_OK


def cmd_manifest_key(client: sdk.Client, args) -> int:
    pem, _ = client.manifest_key()
    _write_out(args.out, pem.encode())
    return EXIT_OK


VERIFY_TABLE = [("Path", "path"), ("Status", "status"), ("Detail", "detail")]


def _verdict_out(verdict, args) -> int:
    d = verdict.as_dict()
    if args.output in ("table", "tsv"):
        print(
            f"signature: {d['signature']}" + (f" ({d['signatureDetail']})" if d["signatureDetail"] else "") + f", key {d['keyId']}",
            file=sys.stderr,
        )
        rows = (
            d["files"]
            + [{"path": p, "status": "unlisted"} for p in d["unlisted"]]
            + [{"path": p, "status": "derived", "detail": "made from the listed files; not signed"} for p in d["derived"]]
        )
        _emit(rows, args, VERIFY_TABLE)
    else:
        _emit(d, args, VERIFY_TABLE)
    return EXIT_OK if verdict.verified else EXIT_ERROR


def _evidence():  # the cli extra's cryptography, named if missing
    optional("cryptography", "verify")
    from fleetcap.clients import evidence

    return evidence


def cmd_capture_verify(client: sdk.Client, args) -> int:
    evidence = _evidence()
    signed = client.manifest(name=args.name)
    pem, _ = client.manifest_key()
    try:
        return _verdict_out(evidence.verify(signed, pem.encode(), args.dir), args)
    except evidence.ManifestError as e:
        raise UsageError(str(e)) from None


def cmd_verify(args) -> int:
    """Offline: a manifest file, a directory and the public key; no coordinator."""
    evidence = _evidence()
    try:
        with open(args.manifest, "rb") as f:
            signed = f.read()
        with open(args.public_key, "rb") as f:
            pem = f.read()
        return _verdict_out(evidence.verify(signed, pem, args.dir, manifest_path=args.manifest), args)
    except OSError as e:
        raise UsageError(f"{e.filename}: {e.strerror}") from None
    except evidence.ManifestError as e:
        raise UsageError(str(e)) from None


def cmd_trigger(client: sdk.Client, args) -> int:
    _status_out(client.trigger(name=args.name, after_in_seconds=args.after, note=args.note or ""), args)
    return EXIT_OK


def cmd_show(client: sdk.Client, args) -> int:
    _emit(sdk.to_dict(client.get(name=args.name)), args, CAPTURE_TABLE)
    return EXIT_OK


def cmd_list(client: sdk.Client, args) -> int:
    """Every capture; with az's paging flags, at most --max-items of them from --next-token on,
    and the token to continue with on stderr (stdout stays the list)."""
    if args.max_items is None and not args.next_token:
        _emit([sdk.to_dict(c) for c in client.list()], args, CAPTURE_TABLE)
        return EXIT_OK
    if args.max_items is not None and args.max_items < 1:
        raise UsageError("--max-items: must be at least 1")
    wanted = args.max_items if args.max_items is not None else float("inf")
    items: list = []
    token = args.next_token or ""
    while len(items) < wanted:
        page, token = client.list_page(page_size=int(min(wanted - len(items), sdk.LIST_PAGE_SIZE)), page_token=token)
        items.extend(page)
        if not token:
            break
    _emit([sdk.to_dict(c) for c in items], args, CAPTURE_TABLE)
    if token:
        print(f"fleetcap: more captures follow; continue with --next-token {token}", file=sys.stderr)
    return EXIT_OK


def cmd_stop(client: sdk.Client, args) -> int:
    client.stop(name=args.name)
    return EXIT_OK


def cmd_delete(client: sdk.Client, args) -> int:
    client.delete(name=args.name)
    return EXIT_OK


def cmd_show_status(client: sdk.Client, args) -> int:
    _status_out(client.get_status(name=args.name), args)
    return EXIT_OK


_WAIT_CONDITIONS = ("created", "updated", "exists", "deleted")
WAIT_INTERVAL_S = 30.0


def _wait_for_condition(client: sdk.Client, args) -> int:
    """az's generic wait: poll every --interval seconds (az's default 30) until the capture is
    created (or updated: provisioningState Succeeded), exists, is deleted, or --custom's JMESPath
    is true of the resource (plus `status`, its queryStatus); --timeout (az's default 3600) ends
    the wait with exit 1. Prints nothing on success, as az does."""
    import time

    condition = next((c for c in _WAIT_CONDITIONS if getattr(args, c)), "custom")
    if args.custom:
        jmespath = optional("jmespath", "--custom")
        optional("jmespath.exceptions", "--custom")
        try:
            query = jmespath.compile(args.custom)
        except jmespath.exceptions.JMESPathError as e:
            raise UsageError(f"--custom: {e}") from None
    timeout = args.timeout if args.timeout is not None else 3600.0
    deadline = time.monotonic() + timeout
    while True:
        try:
            resource = sdk.to_dict(client.get(name=args.name))
        except sdk.CaptureNotFound:
            resource = None
        if condition == "deleted":
            done = resource is None
        elif condition == "exists":
            done = resource is not None
        elif condition in ("created", "updated"):
            done = resource is not None and resource.get("provisioningState") == "Succeeded"
        else:
            done = resource is not None and bool(query.search(dict(resource, status=sdk.to_dict(client.get_status(name=args.name)))))
        if done:
            return EXIT_OK
        if time.monotonic() + args.interval > deadline:
            what = f"--custom {args.custom}" if condition == "custom" else f"--{condition}"
            print(f"fleetcap: capture '{args.name}': {what} not met after {timeout:g}s", file=sys.stderr)
            return EXIT_ERROR
        time.sleep(args.interval)


def cmd_wait(client: sdk.Client, args) -> int:
    conditions = [c for c in _WAIT_CONDITIONS if getattr(args, c)] + (["custom"] if args.custom else [])
    if len(conditions) > 1:
        raise UsageError("give one of --created, --updated, --exists, --deleted or --custom")
    if conditions:
        if args.progress:
            raise UsageError("--progress goes with waiting for the capture to finish, not with a condition")
        return _wait_for_condition(client, args)
    if args.interval != WAIT_INTERVAL_S:
        raise UsageError("--interval goes with --created, --updated, --exists, --deleted or --custom")
    if args.progress and sys.stderr.isatty() and has("rich"):  # the live table, on stderr: stdout is the result
        _watch_live(client.get(name=args.name), _status_feed(client, args.name, args.timeout), stream=sys.stderr)
    elif args.progress:
        for status in client.watch(name=args.name):
            parts = [
                f"{i.instance_id}:{i.packet_capture_status}/{i.packets_captured}p/{i.bytes_captured}B"
                + (f"/up {i.files[0].uploaded_bytes}B" if i.files and i.files[0].storage_path else "")
                for i in status.instances
            ]
            print(f"[{status.packet_capture_status}] " + "  ".join(parts), file=sys.stderr, flush=True)
    final = client.wait(name=args.name, timeout_s=args.timeout)
    _status_out(final, args)
    return EXIT_OK if final.packet_capture_status == Status.STOPPED else EXIT_ERROR


def cmd_watch(client: sdk.Client, args) -> int:
    """Live per-instance progress until the capture has settled. On a terminal the block is
    redrawn in place every second (the time bars move); otherwise a block per change."""

    from fleetcap.clients import progress

    capture = client.get(name=args.name)
    updates = _status_feed(client, args.name, args.timeout)
    if sys.stdout.isatty() and has("rich"):  # without the cli extra, the plain blocks below
        _watch_live(capture, updates)
    else:  # piped: a plain block per change
        shown = None
        while (item := updates.get()) is not None:
            if isinstance(item, Exception):
                raise item
            lines = progress.render(capture, item, datetime.datetime.now(datetime.UTC))
            if lines != shown:  # a change the bars show
                shown = lines
                sys.stdout.write("\n".join(lines) + "\n\n")
                sys.stdout.flush()
    final = client.get_status(name=args.name)
    return EXIT_OK if final.packet_capture_status == Status.STOPPED and not final.packet_capture_error else EXIT_ERROR


def _status_feed(client: sdk.Client, name: str, timeout_s: float | None):
    """A queue that a thread fills with the capture's statuses as they change, then None (or the
    exception that ended the watch)."""
    import queue
    import threading

    updates: queue.Queue = queue.Queue()

    def follow() -> None:
        try:
            for status in client.watch(name=name, timeout_s=timeout_s):
                updates.put(status)
            updates.put(None)
        except (sdk.FleetcapError, TimeoutError) as e:
            updates.put(e)

    threading.Thread(target=follow, daemon=True).start()
    return updates


def _watch_live(capture, updates, stream=None) -> None:
    """The terminal view: rich redraws a table that fits the terminal's width in place, twice a
    second, with each instance's rates and a total row, until the capture has settled."""
    import queue
    import time

    from rich.console import Console
    from rich.live import Live

    from fleetcap.clients import progress

    rates = progress.Rates()
    status = None
    console = Console(file=stream) if stream is not None else Console()
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while True:
            try:
                item = updates.get(timeout=1.0)
            except queue.Empty:
                item = status  # redraw: the clock and the time bars moved
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            status = item
            rates.update(status, time.monotonic())
            live.update(progress.table(capture, status, datetime.datetime.now(datetime.UTC), rates, console.width))


def cmd_download(client: sdk.Client, args) -> int:
    """Every instance's files, from storage or, for a file-only capture, from the instances.
    What could not be had is named per file on stderr (and in `missing`), and the exit code is
    then 1: the other files are written (and merged) all the same."""
    missing: list[tuple[str, str, sdk.FleetcapError]] = []
    try:
        paths = client.download(name=args.name, dest=args.dest, merge=args.merge)
    except sdk.IncompleteDownload as e:
        paths, missing = e.written, e.missing
    if args.output in ("table", "tsv") and not getattr(args, "query", None):
        print("\n".join(paths))
    else:
        _emit(
            {
                "files": paths,
                "missing": [{"instanceId": i, "filePath": p, "code": e.code.name, "message": e.message} for i, p, e in missing],
            },
            args,
        )
    for instance_id, path, error in missing:
        print(f"fleetcap: instance {instance_id}: {path} not downloaded: {error.code.name}: {error.message}", file=sys.stderr)
    if missing:
        return EXIT_ERROR
    if not paths:
        print("fleetcap: the capture has no files yet", file=sys.stderr)
        return EXIT_NOT_FOUND
    return EXIT_OK


def cmd_follow(client: sdk.Client, args) -> int:
    out = sys.stdout.buffer if args.write in (None, "-") else open(args.write, "wb")
    try:
        for data in client.read_file(name=args.name, instance_id=args.instance_id, file_path=args.file_path or "", follow=True):
            out.write(data)
            out.flush()
    except BrokenPipeError:  # the reader (Wireshark) went away
        return EXIT_OK
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return EXIT_OK


AGENT_TABLE = [("Id", "id"), ("Hostname", "hostname"), ("Interface", "interface"), ("Connected", "connectedTime")]


def cmd_agents_list(client: sdk.Client, args) -> int:
    _emit([sdk.to_dict(a) for a in client.list_agents()], args, AGENT_TABLE)
    return EXIT_OK


ACCOUNT_TABLE = [("Name", "name"), ("Kind", "kind"), ("Endpoint", "endpoint")]


def cmd_storage_accounts_list(client: sdk.Client, args) -> int:
    _emit([sdk.to_dict(a) for a in client.list_storage_accounts()], args, ACCOUNT_TABLE)
    return EXIT_OK


# -- credentials --------------------------------------------------------------------------------


def secret(flag: str, source: str) -> str:
    """A secret from `env:VAR` or `file:PATH`. A literal value is refused: a command line is
    visible to every user of the machine (ps, /proc)."""
    kind, _, where = source.partition(":")
    if kind == "env" and where:
        value = os.environ.get(where, "")
        if not value:
            raise UsageError(f"{flag}: environment variable {where} is not set")
        return value
    if kind == "file" and where:
        try:
            with open(where) as f:
                value = f.read().strip()
        except OSError as e:
            raise UsageError(f"{flag}: cannot read {where}: {e.strerror}") from None
        if not value:
            raise UsageError(f"{flag}: {where} is empty")
        return value
    raise UsageError(f"{flag}: give the secret as env:VARIABLE or file:PATH, never on the command line")


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


# -- daemons ----------------------------------------------------------------------------------


def cmd_gateway(args) -> int:
    try:
        from fleetcap.clients.rest import alerts, app, server
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
        settings = app.GatewaySettings(
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


# -- tls: the PKI helper ----------------------------------------------------------------------


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


def _add_tls(sub: argparse._SubParsersAction[_Parser]) -> None:
    tls = sub.add_parser("tls", help="a small PKI and bearer tokens, for deployments without their own")
    kinds = tls.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    ca = kinds.add_parser("ca", help="certificate authority").add_subparsers(dest="verb", required=True, parser_class=_Parser)
    cc = ca.add_parser("create", help="create a CA: OUT/ca.pem and OUT/ca-key.pem (0600)")
    cc.add_argument("--out", required=True, help="directory to write into")
    cc.set_defaults(func=cmd_tls_ca_create, daemon=True)
    cert = kinds.add_parser("cert", help="certificates").add_subparsers(dest="verb", required=True, parser_class=_Parser)
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
    token = kinds.add_parser("token", help="bearer tokens").add_subparsers(dest="verb", required=True, parser_class=_Parser)
    tc = token.add_parser("create", help="create a token: printed once, only its hash is stored")
    tc.add_argument("--name", required=True)
    tc.add_argument("--role", required=True, choices=list(Role))
    tc.add_argument("--auth-file", required=True, help="the coordinator's auth file (TOML), created if absent")
    tc.set_defaults(func=cmd_tls_token_create, daemon=True)
    tr = token.add_parser("revoke", help="remove a token (the coordinator applies it on SIGHUP)")
    tr.add_argument("--name", required=True)
    tr.add_argument("--auth-file", required=True)
    tr.set_defaults(func=cmd_tls_token_revoke, daemon=True)


# -- parser -----------------------------------------------------------------------------------


def _az_ignored(parser: argparse.ArgumentParser) -> None:
    """az's watcher-picking flags, accepted so that az command lines run unchanged: a fleetcap
    deployment is one watcher in one region."""
    parser.add_argument("--location", "-l", help="accepted for az compatibility; ignored")
    parser.add_argument("--network-watcher-name", help="accepted for az compatibility; ignored")
    parser.add_argument("--resource-group", "-g", help="accepted for az compatibility; ignored")


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    """The client verbs (and the gateway, a client too); returns the parser and its
    subcommands, to which the composition root (fleetcap.main) adds the daemons."""
    p = _Parser(prog="fleetcap", description="Packet capture across a fleet (Azure Network Watcher style).")
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
    p.add_argument("--version", action="version", version=f"fleetcap {_version()}")
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
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

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

    _add_tls(sub)

    mk = sub.add_parser("manifest-key", help="the public key that verifies the coordinator's signed manifests")
    mk_show = mk.add_subparsers(dest="verb", required=True).add_parser("show", help="print the public key (PEM)")
    mk_show.add_argument("--out", help="write it to this file; default stdout")
    mk_show.set_defaults(func=cmd_manifest_key)
    ve = sub.add_parser(
        "verify", help="offline: check a directory of capture files against a signed manifest, with only the coordinator's public key"
    )
    ve.add_argument("manifest", help="the signed manifest (from `capture manifest`)")
    ve.add_argument("dir", help="the directory `capture download` wrote")
    ve.add_argument("--public-key", required=True, help="the public key (from `manifest-key show`), PEM")
    ve.set_defaults(func=cmd_verify, daemon=True)
    ag = sub.add_parser("agents", help="list the connected agents (the possible targets)")
    ag_verbs = ag.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    ag_verbs.add_parser("list", help="list connected agents").set_defaults(func=cmd_agents_list)

    sa = sub.add_parser("storage-accounts", help="list the storage accounts captures can name")
    sa_verbs = sa.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    sa_verbs.add_parser("list", help="list storage accounts (no credentials)").set_defaults(func=cmd_storage_accounts_list)

    cap = sub.add_parser("capture", help="manage packet captures (az network watcher packet-capture)")
    verbs = cap.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    cr = verbs.add_parser("create", help="create and start a packet capture")
    cr.add_argument("--name", "-n", "--packet-capture-name", required=True)
    cr.add_argument("--resource-group", "-g", help="resource group of the target")
    cr.add_argument("--network-watcher-name", help="accepted for az compatibility; one watcher per deployment")
    cr.add_argument("--no-wait", action="store_true", help="accepted for az compatibility: create returns once the capture is started")
    cr.add_argument("--subscription")
    cr.add_argument("--vm", help="target VM name or id (target type AzureVM)")
    cr.add_argument("--target", help="target VM or scale set, name or id")
    cr.add_argument("--target-type", choices=list(TargetType), default=TargetType.VM)
    cr.add_argument("--include", nargs="+", help="scale-set instance ids or names to capture")
    cr.add_argument("--exclude", nargs="+", help="scale-set instance ids or names to leave out")
    cr.add_argument("--scope", help='JSON {"include": [...], "exclude": [...]} (newer az group)')
    cr.add_argument("--storage-location", help='JSON {"storageId", "storagePath", "filePath", "localPath"} (newer az group)')
    cr.add_argument(
        "--capture-settings",
        help='JSON {"fileCount", "fileSizeInBytes", "sessionTimeLimitInSeconds"}; az\'s hyphenated keys work too (newer az group)',
    )
    cr.add_argument("--storage-account", help="storage account name ('local' = the coordinator's storage dir)")
    cr.add_argument("--storage-path", help="container URI in the storage account")
    cr.add_argument("--file-path", help="file on each instance, /var/captures/....cap")
    cr.add_argument(
        "--capture-size",
        "--bytes-to-capture-per-packet",
        "--bytes-to-capture",
        dest="capture_size",
        type=int,
        help="bytes per packet; 0 = whole packet (default)",
    )
    cr.add_argument(
        "--capture-limit",
        "--total-bytes-per-session",
        "--total-bytes",
        dest="capture_limit",
        type=int,
        help="max file bytes per instance; default 1073741824; 0 = none",
    )
    cr.add_argument("--time-limit", "--time-limit-in-seconds", dest="time_limit", type=int, help="seconds; default 18000; 0 = none")
    cr.add_argument("--filters", help="JSON list of filters, or @file")
    cr.add_argument("--bpf-filter", help="libpcap expression AND-ed with --filters (fleetcap extension)")
    cr.add_argument(
        "--add-new-instances",
        action="store_true",
        help="scale sets: instances that join while the capture runs are captured too (fleetcap extension; Azure does not add them)",
    )
    cr.add_argument("--continuous-capture", choices=["true", "false"], help="ring-buffer capture (either value selects it, as in Azure)")
    cr.add_argument("--local-path", help="continuous capture: ring base name on each instance, /var/captures/....cap")
    cr.add_argument("--file-count", type=int, help="continuous capture: files kept; default 10")
    cr.add_argument("--file-size", type=int, help="continuous capture: bytes per file; default 104857600")
    cr.add_argument("--session-time-limit", type=int, help="continuous capture: seconds; default 86400")
    cr.add_argument(
        "--fleet-bytes-limit",
        type=int,
        metavar="BYTES",
        help="stop every instance once all their files together hold BYTES (FleetBytesExceeded), short of "
        "it by less than one record per instance; standard captures (fleetcap extension)",
    )
    cr.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything and print the instances it would touch, whether each is connected, and "
        "an estimate of the bytes per second each would write; create nothing (fleetcap extension)",
    )
    cr.add_argument(
        "--standby",
        type=int,
        metavar="SECONDS",
        help="flight recorder (fleetcap extension): arm every instance to keep the last SECONDS of "
        "matching packets (1..3600), storing nothing until `capture trigger`; the time limit then "
        "bounds the armed period",
    )
    cr.add_argument(
        "--standby-bytes",
        type=int,
        metavar="BYTES",
        help="flight recorder: the ring's size on each instance; default 104857600, at least 8388608",
    )
    cr.set_defaults(func=cmd_create)
    tr = verbs.add_parser(
        "trigger", help="flight recorder: keep the armed window on every instance, record --after seconds more, then store the files"
    )
    tr.add_argument("--name", "-n", "--packet-capture-name", required=True)
    tr.add_argument("--after", type=int, default=0, metavar="SECONDS", help="seconds to record after the trigger; default 0")
    tr.add_argument("--note", help="free text kept with the trigger's source, e.g. an incident id")
    _az_ignored(tr)
    tr.set_defaults(func=cmd_trigger)
    mf = verbs.add_parser(
        "manifest",
        help="the capture's signed manifest (JSON): every file with its size, SHA-256 and packet times, signed by the coordinator",
    )
    mf.add_argument("--name", "-n", required=True)
    mf.add_argument("--out", help="write it to this file; default stdout")
    mf.set_defaults(func=cmd_manifest)
    vf = verbs.add_parser("verify", help="check a directory of downloaded files against the capture's signed manifest")
    vf.add_argument("--name", "-n", required=True)
    vf.add_argument("--dir", required=True, help="the directory `capture download` wrote")
    vf.set_defaults(func=cmd_capture_verify)
    for verb, func, helptext in [
        ("show", cmd_show, "show a capture"),
        ("stop", cmd_stop, "stop a capture"),
        ("delete", cmd_delete, "delete a capture (files are kept)"),
        ("show-status", cmd_show_status, "status, with a per-instance breakdown"),
        ("query-status", cmd_show_status, "show-status under the newer az group's name"),
    ]:
        v = verbs.add_parser(verb, help=helptext)
        v.add_argument("--name", "-n", "--packet-capture-name", required=True)
        _az_ignored(v)
        v.set_defaults(func=func)
    ls = verbs.add_parser("list", help="list captures")
    ls.add_argument(
        "--max-items", type=int, metavar="N", help="at most N captures; the token to continue with goes to stderr (az's paging)"
    )
    ls.add_argument("--next-token", metavar="TOKEN", help="continue a listing where --max-items stopped")
    _az_ignored(ls)
    ls.set_defaults(func=cmd_list)
    d = verbs.add_parser("download", help="fetch every instance's stored files")
    d.add_argument("--name", "-n", required=True)
    d.add_argument("--dest", required=True, help="directory; files go to DEST/<instance id>/")
    d.add_argument("--merge", action="store_true", help="also write DEST/<name>.pcapng, one interface per instance")
    d.set_defaults(func=cmd_download)
    fo = verbs.add_parser("follow", help="stream one instance's pcap as it is stored (e.g. | wireshark -k -i -)")
    fo.add_argument("--name", "-n", required=True)
    fo.add_argument("--instance-id", required=True, help="instance id ('3') or VM name")
    fo.add_argument("--file-path", help="which file; default the instance's newest")
    fo.add_argument("-w", "--write", help="output file; default stdout")
    fo.set_defaults(func=cmd_follow)
    wa = verbs.add_parser("watch", help="live per-instance progress bars until the capture has settled")
    wa.add_argument("--name", "-n", required=True)
    wa.add_argument("--timeout", type=float, help="seconds")
    wa.set_defaults(func=cmd_watch)
    w = verbs.add_parser(
        "wait",
        help="wait until a capture has stopped and its files are stored, or, with az's "
        "condition flags, until it is created, exists, is deleted or a query holds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  fleetcap capture wait -n pc1 --progress\n"
        "  fleetcap capture wait -n pc1 --created --interval 2\n"
        "  fleetcap capture wait -n pc1 --custom \"status.packetCaptureStatus=='Running'\" "
        "--interval 1 --timeout 60",
    )
    w.add_argument("--name", "-n", "--packet-capture-name", required=True)
    _az_ignored(w)
    w.add_argument("--timeout", type=float, help="seconds (with a condition flag, az's default: 3600)")
    for condition in ("created", "updated", "exists", "deleted"):
        w.add_argument(
            f"--{condition}",
            action="store_true",
            help=f"wait until the capture is {condition}"
            + (" (provisioningState Succeeded)" if condition in ("created", "updated") else ""),
        )
    w.add_argument("--custom", metavar="JMESPATH", help="wait until this query on the capture (with its queryStatus as `status`) is true")
    w.add_argument(
        "--interval",
        type=float,
        default=WAIT_INTERVAL_S,
        help=f"seconds between checks with a condition flag (az's default: {WAIT_INTERVAL_S:g})",
    )
    w.add_argument("--progress", action="store_true", help="print live progress to stderr")
    w.set_defaults(func=cmd_wait)
    return p, sub  # type: ignore[return-value]  # _Parser is an ArgumentParser


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


def _unreachable(e: sdk.FleetcapError) -> bool:
    """The call never reached a coordinator (refused, no route, no name, a failed handshake), as
    opposed to a coordinator that answered UNAVAILABLE itself."""
    return e.code == grpc.StatusCode.UNAVAILABLE and any(
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
            return args.func(args)
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
            return args.func(client, args)
    except UsageError as e:
        print(f"fleetcap: error: {e}", file=sys.stderr)
        return EXIT_INVALID
    except sdk.FleetcapError as e:
        if _unreachable(e):
            address = args.coordinator or transport.DEFAULT_ADDRESS
            print(
                f"fleetcap: cannot reach the coordinator at {_cell(address)} ({_coordinator_source(argv, args)}; "
                "set --coordinator or FLEETCAP_COORDINATOR)",
                file=sys.stderr,
            )
            print(f"fleetcap: the connection failed with: {_cell(e.message)}", file=sys.stderr)
            return EXIT_ERROR
        print(f"fleetcap: {e.code.name}: {_cell(e.message)}", file=sys.stderr)
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
