"""One token bucket, for everything the coordinator meters: a principal's creates (refused past
the rate) and an agent's changes of state (delayed past it)."""

from __future__ import annotations


class TokenBucket:
    """A burst of `burst` tokens, refilled at `per_s` a second."""

    def __init__(self, burst: float, per_s: float):
        self.burst, self.per_s = burst, per_s
        self.tokens: float = burst
        self.at: float | None = None

    def when(self, now: float) -> float:
        """`now` if a token is there (and takes it), else the time one will be (taking none)."""
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_s)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return now
        return now + (1 - self.tokens) / self.per_s
