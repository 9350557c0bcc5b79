"""The outbound side of one client socket: a bounded queue and one drain task at a time."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from collab_common.wsprotocol import encode_binary

from collab import metrics

logger = logging.getLogger(__name__)

# Counters bound once per kind: the send path runs for every frame and every peer.
_SENT = {
    (0, 0): metrics.FRAMES_SENT.labels("sync_step1"),
    (0, 1): metrics.FRAMES_SENT.labels("sync_step2"),
    (0, 2): metrics.FRAMES_SENT.labels("update"),
    (1, 0): metrics.FRAMES_SENT.labels("awareness"),
    (2, 0): metrics.FRAMES_SENT.labels("auth"),
}
_SENT_OTHER = metrics.FRAMES_SENT.labels("other")


def _sent_counter(frame: bytes) -> Any:
    key = (0, frame[1]) if frame[0] == 0 and len(frame) > 1 else (frame[0], 0)
    return _SENT.get(key, _SENT_OTHER)


class _Encoded:
    """The wire form of the frame being broadcast, encoded for the first peer only.

    A room hands the same bytes object to every peer in one loop, so one entry keyed
    by identity serves them all. Frames written that way are counted in memory and
    added to the (multiprocess, file-backed) counter once the loop turn ends.
    """

    def __init__(self) -> None:
        self.frame: bytes | None = None
        self.wire = b""
        self.counter: Any = None
        self.unflushed = 0

    def wire_of(self, frame: bytes) -> bytes:
        if frame is not self.frame:
            self.flush()
            self.frame, self.wire, self.counter = frame, encode_binary(frame), _sent_counter(frame)
        return self.wire

    def count(self) -> None:
        if self.unflushed == 0:
            asyncio.get_running_loop().call_soon(self.flush)
        self.unflushed += 1

    def flush(self) -> None:
        if self.unflushed:
            self.counter.inc(self.unflushed)
            self.unflushed = 0


_encoded = _Encoded()


ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


class Connection:
    """Queues frames for one client so that a slow reader never blocks the room.

    A frame is written at once when nothing is queued and the socket is writable
    (`send_now`); otherwise it waits in the queue, which one task drains through ASGI
    `send` as the client reads. The queue is bounded in bytes; when a client falls that
    far behind, `on_overflow` runs once and nothing more is queued (the owner closes the
    socket with 1013).
    """

    # Thousands of these live per process: no per-instance __dict__.
    __slots__ = (
        "_abort",
        "_drainer",
        "_max_queued_bytes",
        "_on_overflow",
        "_queue",
        "_queued_bytes",
        "_send",
        "_send_now",
        "awareness_ids",
        "closed",
        "conn_id",
    )

    def __init__(
        self,
        send: ASGISend,
        *,
        conn_id: str,
        max_queued_bytes: int,
        on_overflow: Callable[[], None],
        abort: Callable[[], None] | None = None,
        send_now: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.awareness_ids: set[int] = set()
        self.closed = False
        self._send = send
        self._max_queued_bytes = max_queued_bytes
        self._on_overflow = on_overflow
        self._abort = abort
        self._send_now = send_now
        # Created when a frame first has to wait, dropped once drained: most sockets
        # never need one, and an empty deque costs ~600 bytes per idle connection.
        self._queue: collections.deque[bytes] | None = None
        self._queued_bytes = 0
        self._drainer: asyncio.Task[None] | None = None

    def send(self, frame: bytes) -> None:
        """Queue a frame without waiting; drop everything and signal overflow if too far behind."""
        if self.closed:
            return
        # The common case: nothing queued ahead and the socket takes the frame now.
        if (
            self._queue is None
            and self._drainer is None
            and self._send_now is not None
            and self._send_now(_encoded.wire_of(frame))
        ):
            _encoded.count()
            return
        if self._queue and self._queued_bytes + len(frame) > self._max_queued_bytes:
            self.closed = True
            self._queue = None
            self._queued_bytes = 0
            self._on_overflow()
            return
        if self._queue is None:
            self._queue = collections.deque()
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue:
                frame = self._queue.popleft()
                self._queued_bytes -= len(frame)
                await self._send({"type": "websocket.send", "bytes": frame})
                _sent_counter(frame).inc()
        except Exception as error:  # the socket went away under us; the consumer cleans up
            logger.debug("send to %s failed: %s", self.conn_id, error)
            self.closed = True
            self._queued_bytes = 0
        finally:
            self._queue = None
            self._drainer = None

    async def close(
        self, code: int, reason: str, *, grace: float = 1.0, close_timeout: float = 10.0
    ) -> None:
        """Stop queueing, let queued frames go out for `grace` s, then send the close frame.

        A client that stalled (a phone in a pocket) gets `close_timeout` seconds to take
        the close frame and learn why; one that never reads again is then cut off.
        """
        self.closed = True
        drainer = self._drainer
        if drainer is not None:
            # A client that stopped reading would hold us here forever: bounded wait.
            done, _ = await asyncio.wait({drainer}, timeout=grace)
            if not done:
                drainer.cancel()
        self._queue = None
        self._queued_bytes = 0
        try:
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": code, "reason": reason[:120]}),
                timeout=close_timeout,
            )
        except (TimeoutError, Exception) as error:
            # The client does not take even the close frame: drop the connection, or it
            # would stay open (and silent) for as long as the peer keeps it.
            logger.info("dropping %s: it does not read (%s)", self.conn_id, type(error).__name__)
            if self._abort is not None:
                self._abort()
