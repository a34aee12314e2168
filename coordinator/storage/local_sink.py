"""A sink on the coordinator's own disk (--storage-dir): the built-in storage account "local".

Objects are written as `<name>.partial`, fsynced before every acknowledgement, and renamed to
`<name>` on commit, so a reader never sees a half file under the final name.
"""
from __future__ import annotations

import hashlib
import os

from coordinator.storage.sink import Committed, ObjectWriter, OffsetMismatch, Sink, SinkError

CONTAINER = "network-watcher-logs"


class LocalSink(Sink):
    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def path(self, object_name: str) -> str:
        full = os.path.normpath(os.path.join(self.root, CONTAINER, object_name))
        if not full.startswith(os.path.join(self.root, CONTAINER) + os.sep):
            raise SinkError(f"object name '{object_name}' escapes the storage directory")
        return full

    def uri(self, object_name: str) -> str:
        return "file://" + self.path(object_name)

    def delete(self, object_name: str) -> None:
        path = self.path(object_name)
        for p in (path, path + ".partial"):
            try:
                os.remove(p)
            except FileNotFoundError:
                pass

    def open(self, object_name: str) -> "LocalWriter":
        return LocalWriter(self.path(object_name))


class LocalWriter(ObjectWriter):
    def __init__(self, final_path: str):
        self.final = final_path
        self.partial = final_path + ".partial"
        self.uri = "file://" + final_path
        self._fd: int | None = None

    def stored_size(self) -> int:
        try:
            return os.stat(self.partial).st_size
        except FileNotFoundError:
            return 0

    def committed(self) -> Committed | None:
        if not os.path.exists(self.final) or os.path.exists(self.partial):
            return None
        return Committed(self.uri, os.stat(self.final).st_size, _sha256(self.final))

    def append(self, offset: int, data: bytes) -> int:
        if self._fd is None:
            os.makedirs(os.path.dirname(self.partial), exist_ok=True)
            self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT, 0o640)
        size = os.fstat(self._fd).st_size
        if offset != size:
            raise OffsetMismatch(size, offset)
        os.pwrite(self._fd, data, offset)
        os.fsync(self._fd)
        return offset + len(data)

    def commit(self, size: int, sha256: str) -> Committed:
        self.close()
        if not os.path.exists(self.partial):
            os.makedirs(os.path.dirname(self.partial), exist_ok=True)
            open(self.partial, "wb").close()  # an empty capture file is still a file
        stored = os.stat(self.partial).st_size
        digest = _sha256(self.partial)
        if stored != size or digest != sha256:
            raise SinkError(f"stored copy differs from the agent's file: {stored} bytes sha256 {digest}, "
                            f"expected {size} bytes sha256 {sha256}")
        os.rename(self.partial, self.final)
        dir_fd = os.open(os.path.dirname(self.final), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return Committed(self.uri, stored, digest)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
