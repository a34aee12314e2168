"""Ports for tests run in parallel, never picked by binding, releasing and hoping.

A daemon a test starts binds port 0 itself and says in its log which port the OS gave it
(`listening on HOST:PORT`, `metrics on http://HOST:PORT/metrics`): `bound_port` reads it. A
test that needs a port where nothing listens holds one bound and never listening
(`refused_port`), so that no other process can take it meanwhile.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
from collections.abc import Iterator

from tests.waiting import wait_for


def bound_port(log_path: str, pattern: str, *, what: str, timeout_s: float = 30, proc: subprocess.Popen[bytes] | None = None) -> int:
    """The port in the first match of `pattern` (one group: the port) in the daemon's log; with
    `proc`, fails at once, with the log, if the daemon exits first."""
    regex = re.compile(pattern)

    def found() -> int | None:
        with open(log_path, errors="replace") as f:
            text = f.read()
        m = regex.search(text)
        if m is None and proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before saying where it listens:\n{text}")
        return int(m.group(1)) if m else None

    return wait_for(found, what=f"{what} in {log_path}", timeout_s=timeout_s, interval_s=0.05)


@contextlib.contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A TCP port where a connection is refused while the block runs: bound, never listening."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        yield int(s.getsockname()[1])
