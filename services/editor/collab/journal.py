"""Group commit: updates that arrive together become durable in one transaction.

Nothing leaves this process before its transaction commits: `on_commit` (local fan-out
and the cross-process publish) runs only after the append returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from collab_common.logs import detached

from collab import metrics
from collab.errors import Unavailable
from collab.room import Peer
from collab.store import Appended, AsyncStore

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Pending:
    """An accepted update waiting for its transaction."""

    doc_id: str
    update: bytes  # what the update changed; this is what is stored and published
    frame: bytes  # what local peers receive
    sender: Peer | None  # never receives its own update back
    received_at: float = field(default_factory=time.monotonic)


OnCommit = Callable[[str, list[Pending], Appended], Awaitable[None]]


class Journal:
    """Batches pending updates of every document into one append per round."""

    def __init__(
        self,
        store: AsyncStore,
        on_commit: OnCommit,
        *,
        max_pending: int,
        max_retry_delay: float = 2.0,
    ) -> None:
        self.store = store
        self.on_commit = on_commit
        self.max_pending = max_pending
        self.max_retry_delay = max_retry_delay
        self._queue: list[Pending] = []
        self._queue_done: asyncio.Future[None] | None = None
        self._inflight_done: asyncio.Future[None] | None = None
        self._inflight_count = 0
        self._writer: asyncio.Task[None] | None = None
        self.failing = False

    @property
    def pending(self) -> int:
        """Updates accepted but not yet durable."""
        return len(self._queue) + self._inflight_count

    def check_capacity(self) -> None:
        """Raise Unavailable when no more updates may wait for the database.

        Callers check before applying an update to a room: an update the room has but
        the journal refused would never be stored, yet the room would serve it to
        joiners, and its author, having it acknowledged by sync, would never resend it.
        """
        if self.pending >= self.max_pending:
            raise Unavailable("storage is not keeping up; retry shortly")

    def submit(self, item: Pending) -> asyncio.Future[None]:
        """Queue an update; the future resolves once it is durable and relayed."""
        self.check_capacity()
        self._queue.append(item)
        metrics.PENDING_UPDATES.inc()
        if self._queue_done is None:
            self._queue_done = asyncio.get_running_loop().create_future()
        if self._writer is None:
            self._writer = asyncio.create_task(
                self._write(), name="collab-journal", context=detached()
            )
        return self._queue_done

    async def barrier(self) -> None:
        """Wait until every update submitted so far is durable."""
        waiting = self._queue_done or self._inflight_done
        if waiting is not None:
            await asyncio.shield(waiting)

    async def _write(self) -> None:
        try:
            while self._queue:
                batch, done = self._queue, self._queue_done
                self._queue, self._queue_done = [], None
                self._inflight_done, self._inflight_count = done, len(batch)
                by_doc: dict[str, list[Pending]] = {}
                for item in batch:
                    by_doc.setdefault(item.doc_id, []).append(item)
                appended = await self._append(
                    {d: [i.update for i in items] for d, items in by_doc.items()}
                )
                for doc_id, items in by_doc.items():
                    try:
                        await self.on_commit(doc_id, items, appended[doc_id])
                    except Exception:
                        logger.exception("relaying committed updates of %s failed", doc_id)
                self._inflight_done, self._inflight_count = None, 0
                metrics.PENDING_UPDATES.dec(len(batch))
                if done is not None and not done.done():
                    done.set_result(None)
        finally:
            self._writer = None

    async def _append(self, batch: dict[str, list[bytes]]) -> dict[str, Appended]:
        # The database is the only durable copy, so an append is retried until it
        # succeeds; meanwhile nothing is relayed and readiness reports the failure.
        delay = 0.05
        while True:
            started = time.monotonic()
            try:
                appended = await self.store.append(batch)
            except Exception as error:
                metrics.DB_FAILURES.labels("append").inc()
                if not self.failing:
                    logger.error("appending updates failed, retrying: %s", error)
                self.failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            metrics.DB_APPEND_SECONDS.observe(time.monotonic() - started)
            metrics.DB_APPEND_BATCH.observe(sum(len(updates) for updates in batch.values()))
            if self.failing:
                logger.warning("appending updates works again")
            self.failing = False
            return appended

    async def drain(self) -> None:
        """Wait until nothing is pending (used at shutdown)."""
        while self._writer is not None:
            await self.barrier()
            await asyncio.sleep(0)
