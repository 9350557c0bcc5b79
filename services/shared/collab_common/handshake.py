"""A deadline for the HTTP request head, which uvicorn does not have.

A client trickling its request head a byte at a time (slowloris) would hold its socket
for as long as it keeps trickling, and a few thousand such clients hold a server's file
descriptors. The deadline covers every request, WebSocket upgrades and plain HTTP
alike: it runs from the connection's opening for the first request and from the first
byte of each later one on a keep-alive connection, and stops once the head is complete.
Idle keep-alive connections are uvicorn's own `timeout_keep_alive`; slow bodies are not
covered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

# A flood of slow handshakes would otherwise write one line per connection.
SUMMARY_INTERVAL_SECONDS = 60.0


class DroppedHandshakeLog:
    """Logs connections dropped by the deadline: the first at once, then one line a minute.

    The count of each line covers the drops since the previous one; the exact rate is
    the caller's metric.
    """

    def __init__(
        self,
        timeout: float,
        *,
        interval: float = SUMMARY_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self.interval = interval
        self._clock = clock
        self._unlogged = 0
        self._logged_at: float | None = None

    def record(self) -> None:
        """Count one dropped connection; log if no line was written within the interval."""
        self._unlogged += 1
        now = self._clock()
        if self._logged_at is None:
            logger.info(
                "dropped a connection that sent no complete request head within %.1fs; "
                "further drops are logged at most once every %.0fs",
                self.timeout,
                self.interval,
            )
        elif now - self._logged_at >= self.interval:
            logger.info(
                "dropped %d connections that sent no complete request head within %.1fs "
                "in the last %.0fs",
                self._unlogged,
                self.timeout,
                now - self._logged_at,
            )
        else:
            return
        self._logged_at = now
        self._unlogged = 0


def handshake_deadline_protocol(
    timeout: float, on_drop: Callable[[], None]
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, closing connections whose request head is late.

    `on_drop` runs once per dropped connection (the service's metric); the log line is
    written here, at most once a minute.
    """
    dropped = DroppedHandshakeLog(timeout)

    class HandshakeDeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            # Armed already for a connection's first request: counted from the opening,
            # not from the first byte, or a silent start would double the deadline.
            if self._deadline is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return  # closed for another reason already (a 400 on a malformed head)
            on_drop()
            dropped.record()
            self.transport.close()

    return HandshakeDeadlineProtocol
