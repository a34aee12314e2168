"""A sink on the coordinator's own disk (--storage-dir): the built-in storage account "local".
Object names start with their container: <storage-dir>/<container>/<blob path>.

Objects are written as `<name>.partial` and renamed to `<name>` on commit, so a reader never
sees a half file under the final name. Writes are fsynced in batches of SYNC_BYTES by a
background thread while writing goes on (and on flush): only fsynced bytes are acknowledged,
so an acknowledgement always means "on disk", and the disk's own speed is the limit.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os

from fleetcap.coordinator.storage.sink import Committed, IntegrityError, ObjectWriter, OffsetMismatch, Sink, SinkError
from fleetcap.core.integrity import sha256_file
from fleetcap.core.vocabulary import StorageKind

# fsync once per this many bytes: per-chunk fsyncs would cap a file at the disk's fsync rate.
SYNC_BYTES = 16 << 20


class LocalSink(Sink):
    kind = StorageKind.LOCAL

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def endpoint(self) -> str:
        return "file://" + self.root

    def path(self, object_name: str) -> str:
        full = os.path.normpath(os.path.join(self.root, object_name))
        if not full.startswith(self.root + os.sep) or os.sep not in object_name:
            raise SinkError(f"object name '{object_name}' escapes the storage directory")
        return full

    def uri(self, object_name: str) -> str:
        return "file://" + self.path(object_name)

    def delete(self, object_name: str) -> None:
        path = self.path(object_name)
        for p in (path, path + ".partial"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)

    def committed_size(self, object_name: str) -> int | None:
        """The size of a committed object; None while it is being written or absent."""
        path = self.path(object_name)
        if os.path.exists(path + ".partial"):
            return None
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None

    def open(self, object_name: str) -> LocalWriter:
        return LocalWriter(self.path(object_name))

    def read(self, object_name: str, offset: int, length: int) -> bytes:
        path = self.path(object_name)
        for p in (path, path + ".partial"):
            try:
                with open(p, "rb") as f:
                    return os.pread(f.fileno(), length, offset)
            except FileNotFoundError:
                continue
        return b""


class LocalWriter(ObjectWriter):
    def __init__(self, final_path: str):
        self.final = final_path
        self.partial = final_path + ".partial"
        self.uri = "file://" + final_path
        self._fd: int | None = None
        self._size = 0  # bytes written
        self._durable = 0  # bytes fsynced
        self._hash: hashlib._Hash | None = None  # of bytes written, when this writer saw them all
        self._syncer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fsync")
        self._sync: concurrent.futures.Future[int] | None = None  # an fsync in flight; its result: bytes it covers

    def open(self, restart: bool = False) -> int:
        os.makedirs(os.path.dirname(self.partial), exist_ok=True)
        self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if restart else 0), 0o640)
        self._size = self._durable = os.fstat(self._fd).st_size  # what a previous run left is on disk
        self._hash = hashlib.sha256() if self._size == 0 else None
        return self._durable

    def committed(self) -> Committed | None:
        if not os.path.exists(self.final) or os.path.exists(self.partial):
            return None
        return Committed(self.uri, os.stat(self.final).st_size, sha256_file(self.final))

    def _descriptor(self) -> int:
        if self._fd is None:
            raise SinkError(f"{self.partial} is not open")
        return self._fd

    def write(self, offset: int, data: bytes | memoryview) -> int:
        if offset != self._size:
            raise OffsetMismatch(self._size, offset)
        os.pwrite(self._descriptor(), data, offset)
        if self._hash is not None:
            self._hash.update(data)
        self._size += len(data)
        self._reap()
        if self._sync is None and self._size - self._durable >= SYNC_BYTES:
            self._sync = self._syncer.submit(self._fsync, self._descriptor(), self._size)
        return self._durable

    def durable_size(self) -> int:
        self._reap()
        return self._durable

    def _fsync(self, fd: int, covers: int) -> int:
        os.fsync(fd)  # everything written before this call, i.e. the first `covers` bytes
        _drop_cached(fd, covers)
        self.on_durable()
        return covers

    def _reap(self, wait: bool = False) -> None:
        if self._sync is not None and (wait or self._sync.done()):
            self._durable = max(self._durable, self._sync.result())
            self._sync = None

    def flush(self) -> int:
        self._reap(wait=True)
        if self._durable < self._size:
            os.fsync(self._descriptor())
            _drop_cached(self._descriptor(), self._size)
            self._durable = self._size
        return self._durable

    def commit(self, size: int, sha256: str) -> Committed:
        self.flush()
        self.close()
        stored = os.stat(self.partial).st_size
        # Hashed as it was written when this writer saw every byte; else read back once.
        digest = self._hash.hexdigest() if self._hash is not None and stored == self._size else sha256_file(self.partial)
        if stored != size or digest != sha256:
            os.remove(self.partial)  # never keep a copy that differs; the agent sends it again
            raise IntegrityError(
                f"stored copy differs from the agent's file: {stored} bytes sha256 {digest}, expected {size} bytes sha256 {sha256}"
            )
        os.rename(self.partial, self.final)
        dir_fd = os.open(os.path.dirname(self.final), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return Committed(self.uri, stored, digest)

    def close(self) -> None:
        self._reap(wait=True)
        self._syncer.shutdown(wait=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _drop_cached(fd: int, length: int) -> None:
    """Evicts fsynced bytes from the page cache. Stored captures are written once and read
    rarely: keeping them cached only grows the coordinator's memory (in a container, its
    cgroup's), and writing into recycled pages is much cheaper than into fresh ones
    (docs/benchmarks.md: 4x on this machine's disk writes)."""
    os.posix_fadvise(fd, 0, length, os.POSIX_FADV_DONTNEED)
