"""Filter compilation off the event loop, in worker processes with a deadline.

libpcap's optimiser is superlinear in an expression's size, and a create must compile its
filters before it starts any instance. Compiled on the event loop, one crafted filter would stall
every other call and let agent leases expire; compiled in a thread, it would still hold the GIL
in places and could not be stopped. So compiles run in spawned worker processes ("lanes", one
process each): a compile past COMPILE_TIMEOUT_S fails the create with INVALID_ARGUMENT and its
lane's process is killed and replaced, the other lanes untouched.

Three bounds keep one caller from delaying the others (docs/security.md):
- an expression whose compile is predictably long is refused before it is compiled
  (`compile_cost`, measured on this machine: docs/decisions.md);
- LANES compiles run at once;
- one caller holds at most one lane at a time; its next compile waits behind its own.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.pool
import os
import re
import threading
import time

from fleetcap.coordinator.errors import InvalidArgument
from fleetcap.core.libpcap import PcapError, check_filter

log = logging.getLogger(__name__)

# The largest filters the caps admit compile in well under a second here; 5 s leaves room for a
# loaded machine and still answers the caller before a client's default deadline.
COMPILE_TIMEOUT_S = 5.0
# Two lanes: this machine's two cores; a third compile waits for one.
LANES = 2
# libpcap's optimiser costs about the cube of the number of primitives. Measured here
# (docs/decisions.md): 200 `host` terms 0.6 s, 400 5.0 s; 200 `port` 0.44 s, 400 3.0 s; a
# `portrange` without a protocol expands to three (tcp, udp, sctp): 70 of them 0.6 s, 100 2.3 s.
# A weighted count above MAX_COMPILE_COST would take seconds: refused at once.
MAX_COMPILE_COST = 300
_WEIGHTS = {"portrange": 3, "port": 1, "host": 1, "net": 1}
_PRIMITIVE = re.compile(r"\b(portrange|port|host|net)\b")


def compile_cost(expression: str) -> int:
    """The weighted number of primitives of an expression (see MAX_COMPILE_COST)."""
    return sum(_WEIGHTS[m] for m in _PRIMITIVE.findall(expression))


def _exit_with(parent: int) -> None:
    """In each worker, at its start: end when the coordinator is gone, however it went (SIGKILL,
    or its shutdown deadline's os._exit), rather than live on as an orphan."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-coordinator", daemon=True).start()


def _compile(expression: str) -> str:
    """In the worker: "" if libpcap compiles the expression, else libpcap's message."""
    try:
        check_filter(expression)
        return ""
    except PcapError as e:
        return str(e) or "rejected"


class _Lane:
    """One worker process, replaced when a compile overruns."""

    def __init__(self) -> None:
        self._pool: multiprocessing.pool.Pool | None = None

    def pool(self) -> multiprocessing.pool.Pool:
        if self._pool is None:
            # spawn, not fork: the coordinator has gRPC threads that a fork would copy mid-state.
            self._pool = multiprocessing.get_context("spawn").Pool(1, initializer=_exit_with, initargs=(os.getpid(),))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None


class FilterCompiler:
    def __init__(self, timeout_s: float = COMPILE_TIMEOUT_S, lanes: int = LANES):
        self.timeout_s = timeout_s
        self._lanes = [_Lane() for _ in range(lanes)]
        self._free: asyncio.Queue[_Lane] | None = None
        self._callers: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # caller -> (its lock, [compiles waiting])

    def _queue(self) -> asyncio.Queue[_Lane]:
        if self._free is None:
            self._free = asyncio.Queue()
            for lane in self._lanes:
                self._free.put_nowait(lane)
        return self._free

    async def start(self) -> None:
        """Starts the workers ahead of the first create (a spawn costs a few hundred ms)."""
        await asyncio.gather(*(asyncio.to_thread(lane.pool().apply, _compile, ("ip",)) for lane in self._lanes))

    async def check(self, field: str, expression: str, meaning: str, *, caller: str = "") -> None:
        """Raises InvalidArgument naming `field` if the expression would take too long to
        compile, if libpcap rejects it, or if it takes longer than the deadline."""
        cost = compile_cost(expression)
        if cost > MAX_COMPILE_COST:
            raise InvalidArgument(
                field,
                f"too complex: {cost} address and port terms (a port range counts 3), at most "
                f"{MAX_COMPILE_COST}; split the capture or use fewer, wider ranges",
            )
        lock, waiting = self._callers.setdefault(caller, (asyncio.Lock(), [0]))
        waiting[0] += 1
        try:
            async with lock:
                message = await self._run(field, expression)
        finally:
            waiting[0] -= 1
            if not waiting[0]:
                del self._callers[caller]
        if message:
            raise InvalidArgument(field, f"{meaning}: {message}")

    async def _run(self, field: str, expression: str) -> str:
        free = self._queue()
        lane = await free.get()
        try:
            result = lane.pool().apply_async(_compile, (expression,))
            try:
                return await asyncio.to_thread(result.get, self.timeout_s)
            except multiprocessing.TimeoutError:
                log.warning("filter compile took longer than %.0fs; its worker is replaced", self.timeout_s)
                lane.close()
                raise InvalidArgument(
                    field, f"too complex: libpcap did not compile it within {self.timeout_s:g} s; simplify the filter"
                ) from None
        finally:
            free.put_nowait(lane)

    def close(self) -> None:
        for lane in self._lanes:
            lane.close()
