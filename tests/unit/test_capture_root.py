"""A capture file is the file the agent created: renamed and replaced, hard-linked or swapped for
a FIFO, it is refused on every later open (node_agent/capture/capture_root.py)."""

from __future__ import annotations

import os

import pytest

from fleetcap.node_agent.capture.capture_root import CaptureRoot, FileReplaced


def _write(root: CaptureRoot, path: str, data: bytes) -> None:
    with os.fdopen(root.create(path), "wb") as f:
        f.write(data)


def test_a_file_renamed_and_replaced_is_refused(tmp_path):
    root = CaptureRoot(str(tmp_path))
    path = str(tmp_path / "ev.cap")
    _write(root, path, b"REAL")
    with os.fdopen(root.open_read(path), "rb") as f:
        assert f.read() == b"REAL"
    os.rename(path, tmp_path / "ev.orig")  # what a local user with write access to the directory can do
    (tmp_path / "ev.cap").write_bytes(b"FORGED-BY-NOBODY")
    with pytest.raises(FileReplaced, match="ev.cap is not the file the agent wrote"):
        root.open_read(path)
    with pytest.raises(FileReplaced):
        root.sha256(path)


def test_a_hard_link_or_a_fifo_is_refused_even_for_a_file_known_only_from_now(tmp_path):
    root = CaptureRoot(str(tmp_path))
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root only")
    os.link(secret, tmp_path / "linked.cap")  # where fs.protected_hardlinks=0
    with pytest.raises(FileReplaced):
        root.open_read(str(tmp_path / "linked.cap"))
    os.mkfifo(tmp_path / "fifo.cap")
    with pytest.raises(FileReplaced):
        root.open_read(str(tmp_path / "fifo.cap"))  # refused, and the open never blocked


def test_a_file_the_agent_rewrote_or_removed_is_known_again(tmp_path):
    root = CaptureRoot(str(tmp_path))
    path = str(tmp_path / "j.json")
    root.replace_with(path, b"one")
    root.replace_with(path, b"two")  # a new inode each time: the agent's own
    with os.fdopen(root.open_read(path), "rb") as f:
        assert f.read() == b"two"
    root.remove(path)
    _write(root, path, b"three")
    with os.fdopen(root.open_read(path), "rb") as f:
        assert f.read() == b"three"
