"""Every file the agent writes lives under its capture root, and only there.

The agent runs as root, and the capture root may be writable by others, so no path is trusted:
each directory on the way is opened with O_NOFOLLOW relative to its parent's descriptor, and a
file is created with O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600. Neither a planted symlink (at any
level) nor a `..` moves a write or a delete outside the root.

A file is also the file the agent created: its identity (device and inode) is kept from its
creation, and every later open checks it, with one link and a regular file, so that a local user
who renames the capture file and writes another in its place, or hard-links another file there,
makes the open fail (FileReplaced) rather than feed the upload, the hash or a download. A file
from before an agent restart is known from its first open after it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from fleetcap.core.integrity import sha256_stream

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_MODE, DIR_MODE = 0o600, 0o700


class OutsideRoot(ValueError):
    """The path is not a plain path below the capture root."""


class FileReplaced(OSError):
    """The file at a path is not the one the agent created there (renamed and replaced, hard
    linked, or not a regular file)."""


class CaptureRoot:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self._identities: dict[tuple[str, ...], tuple[int, int]] = {}  # parts -> (st_dev, st_ino)

    def _check(self, parts: list[str], fd: int, path: str) -> int:
        """`fd` if it is the file created at `parts` (one link, a regular file), else closes it
        and raises FileReplaced."""
        st = os.fstat(fd)
        known = self._identities.setdefault(tuple(parts), (st.st_dev, st.st_ino))
        if (st.st_dev, st.st_ino) != known or st.st_nlink != 1 or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise FileReplaced(errno.ESTALE, f"{path} is not the file the agent wrote (it was replaced or linked); refused")
        return fd

    def parts(self, path: str) -> list[str]:
        """The components of `path` below the root; raises OutsideRoot."""
        rel = os.path.relpath(os.path.abspath(path), self.root)
        parts = rel.split(os.sep)
        if rel.startswith("..") or os.path.isabs(rel) or rel == "." or any(p in ("", ".", "..") for p in parts) or "\x00" in path:
            raise OutsideRoot(f"{path} is not below the capture root {self.root}")
        return parts

    @contextlib.contextmanager
    def _parent(self, parts: list[str], *, create: bool) -> Iterator[int]:
        """A descriptor of the directory that holds parts[-1], walked without following links."""
        if create:
            os.makedirs(self.root, DIR_MODE, exist_ok=True)  # the root itself is the operator's to place
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in parts[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, DIR_MODE, dir_fd=fd)
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)  # ELOOP/ENOTDIR on a symlink
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def create(self, path: str) -> int:
        """A new file at `path`, open for writing; FileExistsError if anything is there (a
        symlink included). The caller owns the descriptor."""
        parts = self.parts(path)
        with self._parent(parts, create=True) as parent:
            fd = os.open(parts[-1], _FILE_FLAGS, FILE_MODE, dir_fd=parent)
        st = os.fstat(fd)
        self._identities[tuple(parts)] = (st.st_dev, st.st_ino)
        return fd

    def open_read(self, path: str, *, write: bool = False) -> int:
        """`path` opened for reading (and writing, with write), never through a symlink; the
        caller owns the descriptor."""
        parts = self.parts(path)
        mode = os.O_RDWR if write else os.O_RDONLY
        with self._parent(parts, create=False) as parent:
            # O_NONBLOCK: a FIFO planted at the path must not hang the open (it is refused below).
            fd = os.open(parts[-1], mode | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
        os.set_blocking(fd, True)
        return self._check(parts, fd, path)

    def sha256(self, path: str) -> str:
        with os.fdopen(self.open_read(path), "rb") as f:
            return sha256_stream(f)

    def replace_with(self, path: str, data: bytes) -> None:
        """Writes `path` atomically (a new temporary file renamed over it)."""
        parts = self.parts(path)
        tmp = parts[-1] + ".tmp"
        with self._parent(parts, create=True) as parent:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=parent)
            fd = os.open(tmp, _FILE_FLAGS, FILE_MODE, dir_fd=parent)
            st = os.fstat(fd)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
            self._identities[tuple(parts)] = (st.st_dev, st.st_ino)

    def remove(self, path: str) -> None:
        """Removes `path` (a symlink there is removed itself, never followed); absent is fine."""
        parts = self.parts(path)
        self._identities.pop(tuple(parts), None)
        try:
            with self._parent(parts, create=False) as parent, contextlib.suppress(FileNotFoundError):
                os.unlink(parts[-1], dir_fd=parent)
        except FileNotFoundError:
            pass  # a directory on the way is gone: so is the file
