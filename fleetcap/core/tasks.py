"""Background tasks that are owned: kept until they end, their failure logged and handed on.

`asyncio.ensure_future(work())` alone keeps only a weak reference (the task may be collected
mid-flight) and drops its exception (seen, if ever, as "Task exception was never retrieved" at
exit). Work started beside the code that started it goes through a `TaskSet` instead: the set
holds each task until it ends, an unexpected error is logged with its traceback and given to the
`on_error` callback, which turns it into the caller's own outcome (an instance error, a retry),
and `close` cancels what is left and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any


class TaskSet:
    def __init__(self, what: str, logger: logging.Logger, *, expected: tuple[type[BaseException], ...] = ()):
        self.what = what  # for the log line: "budget exchange", "hashing", ...
        self._log = logger
        self._expected = expected  # failures foreseen (etcd away, say): a warning without a traceback
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def start(
        self, work: Coroutine[Any, Any, Any], *, on_error: Callable[[BaseException], None] | None = None, detail: str = ""
    ) -> asyncio.Task[Any]:
        """Runs `work` as a task held by this set. If it raises (anything but cancellation), the
        error is logged with `detail` and passed to `on_error`."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            error = t.exception()
            if error is None:
                return
            where = f" ({detail})" if detail else ""
            if isinstance(error, self._expected):
                self._log.warning("%s%s failed: %s", self.what, where, error)
            else:
                self._log.error("%s%s failed: %s", self.what, where, error, exc_info=error)
            if on_error is not None:
                try:
                    on_error(error)
                except Exception:
                    self._log.exception("%s: handling the failure failed too", self.what)

        task.add_done_callback(done)
        return task

    def cancel(self) -> list[asyncio.Task[Any]]:
        """Cancels every task still running; returns them (to wait for, if the caller can)."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        return tasks

    async def close(self) -> None:
        """Cancels every task still running and waits until each has ended."""
        await asyncio.gather(*self.cancel(), return_exceptions=True)
