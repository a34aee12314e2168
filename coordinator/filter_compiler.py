"""Filter compilation off the event loop, in a worker process with a deadline.

libpcap's optimiser is superlinear in an expression's size, and a create must compile its
filters before it starts any instance. Compiled on the event loop, one crafted filter would stall
every other call and let agent leases expire; compiled in a thread, it would still hold the GIL
in places and could not be stopped. So compiles run in one spawned worker process: a compile
past COMPILE_TIMEOUT_S fails the create with INVALID_ARGUMENT and the worker is killed and
replaced. Size caps (fleetcap.core.limits) keep honest filters far below the deadline.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.pool

from fleetcap.coordinator.errors import InvalidArgument
from fleetcap.core.libpcap import PcapError, check_filter

log = logging.getLogger(__name__)

# The largest filters the caps admit compile in well under a second here; 5 s leaves room for a
# loaded machine and still answers the caller before a client's default deadline.
COMPILE_TIMEOUT_S = 5.0


def _compile(expression: str) -> str:
    """In the worker: "" if libpcap compiles the expression, else libpcap's message."""
    try:
        check_filter(expression)
        return ""
    except PcapError as e:
        return str(e) or "rejected"


class FilterCompiler:
    def __init__(self, timeout_s: float = COMPILE_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._pool: multiprocessing.pool.Pool | None = None
        self._lock = asyncio.Lock()  # one compile at a time: the worker is one process

    def _worker(self) -> multiprocessing.pool.Pool:
        if self._pool is None:
            # spawn, not fork: the coordinator has gRPC threads that a fork would copy mid-state.
            self._pool = multiprocessing.get_context("spawn").Pool(1)
        return self._pool

    async def start(self) -> None:
        """Starts the worker ahead of the first create (a spawn costs a few hundred ms)."""
        async with self._lock:
            await asyncio.to_thread(self._worker().apply, _compile, ("ip",))

    async def check(self, field: str, expression: str, meaning: str) -> None:
        """Raises InvalidArgument naming `field` if libpcap rejects the expression or takes
        longer than the deadline."""
        async with self._lock:
            result = self._worker().apply_async(_compile, (expression,))
            try:
                message = await asyncio.to_thread(result.get, self.timeout_s)
            except multiprocessing.TimeoutError:
                log.warning("filter compile took longer than %.0fs; the worker is replaced", self.timeout_s)
                self.close()
                raise InvalidArgument(field, f"too complex: libpcap did not compile it within {self.timeout_s:g} s; "
                                             "simplify the filter") from None
        if message:
            raise InvalidArgument(field, f"{meaning}: {message}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
