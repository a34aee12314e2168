"""Per-instance progress bars for `fleetcap capture watch`.

One line per instance: status, packets, file bytes against the byte limit, elapsed time against
the time limit, and drops. A limit of 0 (none) shows the figure without a bar. For continuous
captures the time bar is the session time limit and the byte figure is the file ring's size.
"""
from __future__ import annotations

import datetime

from fleetcap.core.naming import instance_name, parse_rfc3339
from fleetcap.v1 import captures_pb2 as pb

BAR_WIDTH = 20


def bar(done: float, limit: float) -> str:
    """'[#####---------------]  25%'; the fill is clamped to the limit."""
    frac = min(max(done / limit, 0.0), 1.0)
    filled = int(frac * BAR_WIDTH)
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {int(frac * 100):3d}%"


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


def render(capture: pb.PacketCaptureResult, status: pb.PacketCaptureQueryStatusResult,
           now: datetime.datetime) -> list[str]:
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
        bytes_part = f"bytes {bar(inst.bytes_captured, byte_limit)} {got}/{human_bytes(byte_limit)}" if byte_limit \
            else f"bytes {got}"
        secs = elapsed_s(inst, now)
        time_part = f"time {bar(secs, time_limit)} {secs:.0f}s/{time_limit}s" if time_limit else f"time {secs:.0f}s"
        line = (f"{instance_name(inst.id):<{width}}  {inst.packet_capture_status:<10} "
                f"packets {inst.packets_captured:>9,}  {bytes_part}  {time_part}  "
                f"drops {inst.kernel_drops + inst.interface_drops:,}")
        if any(f.storage_path for f in inst.files):
            line += f"  stored {human_bytes(stored)}/{human_bytes(size)}"
        if inst.stop_reason:
            line += f"  {inst.stop_reason}"
        lines.append(line)
    return lines
