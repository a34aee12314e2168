"""A fleet budget's gate on one capture (coordinator/budget.py has the fleet's side).

The file may hold `allowance` bytes until the coordinator grants more. The capture thread asks
ahead while busy, waits (packets stay in the kernel's ring) when the next record does not fit,
and gives back what it does not use once idle; grants arrive from the control stream's thread.
A capture without a fleet budget has a gate that is never closed (`room` is -1).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

# An unanswered request is sent again after this, and a capture that wrote nothing for
# IDLE_RETURN_S gives back the allowance it holds.
BUDGET_RETRY_S = 5.0
IDLE_RETURN_S = 1.0


class Verdict(enum.Enum):
    FITS = "fits"  # the record fits now: write it
    SPENT = "spent"  # the fleet's budget is spent: the capture stops (FleetBytesExceeded)
    STOPPING = "stopping"  # the capture was stopped while waiting


class BudgetGate:
    def __init__(self, allowance: int, on_budget: Callable[[str, int, int], None] = lambda kind, amount, used: None):
        """`allowance`: the first grant in bytes (0: no fleet budget). `on_budget(kind, amount,
        used)` sends a "request" for `amount` more bytes, or a "return" of `amount` unused ones."""
        self.enabled = allowance > 0
        self._allowance = allowance
        self.last_grant = allowance
        self._asked = 0.0  # when a request went unanswered (monotonic); 0 = none pending
        self._exhausted = False
        self._granted = threading.Event()
        self._lock = threading.Lock()
        self._on_budget = on_budget

    @property
    def allowance(self) -> int:
        return self._allowance

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def room(self, written: int) -> int:
        """Bytes the budget still lets the file take, with `written` held; -1 = no fleet budget."""
        return self._allowance - written if self.enabled else -1

    def grant(self, granted: int, exhausted: bool) -> None:
        """More of the budget (from the coordinator, through the runner), or its end."""
        with self._lock:
            if granted > 0:
                self._allowance += granted
                self.last_grant = granted
            self._exhausted = self._exhausted or exhausted
            self._asked = 0.0
        self._granted.set()

    def release(self) -> None:
        """The capture is stopping: a wait for a grant ends now."""
        self._granted.set()

    def ask(self, need: int, written: int) -> None:
        """Asks for more: at once when nothing is pending, and again if an answer is lost (a
        control stream that dropped) after BUDGET_RETRY_S."""
        now = time.monotonic()
        if self._asked and now - self._asked < BUDGET_RETRY_S:
            return
        self._asked = now
        self._on_budget("request", need, written)

    def wait(self, size: int, written: Callable[[], int], stopping: Callable[[], bool]) -> Verdict:
        """The next record (`size` bytes) does not fit the allowance: waits until a grant lets it
        in, the budget is spent, or the capture stops."""
        while not stopping():
            with self._lock:
                room, exhausted = self.room(written()), self._exhausted
                self._granted.clear()
            if size <= room:
                return Verdict.FITS
            if exhausted:
                return Verdict.SPENT
            self.ask(size - room, written())
            self._granted.wait(BUDGET_RETRY_S)
        return Verdict.STOPPING

    def give_back(self, written: int) -> None:
        """Idle: the allowance the file does not use goes back to the fleet, so that busier
        instances may use it."""
        with self._lock:
            spare = self.room(written)
            if spare <= 0 or self._asked or self._exhausted:
                return
            self._allowance -= spare
        self._on_budget("return", spare, written)
