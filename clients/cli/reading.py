"""Reading a capture: `capture download`, `follow`, `watch` and `wait` (az's condition flags too)."""

from __future__ import annotations

import argparse
import datetime
import queue
import sys
import threading
from typing import TextIO

from fleetcap.clients import sdk
from fleetcap.clients.cli.capture import status_out
from fleetcap.clients.cli.common import EXIT_ERROR, EXIT_NOT_FOUND, EXIT_OK, Commands, UsageError, az_ignored, has, optional
from fleetcap.clients.cli.output import emit
from fleetcap.core.vocabulary import Status
from fleetcap.v1 import captures_pb2 as pb

# What the watch thread hands over: a status, the error that ended the watch, or None at the end.
StatusUpdate = pb.PacketCaptureQueryStatusResult | sdk.FleetcapError | TimeoutError | None

_WAIT_CONDITIONS = ("created", "updated", "exists", "deleted")


WAIT_INTERVAL_S = 30.0


def _wait_for_condition(client: sdk.Client, args: argparse.Namespace) -> int:
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


def cmd_wait(client: sdk.Client, args: argparse.Namespace) -> int:
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
    status_out(final, args)
    return EXIT_OK if final.packet_capture_status == Status.STOPPED else EXIT_ERROR


def cmd_watch(client: sdk.Client, args: argparse.Namespace) -> int:
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


def _status_feed(client: sdk.Client, name: str, timeout_s: float | None) -> queue.Queue[StatusUpdate]:
    """A queue that a thread fills with the capture's statuses as they change, then None (or the
    exception that ended the watch)."""
    updates: queue.Queue[StatusUpdate] = queue.Queue()

    def follow() -> None:
        try:
            for status in client.watch(name=name, timeout_s=timeout_s):
                updates.put(status)
            updates.put(None)
        except (sdk.FleetcapError, TimeoutError) as e:
            updates.put(e)

    threading.Thread(target=follow, daemon=True).start()
    return updates


def _watch_live(capture: pb.PacketCaptureResult, updates: queue.Queue[StatusUpdate], stream: TextIO | None = None) -> None:
    """The terminal view: rich redraws a table that fits the terminal's width in place, twice a
    second, with each instance's rates and a total row, until the capture has settled."""
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


def cmd_download(client: sdk.Client, args: argparse.Namespace) -> int:
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
        emit(
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


def cmd_follow(client: sdk.Client, args: argparse.Namespace) -> int:
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


def add_parsers(verbs: Commands) -> None:
    """Adds `capture download`, `follow`, `watch` and `wait`."""
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
    az_ignored(w)
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
