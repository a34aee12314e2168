"""Writing a capture's files to a directory: the plan of what to fetch, names from the server
checked before any is used, and the merge into one pcapng."""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import datetime as dt
import os
from typing import BinaryIO

from fleetcap.clients import pcapng
from fleetcap.core.naming import instance_name, parse_rfc3339
from fleetcap.core.vocabulary import CaptureError
from fleetcap.v1 import captures_pb2 as pb


class UnsafeName(ValueError):
    """A name from the server would leave the download directory; nothing was written for it."""


def safe_name(value: str, what: str) -> str:
    """One path component the server sent: no separator, no '..', not absolute, not empty."""
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\x00" in value:
        raise UnsafeName(f"{what} '{value}' from the coordinator is not a plain file name; refusing to write it")
    return value


@dataclasses.dataclass(frozen=True)
class Download:
    instance_id: str  # a directory under dest (checked)
    instance_arm_id: str
    file_path: str  # on the instance
    file_name: str  # its name under dest/<instance id>/ (checked)

    def path(self, dest: str) -> str:
        return os.path.join(dest, self.instance_id, self.file_name)


def downloadable(inst: pb.InstanceStatus, f: pb.CaptureFile) -> bool:
    """Whether a download takes this file: every stored file, and every file that only its
    instance holds (a capture without a storage account, or an upload that failed), which the
    coordinator fetches from the instance's agent. A stored capture's file still uploading is
    left for later."""
    return f.upload_complete or not f.storage_path or CaptureError.STORAGE_FAILED in inst.packet_capture_error


def download_plan(status: pb.PacketCaptureQueryStatusResult) -> builtins.list[Download]:
    """The files of a capture and where each goes: dest/<instance id>/<file name>. Raises
    UnsafeName before anything is written if the server sent a name that is not plain."""
    return [
        Download(safe_name(inst.instance_id, "instance id"), inst.id, f.file_path, safe_name(os.path.basename(f.file_path), "file name"))
        for inst in status.instances
        for f in inst.files
        if downloadable(inst, f)
    ]


class DestDir:
    """Files written only inside one directory: each created with O_EXCL and O_NOFOLLOW under a
    directory descriptor, as NAME.part, then renamed into place, so neither a planted symlink nor
    a name from the server moves a write elsewhere."""

    def __init__(self, dest: str):
        os.makedirs(dest, exist_ok=True)
        self.dest = dest
        self._fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)

    def subdir(self, name: str) -> int:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=self._fd)
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=self._fd)

    @staticmethod
    def create(dir_fd: int, name: str) -> BinaryIO:
        part = name + ".part"
        try:
            os.unlink(part, dir_fd=dir_fd)  # a part left by an interrupted download (a link is removed, not followed)
        except FileNotFoundError:
            pass
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        return os.fdopen(fd, "wb")

    @staticmethod
    def commit(dir_fd: int, name: str) -> None:
        os.replace(name + ".part", name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def close(self) -> None:
        os.close(self._fd)


def interface_stats(inst: pb.InstanceStatus) -> pcapng.InterfaceStats:
    """An instance's counters and times as its pcapng Interface Statistics Block carries them."""

    def us(text: str) -> int:
        when = parse_rfc3339(text) if text else dt.datetime.now(dt.UTC)
        return round(when.timestamp() * 1_000_000)

    return pcapng.InterfaceStats(
        received=inst.packets_received,
        delivered=inst.packets_captured,
        os_drops=inst.kernel_drops,
        if_drops=inst.interface_drops,
        start_us=us(inst.capture_start_time),
        end_us=us(inst.capture_stop_time),
    )


def clock_correction(inst: pb.InstanceStatus) -> pcapng.ClockCorrection | None:
    """The instance's measured clock offset, for the merge; None if it was never measured."""
    if not inst.clock_uncertainty_us:
        return None
    return pcapng.ClockCorrection(inst.clock_offset_us, inst.clock_uncertainty_us)


def merge_files(plan: builtins.list[Download], dest: DestDir, name: str, status: pb.PacketCaptureQueryStatusResult) -> str:
    """Writes dest/<name>.pcapng from the downloaded files: one interface per instance, each with
    its Interface Statistics Block (what it received and dropped)."""
    paths: dict[str, builtins.list[str]] = {}
    for item in plan:
        paths.setdefault(item.instance_arm_id, []).append(item.path(dest.dest))
    by_id = {inst.id: inst for inst in status.instances}
    sources = [
        pcapng.Source(
            name=instance_name(arm_id),
            description=arm_id,
            paths=files,
            stats=interface_stats(by_id[arm_id]) if arm_id in by_id else None,
            clock=clock_correction(by_id[arm_id]) if arm_id in by_id else None,
        )
        for arm_id, files in paths.items()
    ]
    merged = safe_name(f"{name}.pcapng", "capture name")
    dest_fd = os.open(dest.dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with DestDir.create(dest_fd, merged) as out:
            pcapng.merge(sources, out)
        DestDir.commit(dest_fd, merged)
    finally:
        os.close(dest_fd)
    return os.path.join(dest.dest, merged)
