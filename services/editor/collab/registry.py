"""Every room of this process: load each document once, relay, heal, unload when unused.

The orchestrator of one process. It owns the journal (durability), the fan-out
(other processes) and the heal loop that repairs whatever the fan-out missed: Redis
is transport and may lose messages at any time; the update log in the database is
the truth every room converges to.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from collab_common.logs import detached

from collab import metrics
from collab.codec import awareness_frame, sync_step1_frame, update_frame
from collab.conf import CollabConfig
from collab.errors import BadUpdate, CollabError, Unavailable, UpdateWaits
from collab.events import AwarenessEvent, AwarenessQueryEvent, Event, UpdateEvent
from collab.fanout import Fanout
from collab.journal import Journal, Pending
from collab.room import Peer, Room, SeqTracker
from collab.store import Appended, AsyncStore, Tail

logger = logging.getLogger(__name__)


class RoomRegistry:
    """The rooms of one process and the machinery they share."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        layer: Any,
        config: CollabConfig,
        origin: str | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.origin = origin or uuid.uuid4().hex
        self.rooms: dict[str, Room] = {}
        self.journal = Journal(store, self._committed, max_pending=config.max_pending_updates)
        self.fanout = Fanout(
            layer, prefix=config.channel_prefix, origin=self.origin, deliver=self._deliver
        )
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._unloading: dict[str, asyncio.Task[None]] = {}
        # Remote events for documents being loaded; applied once the stored state is in.
        self._buffered: dict[str, list[Event]] = {}
        self._unsubscribed: set[str] = set()
        self._compacting: set[str] = set()
        self._rebuilding: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.connections = 0

    # Life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start receiving from other processes and healing."""
        await self.fanout.start()
        self._loops = [
            asyncio.create_task(self._heal_forever(), name="collab-heal", context=detached()),
        ]

    async def stop(self) -> None:
        """Make everything pending durable, then stop the background work."""
        await self.journal.drain()
        for task in self._loops:
            task.cancel()
        await self.fanout.stop()
        if self._background:
            await asyncio.wait(self._background, timeout=10)
        await self.store.close()

    # Acquire and release --------------------------------------------------------------

    async def acquire(self, doc_id: str) -> Room:
        """The room of `doc_id`, loaded once however many callers arrive together."""
        while True:
            room = self.rooms.get(doc_id)
            if room is not None:
                # Also a room whose unload still waits for the journal (a database
                # outage can make that long): the unload sees the new holder and stops.
                room.holders += 1
                return room
            unloading = self._unloading.get(doc_id)
            if unloading is not None:
                await asyncio.shield(unloading)
                continue
            loading = self._loading.get(doc_id)
            if loading is not None:
                await asyncio.shield(loading)
                continue
            done = asyncio.get_running_loop().create_future()
            self._loading[doc_id] = done
            try:
                room = await self._load(doc_id)
            finally:
                del self._loading[doc_id]
                done.set_result(None)
            room.holders += 1
            return room

    async def _load(self, doc_id: str) -> Room:
        started = time.monotonic()
        room = Room(doc_id, max_document_bytes=self.config.max_document_bytes)
        self._buffered[doc_id] = []
        try:
            # Subscribe before reading, so that nothing published in between is missed.
            if not await self.fanout.join(doc_id):
                self._unsubscribed.add(doc_id)
            tail = await self.store.read_since(doc_id, 0)
            self._install(room, tail)
            for event in self._buffered.pop(doc_id):
                self._apply_event(room, event)
        except BaseException:
            metrics.DB_FAILURES.labels("load").inc()
            self._buffered.pop(doc_id, None)
            self._unsubscribed.discard(doc_id)
            await self.fanout.leave(doc_id)
            raise
        self.rooms[doc_id] = room
        metrics.ROOMS.inc()
        metrics.ROOM_LOAD_SECONDS.observe(time.monotonic() - started)
        metrics.ROOM_LOAD_BYTES.observe(tail.size_bytes)
        # Presence is never stored: ask the processes already serving the document.
        self.fanout.publish_soon(
            AwarenessQueryEvent(type="collab.awareness_query", doc=doc_id, origin=self.origin)
        )
        logger.debug("loaded document %s at seq %d", doc_id, room.seq.watermark)
        return room

    def _install(self, room: Room, stored: Tail) -> None:
        """Make the whole stored document the room's (a load, or a rebuild)."""
        if not room.replace_doc(stored.update):
            logger.error("stored document %s does not apply whole; serving what does", room.doc_id)
        room.seq = SeqTracker(stored.last_seq)
        room.size_bytes = stored.size_bytes

    def _apply_stored(self, room: Room, update: bytes) -> bytes | None:
        """Apply an update that is already durable; return what it changed in the room."""
        try:
            return room.apply_update(update, from_client=False)
        except BadUpdate as error:
            logger.error("stored update of %s does not apply: %s", room.doc_id, error)
            return error.partial  # what yrs integrated stays: local peers need it too

    async def release(self, room: Room) -> None:
        """Drop one hold on the room; the last one flushes and unloads it."""
        room.holders -= 1
        if room.holders > 0 or room.doc_id in self._unloading:
            return
        task = asyncio.create_task(self._unload(room))
        self._unloading[room.doc_id] = task
        await asyncio.shield(task)

    async def _unload(self, room: Room) -> None:
        try:
            # Never unload a room with a save pending (its updates must reach the log) or
            # a rebuild under way (a holder that came and went meanwhile may have begun one).
            while True:
                await self.settled(room)
                await self.journal.barrier()
                if room.doc_id not in self._rebuilding:
                    break
            if room.holders > 0:
                return  # someone joined meanwhile: the room stays
            del self.rooms[room.doc_id]
            metrics.ROOMS.dec()
            room.close()
            self._unsubscribed.discard(room.doc_id)
            await self.fanout.leave(room.doc_id)
            self._compact_soon(room.doc_id)
            logger.debug("unloaded document %s", room.doc_id)
        finally:
            del self._unloading[room.doc_id]

    # Local updates --------------------------------------------------------------------

    def accept_update(self, room: Room, update: bytes, sender: Any) -> asyncio.Future[None] | None:
        """Apply a client's update; make what it changed durable and relay it.

        Returns the future of that, or None when the update changed nothing. Raises
        Unavailable before touching the room when storage is behind, and BadUpdate for
        an update the room refuses (after submitting the part of it that applied). A
        room it damages is rebuilt from the store; callers wait for `settled` first.
        """
        if room.damaged:
            raise Unavailable("the document is being reloaded; retry shortly")
        self.journal.check_capacity()
        try:
            change = room.apply_update(update)
        except BadUpdate as error:
            if error.partial is not None:
                self.submit(room, error.partial, update_frame(error.partial), sender)
            if isinstance(error, UpdateWaits):
                # The sender is asked for what the room lacks once it is rebuilt.
                self._rebuild_soon(room, "an update depended on changes it lacks", sender)
            elif room.damaged:
                self._rebuild_soon(room, "a refused update left part of itself in memory")
            raise
        if change is None:
            return None
        metrics.UPDATE_BYTES.inc(len(change))
        # Peers get what the room gained, not the update as received: that may be less
        # (parts the room had) or more (structs it held back, released by this update).
        return self.submit(room, change, update_frame(change), sender)

    def submit(self, room: Room, change: bytes, frame: bytes, sender: Any) -> asyncio.Future[None]:
        """Make an applied change durable, then relay `frame` to local peers but the sender."""
        return self.journal.submit(Pending(room.doc_id, change, frame, sender))

    async def _committed(self, doc_id: str, items: list[Pending], appended: Appended) -> None:
        room = self.rooms.get(doc_id)
        if room is not None:
            room.seq.note(appended.first_seq, appended.last_seq)
            room.size_bytes = appended.size_bytes
            for item in items:
                room.broadcast(item.frame, exclude=item.sender)
            now = time.monotonic()
            for item in items:
                metrics.FANOUT_SECONDS.observe(now - item.received_at)
        self.fanout.publish_soon(
            UpdateEvent(
                type="collab.update",
                doc=doc_id,
                origin=self.origin,
                first_seq=appended.first_seq,
                last_seq=appended.last_seq,
                updates=[item.update for item in items],
                sent_at=time.time(),
            )
        )
        if appended.log_count >= self.config.compact_after_updates:
            self._compact_soon(doc_id)

    def publish_awareness(self, room: Room, payload: bytes) -> None:
        """Send an awareness payload to the other processes watching the room."""
        self.fanout.publish_soon(
            AwarenessEvent(
                type="collab.awareness", doc=room.doc_id, origin=self.origin, payload=payload
            )
        )

    # Remote events --------------------------------------------------------------------

    def _deliver(self, event: Event) -> None:
        doc_id = event["doc"]
        buffered = self._buffered.get(doc_id)
        if buffered is not None:
            buffered.append(event)
            return
        room = self.rooms.get(doc_id)
        if room is not None:
            self._apply_event(room, event)

    def _apply_event(self, room: Room, event: Event) -> None:
        if event["type"] == "collab.update":
            self.collab_update(room, event)
        elif event["type"] == "collab.awareness":
            self.collab_awareness(room, event)
        elif event["type"] == "collab.awareness_query":
            self.collab_awareness_query(room)

    def collab_update(self, room: Room, event: UpdateEvent) -> None:
        """Apply durable updates from another process and pass on what is new here."""
        for update in event["updates"]:
            change = self._apply_stored(room, update)
            if change is not None:
                # What the room gained, not the update as received: an update that
                # arrives after one that depended on it (fan-out messages of different
                # processes can cross) also releases that one, and local peers need both.
                room.broadcast(update_frame(change))
        room.seq.note(event["first_seq"], event["last_seq"])
        metrics.RELAY_SECONDS.observe(max(0.0, time.time() - event["sent_at"]))

    def collab_awareness(self, room: Room, event: AwarenessEvent) -> None:
        """Apply presence from another process and pass it on to local peers."""
        try:
            room.apply_awareness(event["payload"], None)
        except CollabError as error:
            logger.warning("awareness event for %s does not apply: %s", room.doc_id, error)
            return
        room.broadcast(awareness_frame(event["payload"]))

    def collab_awareness_query(self, room: Room) -> None:
        """Answer another process's query with the presence of our own peers."""
        payload = room.local_awareness()
        if payload is not None:
            self.publish_awareness(room, payload)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine, context=detached())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # Rebuilding -----------------------------------------------------------------------

    async def settled(self, room: Room) -> None:
        """Wait until the room's Doc may be read: not while it is being rebuilt."""
        while (rebuilding := self._rebuilding.get(room.doc_id)) is not None:
            await asyncio.shield(rebuilding)

    def _rebuild_soon(self, room: Room, reason: str, resync: Peer | None = None) -> None:
        if room.doc_id in self._rebuilding:
            return
        # From now on the room's sessions wait (`damaged`) and events from other
        # processes wait, as during a load: the damaged Doc must not take anything in
        # (after a yrs panic, applying to it can hang).
        room.damaged = True
        self._buffered[room.doc_id] = []
        self._rebuilding[room.doc_id] = self._spawn(self._rebuild(room, reason, resync))

    async def _rebuild(self, room: Room, reason: str, resync: Peer | None) -> None:
        """Replace a damaged Doc with the stored document, once it holds all accepted here."""
        doc_id = room.doc_id
        started = time.monotonic()
        delay = 0.05
        try:
            while True:
                try:
                    await self.journal.barrier()
                    tail = await self.store.read_since(doc_id, 0)
                    # What local peers lack: updates of other processes whose events wait
                    # in the buffer. Read second, so that it covers all the first read has.
                    missed = await self.store.read_since(doc_id, room.seq.watermark)
                    break
                except Exception as error:
                    metrics.DB_FAILURES.labels("load").inc()
                    if delay == 0.05:
                        logger.warning("cannot reload document %s yet: %s", doc_id, error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            self._install(room, tail)
            if missed.update is not None:
                # The room must hold all it relays: the second read may be newer. It
                # starts at or before the first read's end, so the numbering stays whole.
                self._apply_stored(room, missed.update)
                room.seq.note(tail.last_seq + 1, missed.last_seq)
                room.size_bytes = missed.size_bytes
                room.broadcast(update_frame(missed.update))
            if resync is not None and resync in room.peers:
                # Its update was dropped with the old Doc: y-websocket clients answer a
                # SyncStep1 with everything the room lacks, that update included.
                resync.send(sync_step1_frame(room.doc.get_state()))
            metrics.ROOM_REBUILDS.inc()
            # Updates that wait follow every reconnect of a client that was typing; a
            # refused update that damaged the room comes from a broken or hostile client.
            logger.log(
                logging.INFO if resync is not None else logging.WARNING,
                "reloaded document %s from the store: %s (%.3f s)",
                doc_id,
                reason,
                time.monotonic() - started,
            )
        finally:
            del self._rebuilding[doc_id]
            for event in self._buffered.pop(doc_id, []):
                self._apply_event(room, event)

    # Healing --------------------------------------------------------------------------

    async def freshen(self, room: Room) -> None:
        """Bring the room up to the log's newest update (before a late joiner's sync).

        Raises Unavailable when the database cannot say: a joiner must not be told it
        is complete without that check.
        """
        try:
            latest = await self.store.last_seqs([room.doc_id])
            if latest.get(room.doc_id, 0) > room.seq.watermark:
                await self.catch_up(room, healing=False)
        except CollabError:
            raise
        except Exception as error:
            metrics.DB_FAILURES.labels("load").inc()
            logger.warning("cannot check document %s for a joiner: %s", room.doc_id, error)
            raise Unavailable("the document store is unavailable; retry shortly") from None

    async def catch_up(self, room: Room, *, healing: bool = True) -> None:
        """Read what the room lacks from the log, apply it and pass it on to local peers."""
        start = room.seq.watermark
        tail = await self.store.read_since(room.doc_id, start)
        if tail.update is None or room.damaged:
            return  # a damaged room is being rebuilt from the store anyway
        change = room.apply_update(tail.update, from_client=False)
        if change is not None:
            room.broadcast(update_frame(change))
            if healing:
                metrics.HEAL_EVENTS.inc()
            # A joiner reading ahead of an in-flight fan-out message is routine; the heal
            # loop finding a room behind means a message was lost, which operators want to see.
            logger.log(
                logging.INFO if healing else logging.DEBUG,
                "caught up document %s from seq %d to %d from the log",
                room.doc_id,
                start,
                tail.last_seq,
            )
        room.seq.note(start + 1, tail.last_seq)
        room.size_bytes = tail.size_bytes

    async def heal(self) -> None:
        """One round: resubscribe where needed and catch up every room behind the log."""
        for doc_id in list(self._unsubscribed):
            if doc_id in self.rooms and await self.fanout.join(doc_id):
                self._unsubscribed.discard(doc_id)
        if not self.rooms:
            return
        latest = await self.store.last_seqs(list(self.rooms))
        for doc_id, last_seq in latest.items():
            room = self.rooms.get(doc_id)
            if room is not None and last_seq > room.seq.watermark:
                await self.catch_up(room)

    async def _heal_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.heal_interval_seconds)
            try:
                await self.heal()
            except Exception as error:
                metrics.DB_FAILURES.labels("heal").inc()
                logger.warning("heal round failed: %s", error)

    # Compaction -----------------------------------------------------------------------

    def _compact_soon(self, doc_id: str) -> None:
        if doc_id in self._compacting:
            return
        self._compacting.add(doc_id)
        self._spawn(self._compact(doc_id))

    async def _compact(self, doc_id: str) -> None:
        started = time.monotonic()
        try:
            await self.store.compact(doc_id)
        except Exception as error:
            metrics.DB_FAILURES.labels("compact").inc()
            logger.warning("compaction of %s failed: %s", doc_id, error)
        else:
            metrics.DB_COMPACTION_SECONDS.observe(time.monotonic() - started)
        finally:
            self._compacting.discard(doc_id)
