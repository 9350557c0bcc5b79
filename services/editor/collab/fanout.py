"""Cross-process fan-out over the Channels layer: one channel per process, a group per document.

The room, not each socket, is subscribed: a process joins a document's group once however
many local sockets watch it, and each published update costs one PUBLISH on Redis.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from collab_common.logs import detached

from collab import metrics
from collab.docids import group_name
from collab.events import Event

logger = logging.getLogger(__name__)


class Fanout:
    """Publishes this process's events and hands other processes' events to `deliver`.

    Without a layer (None) the process is alone and every method does nothing.
    """

    def __init__(
        self,
        layer: Any,
        *,
        prefix: str,
        origin: str,
        deliver: Callable[[Event], None],
        max_queued: int = 10_000,
    ) -> None:
        self.layer = layer
        self.prefix = prefix
        self.origin = origin
        self.deliver = deliver
        self.max_queued = max_queued
        self.channel = ""
        self._receiver: asyncio.Task[None] | None = None
        self._outbox: collections.deque[Event] = collections.deque()
        self._publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create this process's channel and start receiving."""
        if self.layer is None:
            return
        self.channel = await self.layer.new_channel(prefix=f"{self.prefix}.process.")
        self._receiver = asyncio.create_task(
            self._receive_forever(), name="collab-fanout", context=detached()
        )

    async def stop(self, publish_timeout: float = 2.0) -> None:
        """Publish what is queued (for a bounded time), then stop receiving."""
        if self._publisher is not None:
            await asyncio.wait({self._publisher}, timeout=publish_timeout)
            self._publisher.cancel()
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiver
            self._receiver = None

    async def join(self, doc_id: str) -> bool:
        """Subscribe to a document's group; False when the layer is unreachable."""
        if self.layer is None:
            return True
        try:
            await self.layer.group_add(group_name(self.prefix, doc_id), self.channel)
        except Exception as error:
            metrics.PUBLISH_FAILURES.labels("subscribe").inc()
            logger.warning("cannot subscribe to document %s: %s", doc_id, error)
            return False
        return True

    async def leave(self, doc_id: str) -> None:
        """Unsubscribe from a document's group."""
        if self.layer is None:
            return
        try:
            await self.layer.group_discard(group_name(self.prefix, doc_id), self.channel)
        except Exception as error:
            metrics.PUBLISH_FAILURES.labels("unsubscribe").inc()
            logger.warning("cannot unsubscribe from document %s: %s", doc_id, error)

    def publish_soon(self, event: Event) -> None:
        """Queue an event to publish in order, without waiting for the layer.

        Publishing stays off the paths that make updates durable and relay them locally:
        a Redis that hangs (a partition, a stopped server) answers nothing for seconds,
        and nobody here should wait for it. At most `max_queued` events wait; beyond
        that the oldest are dropped, as Redis itself may drop them: other processes
        read what they missed from the log.
        """
        if self.layer is None:
            return
        if len(self._outbox) >= self.max_queued:
            self._outbox.popleft()
            metrics.PUBLISH_FAILURES.labels("dropped").inc()
        self._outbox.append(event)
        if self._publisher is None:
            self._publisher = asyncio.create_task(
                self._publish_queued(), name="collab-publish", context=detached()
            )

    async def _publish_queued(self) -> None:
        try:
            while self._outbox:
                await self.publish(self._outbox.popleft())
        finally:
            self._publisher = None

    async def publish(self, event: Event) -> bool:
        """Send an event to every other process watching the document.

        A failure is logged and reported, never raised: the event is already durable
        (or, for awareness, ephemeral), and other processes heal from the log.
        """
        if self.layer is None:
            return True
        try:
            await self.layer.group_send(group_name(self.prefix, event["doc"]), event)
        except Exception as error:
            metrics.PUBLISH_FAILURES.labels("publish").inc()
            logger.warning(
                "cannot publish %s for document %s: %s", event["type"], event["doc"], error
            )
            return False
        return True

    async def _receive_forever(self) -> None:
        while True:
            try:
                event = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                metrics.PUBLISH_FAILURES.labels("receive").inc()
                logger.warning("channel layer receive failed: %s", error)
                await asyncio.sleep(0.5)
                continue
            if event.get("origin") == self.origin:
                continue  # our own publication, already fanned out locally
            try:
                self.deliver(event)
            except Exception:
                logger.exception("failed to apply a %s event", event.get("type"))
