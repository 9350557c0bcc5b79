"""Per-address connection counts (the message rate is collab_common.ratelimit)."""

from __future__ import annotations

from collections import Counter


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
