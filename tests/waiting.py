"""The tests' one way to wait: for a condition, never for a guessed time.

`wait_for` polls a condition until it holds and returns what it returned; past its timeout it
fails naming what it waited for and what it last saw. `let_time_pass` is for the few tests where
time passing *is* the behaviour under test (a flight recorder's window, a lease running out, an
outage of a given length): it says why, so that no sleep stands in for a condition.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    *,
    what: str,
    timeout_s: float = 30.0,
    interval_s: float = 0.1,
    ignoring: tuple[type[BaseException], ...] = (),
    detail: Callable[[], object] | None = None,
) -> T:
    """Polls `condition()` until it returns something truthy, and returns that. An exception of
    a type in `ignoring` (a page being redrawn, a server still starting) counts as not yet.
    `detail()` is added to the failure (a status, a log) if the wait times out."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last = value
        except ignoring as e:
            last = e
        if time.monotonic() >= deadline:
            more = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r}){more}")
        time.sleep(interval_s)


async def wait_for_async(condition: Callable[[], T], *, what: str, timeout_s: float = 30.0, interval_s: float = 0.05) -> T:
    """`wait_for` inside an event loop: the loop runs while it waits."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval_s)


def let_time_pass(seconds: float, *, why: str) -> None:
    """Waits `seconds` of wall time because the behaviour under test depends on time itself
    (`why` says how). Never for something a condition could show."""
    if seconds > 0:
        time.sleep(seconds)


async def let_time_pass_async(seconds: float, *, why: str) -> None:
    """`let_time_pass` inside an event loop: the loop runs meanwhile."""
    if seconds > 0:
        await asyncio.sleep(seconds)


def started(proc: subprocess.Popen[bytes], path: str, log_path: object = None) -> bool:
    """For wait_for: whether a daemon has made `path` (its socket); raises, with its log if it
    has one, if the daemon exited instead."""
    if proc.poll() is not None:
        log = open(str(log_path), errors="replace").read() if log_path is not None else ""
        raise AssertionError(f"exited {proc.returncode} before making {path}\n{log}")
    return os.path.exists(path)
