"""Per-instance progress bars for `fleetcap capture watch`.

One line per instance: status, packets, file bytes against the byte limit, elapsed time against
the time limit, and drops. A limit of 0 (none) shows the figure without a bar. For continuous
captures the time bar is the session time limit and the byte figure is the file ring's size.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from fleetcap.core.naming import instance_name, parse_rfc3339
from fleetcap.v1 import captures_pb2 as pb

if TYPE_CHECKING:
    from rich.table import Table

BAR_WIDTH = 20


def bar(done: float, limit: float, width: int = BAR_WIDTH) -> str:
    """'[#####---------------]  25%'; the fill is clamped to the limit."""
    frac = min(max(done / limit, 0.0), 1.0)
    filled = int(frac * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {int(frac * 100):3d}%"


def human_bytes(count: int) -> str:
    n = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _parse_time(text: str) -> datetime.datetime | None:
    return parse_rfc3339(text) if text else None


def elapsed_s(inst: pb.InstanceStatus, now: datetime.datetime) -> float:
    start = _parse_time(inst.capture_start_time)
    if start is None:
        return 0.0
    end = _parse_time(inst.capture_stop_time) or now
    return max(0.0, (end - start).total_seconds())


def render(capture: pb.PacketCaptureResult, status: pb.PacketCaptureQueryStatusResult, now: datetime.datetime) -> list[str]:
    """The lines to show for one status: a header, then one line per instance."""
    p = capture.properties
    continuous = p.HasField("continuous_capture")
    byte_limit = 0 if continuous else p.total_bytes_per_session
    time_limit = p.capture_settings.session_time_limit_in_seconds if continuous else p.time_limit_in_seconds
    head = f"{status.name}: {status.packet_capture_status}"
    if status.stop_reason:
        head += f" ({status.stop_reason})"
    if status.packet_capture_error:
        head += f" errors: {', '.join(status.packet_capture_error)}"
    lines = [head]
    width = max([len(instance_name(i.id)) for i in status.instances] + [8])
    for inst in status.instances:
        stored = sum(f.uploaded_bytes for f in inst.files)
        size = sum(f.size_bytes for f in inst.files)
        got = human_bytes(inst.bytes_captured)
        bytes_part = f"bytes {bar(inst.bytes_captured, byte_limit)} {got}/{human_bytes(byte_limit)}" if byte_limit else f"bytes {got}"
        secs = elapsed_s(inst, now)
        time_part = f"time {bar(secs, time_limit)} {secs:.0f}s/{time_limit}s" if time_limit else f"time {secs:.0f}s"
        line = (
            f"{instance_name(inst.id):<{width}}  {inst.packet_capture_status:<10} "
            f"packets {inst.packets_captured:>9,}  {bytes_part}  {time_part}  "
            f"drops {inst.kernel_drops + inst.interface_drops:,}"
        )
        if any(f.storage_path for f in inst.files):
            line += f"  stored {human_bytes(stored)}/{human_bytes(size)}"
        if inst.stop_reason:
            line += f"  {inst.stop_reason}"
        lines.append(line)
    return lines


class Rates:
    """Packets and bytes per second per instance, from successive statuses, over at least
    WINDOW_S seconds (agents report about once a second)."""

    WINDOW_S = 2.0
    # A report newer than the last one is expected about every second; none for this long and
    # the instance is taken as quiet (its agent sends no report while nothing changes).
    QUIET_S = 5.0

    def __init__(self) -> None:
        self._seen: dict[str, list[tuple[float, int, int]]] = {}
        self._heard: dict[str, float] = {}  # instance -> when its newest report arrived

    def update(self, status: pb.PacketCaptureQueryStatusResult, at: float) -> None:
        """Takes one status, received at `at`. Each sample is timed by the instance's own
        counters_time when it reports one, so that a status that arrived late or in a burst
        does not bend the rate; else (an older agent) by its arrival."""
        for inst in status.instances:
            points = self._seen.setdefault(inst.id, [])
            if inst.counters_time:
                t = parse_rfc3339(inst.counters_time).timestamp()
                if not points or t > points[-1][0]:
                    points.append((t, inst.packets_captured, inst.bytes_captured))
                    self._heard[inst.id] = at
            elif not points or (points[-1][1], points[-1][2]) != (inst.packets_captured, inst.bytes_captured) or at - points[-1][0] >= 1:
                points.append((at, inst.packets_captured, inst.bytes_captured))
                self._heard[inst.id] = at
            del points[:-16]
        self._now = at

    _now = 0.0

    def of(self, instance_id: str) -> tuple[float, float]:
        points = self._seen.get(instance_id, [])
        if len(points) < 2 or self._now - self._heard.get(instance_id, 0.0) > self.QUIET_S:
            return 0.0, 0.0
        t1, p1, b1 = points[-1]
        t0, p0, b0 = next(((t, p, b) for t, p, b in reversed(points[:-1]) if t1 - t >= self.WINDOW_S), points[0])
        dt = t1 - t0
        return (max(0.0, (p1 - p0) / dt), max(0.0, (b1 - b0) / dt)) if dt > 0 else (0.0, 0.0)


WIDE = 130  # from this terminal width on, the table also shows bytes per second, stored bytes and the reason


def table(
    capture: pb.PacketCaptureResult, status: pb.PacketCaptureQueryStatusResult, now: datetime.datetime, rates: Rates, width: int = 80
) -> Table:
    """The terminal view (rich): a title with the capture's status, a row per instance with its
    packet rate and its bars against the limits, and a total row. Below WIDE columns the less
    needed columns go; rows never wrap (a cell too long ends in an ellipsis)."""
    p = capture.properties
    continuous = p.HasField("continuous_capture")
    byte_limit = 0 if continuous else p.total_bytes_per_session
    time_limit = p.capture_settings.session_time_limit_in_seconds if continuous else p.time_limit_in_seconds
    wide = width >= WIDE

    def bar_of(done: float, limit: float) -> str:
        return bar(done, limit, 20 if wide else 10)

    title = f"{status.name}: {status.packet_capture_status}" + (f" ({status.stop_reason})" if status.stop_reason else "")
    if status.packet_capture_error:
        title += f" errors: {', '.join(status.packet_capture_error)}"
    from rich.table import Table  # the `cli` extra; render() works without it

    t = Table(title=title, title_justify="left", show_footer=True, box=None, padding=(0, 2, 0, 0), pad_edge=False)
    columns = [("Instance", "left"), ("Status", "left"), ("Packets", "right"), ("Pkt/s", "right"), ("Bytes", "left")]
    columns += [("B/s", "right")] if wide else []
    columns += [("Time", "left"), ("Drops", "right")] + ([("Stored", "right"), ("Reason", "left")] if wide else [])
    for name, justify in columns:
        t.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=True,
            overflow="ellipsis",
            min_width=len(name),
        )
    packets = pps_total = nbytes = bps_total = drops_total = 0.0
    for inst in status.instances:
        pps, bps = rates.of(inst.id)
        secs = elapsed_s(inst, now)
        stored = sum(f.uploaded_bytes for f in inst.files)
        size = sum(f.size_bytes for f in inst.files)
        got = human_bytes(inst.bytes_captured)
        drops = inst.kernel_drops + inst.interface_drops
        row = [
            instance_name(inst.id),
            inst.packet_capture_status,
            f"{inst.packets_captured:,}",
            f"{pps:,.0f}",
            f"{bar_of(inst.bytes_captured, byte_limit)} {got}" if byte_limit else got,
        ]
        row += [human_bytes(int(bps)) + "/s"] if wide else []
        row += [f"{bar_of(secs, time_limit)} {secs:.0f}s" if time_limit else f"{secs:.0f}s", f"{drops:,}"]
        if wide:
            row += [f"{human_bytes(stored)}/{human_bytes(size)}" if any(f.storage_path for f in inst.files) else "", inst.stop_reason]
        t.add_row(*row)
        packets += inst.packets_captured
        pps_total += pps
        nbytes += inst.bytes_captured
        bps_total += bps
        drops_total += drops
    n = len(status.instances)
    footer = ["Total", f"{n} instance{'' if n == 1 else 's'}", f"{int(packets):,}", f"{pps_total:,.0f}", human_bytes(int(nbytes))]
    footer += [human_bytes(int(bps_total)) + "/s"] if wide else []
    footer += ["", f"{int(drops_total):,}"] + (["", ""] if wide else [])
    for column, text in zip(t.columns, footer):
        column.footer = text
    return t
