"""A per-connection message rate limit (token bucket), the same in the gateway and the editor."""

from __future__ import annotations

import time


class TokenBucket:
    """`rate` tokens per second, up to `burst` saved; one token per message.

    Refilled lazily on each `take` from the monotonic clock: no task and no lock, so one
    bucket per connection costs a few attributes and one clock read per message.
    """

    __slots__ = ("_now", "burst", "rate", "tokens", "updated")  # one per connection

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self._now = time.monotonic
        self.updated = self._now()

    def take(self) -> bool:
        """Spend a token; False when the bucket is empty (the caller is over its rate)."""
        now = self._now()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
