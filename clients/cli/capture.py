"""`capture create`, `trigger`, `show`, `list`, `stop`, `delete` and `show-status`: their flags and what they do."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fleetcap.clients import sdk
from fleetcap.clients.cli.common import EXIT_OK, Commands, UsageError, az_ignored
from fleetcap.clients.cli.output import cell, emit
from fleetcap.core.vocabulary import TargetType
from fleetcap.v1 import captures_pb2 as pb

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


def status_out(status: pb.PacketCaptureQueryStatusResult, args: argparse.Namespace) -> None:
    """The whole status for json, yaml and --query; per instance for table (under a summary
    line) and tsv."""
    d = sdk.to_dict(status)
    if getattr(args, "query", None) or args.output not in ("table", "tsv"):
        emit(d, args)
        return
    if args.output == "table":
        print(
            cell(
                f"{d['name']}: {d['packetCaptureStatus']}"
                + (f" ({d['stopReason']})" if d.get("stopReason") else "")
                + (f" errors: {', '.join(d['packetCaptureError'])}" if d.get("packetCaptureError") else "")
            )
        )
    emit(d.get("instances", []), args, STATUS_TABLE)


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


def _target(args: argparse.Namespace) -> tuple[str, str]:
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


def merge_newer_group_flags(args: argparse.Namespace) -> None:
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


def cmd_create(client: sdk.Client, args: argparse.Namespace) -> int:
    merge_newer_group_flags(args)
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
            emit(d["instances"], args, DRY_RUN_TABLE)
            print(
                f"fleetcap: dry run: nothing was created; {len(d['instances'])} instance(s), at most "
                f"{d['estimatedBytesPerSecond']} bytes/s from the measured ones",
                file=sys.stderr,
            )
        else:
            emit(d, args, DRY_RUN_TABLE)
        return EXIT_OK
    emit(sdk.to_dict(result), args, CAPTURE_TABLE)
    return EXIT_OK


DRY_RUN_TABLE = [
    ("Instance", "instanceId"),
    ("Connected", "connected"),
    ("Measured", "measured"),
    ("InterfaceBytes/s", "interfaceBytesPerSecond"),
    ("InterfacePackets/s", "interfacePacketsPerSecond"),
    ("EstimatedBytes/s", "estimatedBytesPerSecond"),
]


def write_out(path: str | None, data: bytes) -> None:
    if path:
        with open(path, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def cmd_trigger(client: sdk.Client, args: argparse.Namespace) -> int:
    status_out(client.trigger(name=args.name, after_in_seconds=args.after, note=args.note or ""), args)
    return EXIT_OK


def cmd_show(client: sdk.Client, args: argparse.Namespace) -> int:
    emit(sdk.to_dict(client.get(name=args.name)), args, CAPTURE_TABLE)
    return EXIT_OK


def cmd_list(client: sdk.Client, args: argparse.Namespace) -> int:
    """Every capture; with az's paging flags, at most --max-items of them from --next-token on,
    and the token to continue with on stderr (stdout stays the list)."""
    if args.max_items is None and not args.next_token:
        emit([sdk.to_dict(c) for c in client.list()], args, CAPTURE_TABLE)
        return EXIT_OK
    if args.max_items is not None and args.max_items < 1:
        raise UsageError("--max-items: must be at least 1")
    wanted = args.max_items if args.max_items is not None else float("inf")
    items: list[pb.PacketCaptureResult] = []
    token = args.next_token or ""
    while len(items) < wanted:
        page, token = client.list_page(page_size=int(min(wanted - len(items), sdk.LIST_PAGE_SIZE)), page_token=token)
        items.extend(page)
        if not token:
            break
    emit([sdk.to_dict(c) for c in items], args, CAPTURE_TABLE)
    if token:
        print(f"fleetcap: more captures follow; continue with --next-token {token}", file=sys.stderr)
    return EXIT_OK


def cmd_stop(client: sdk.Client, args: argparse.Namespace) -> int:
    client.stop(name=args.name)
    return EXIT_OK


def cmd_delete(client: sdk.Client, args: argparse.Namespace) -> int:
    client.delete(name=args.name)
    return EXIT_OK


def cmd_show_status(client: sdk.Client, args: argparse.Namespace) -> int:
    status_out(client.get_status(name=args.name), args)
    return EXIT_OK


def add_create_parser(verbs: Commands) -> None:
    """Adds `capture create`."""
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


def add_trigger_parser(verbs: Commands) -> None:
    """Adds `capture trigger`."""
    tr = verbs.add_parser(
        "trigger", help="flight recorder: keep the armed window on every instance, record --after seconds more, then store the files"
    )
    tr.add_argument("--name", "-n", "--packet-capture-name", required=True)
    tr.add_argument("--after", type=int, default=0, metavar="SECONDS", help="seconds to record after the trigger; default 0")
    tr.add_argument("--note", help="free text kept with the trigger's source, e.g. an incident id")
    az_ignored(tr)
    tr.set_defaults(func=cmd_trigger)


def add_simple_parsers(verbs: Commands) -> None:
    """Adds `capture show`, `stop`, `delete`, `show-status`, `query-status` and `list`."""
    for verb, func, helptext in [
        ("show", cmd_show, "show a capture"),
        ("stop", cmd_stop, "stop a capture"),
        ("delete", cmd_delete, "delete a capture (files are kept)"),
        ("show-status", cmd_show_status, "status, with a per-instance breakdown"),
        ("query-status", cmd_show_status, "show-status under the newer az group's name"),
    ]:
        v = verbs.add_parser(verb, help=helptext)
        v.add_argument("--name", "-n", "--packet-capture-name", required=True)
        az_ignored(v)
        v.set_defaults(func=func)
    ls = verbs.add_parser("list", help="list captures")
    ls.add_argument(
        "--max-items", type=int, metavar="N", help="at most N captures; the token to continue with goes to stderr (az's paging)"
    )
    ls.add_argument("--next-token", metavar="TOKEN", help="continue a listing where --max-items stopped")
    az_ignored(ls)
    ls.set_defaults(func=cmd_list)
