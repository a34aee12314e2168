"""The files one capture writes: the last one is being written, the ones before it are closed,
and a ring deletes its oldest as it turns. Every file is created below the capture root
(capture_root.py), never over an existing one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fleetcap.node_agent.capture.capture_root import CaptureRoot
from fleetcap.node_agent.capture.source import CaptureSource


@dataclasses.dataclass
class CaptureFile:
    index: int
    path: str
    size: int = 0
    sha256: str = ""  # set by the agent once the file is closed (hashing is off the capture thread)
    closed: bool = False
    deleted: bool = False  # removed by the ring
    packets: int = 0
    tail_from: int = 24  # a record boundary near the end: where the last batch of records began
    first_us: int = 0  # first and last packet times, µs since the epoch (0 = none), set with sha256
    last_us: int = 0
    ended: float = 0.0  # flight recorder: wall time of its newest packet (the ring drops it by its age)


class CaptureFiles:
    def __init__(self, root: CaptureRoot, file_path: Callable[[int], str]):
        self.root = root
        self.file_path = file_path  # the path of file N (the spec's naming)
        self.writing: list[CaptureFile] = []
        self.closed_bytes = 0  # bytes of the closed files still counted

    @property
    def current(self) -> CaptureFile:
        return self.writing[-1]

    @property
    def total_bytes(self) -> int:
        return self.closed_bytes + self.writing[-1].size

    def create(self, path: str) -> int:
        """A new file's descriptor; FileExistsError (naming the path) if anything is there."""
        try:
            return self.root.create(path)
        except FileExistsError:
            raise FileExistsError(f"{path} already exists; fleetcap never overwrites a capture file") from None

    def room(self, limit: int) -> int:
        """Bytes left in the current file under `limit`; -1 = unlimited (limit 0)."""
        return limit - self.writing[-1].size if limit else -1

    def rotate(self, handle: CaptureSource) -> CaptureFile:
        """Closes the current file (its size exact once flushed; the path itself is never
        trusted) and opens the next one; returns the one closed."""
        old = self.writing[-1]
        handle.flush()
        old.size = handle.file_position()
        handle.close_dump()
        old.closed = True
        self.closed_bytes += old.size
        index = old.index + 1
        path = self.file_path(index)
        handle.open_dump(self.create(path))
        self.writing.append(CaptureFile(index, path, size=handle.file_position()))
        return old

    def delete(self, f: CaptureFile, *, uncount: bool) -> bool:
        """Removes a file (absent when already uploaded and removed); with `uncount`, its bytes
        leave `total_bytes` (a flight recorder's counters are what its ring holds). Returns
        whether it was there to delete."""
        if f.deleted:
            return False
        self.root.remove(f.path)
        f.deleted = True
        if uncount:
            self.closed_bytes -= f.size
        return True

    def forget_deleted(self) -> None:
        self.writing[:] = [f for f in self.writing if not f.deleted]

    def remove_all(self) -> None:
        """A flight recorder's ring, once its window is written (or it failed)."""
        for f in self.writing:
            if not f.deleted:
                self.root.remove(f.path)
                f.deleted = True
        self.writing.clear()
