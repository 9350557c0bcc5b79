"""Per-connection message rate (token bucket) and per-address connection counts."""

from __future__ import annotations

import time
from collections import Counter


class TokenBucket:
    """`rate` tokens per second, up to `burst` saved; one token per message."""

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


class AddressLimiter:
    """Counts open connections per client address, refusing beyond `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def acquire(self, address: str) -> bool:
        """Count one more connection from `address`; False (and nothing counted) past the limit."""
        if self._open[address] >= self.limit:
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        """Forget one connection from `address`."""
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def count(self, address: str) -> int:
        """Open connections from `address`."""
        return self._open.get(address, 0)
