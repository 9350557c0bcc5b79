"""One client's conversation with a room: the y-websocket protocol, message by message."""

from __future__ import annotations

import logging

from collab import metrics
from collab.codec import (
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    parse,
    permission_denied_frame,
)
from collab.connection import Connection
from collab.errors import BadFrame, TooLarge, UpdateWaits
from collab.registry import RoomRegistry
from collab.room import Room

logger = logging.getLogger(__name__)

_RECEIVED = {
    SyncStep1: metrics.FRAMES_RECEIVED.labels("sync_step1"),
    SyncStep2: metrics.FRAMES_RECEIVED.labels("sync_step2"),
    SyncUpdate: metrics.FRAMES_RECEIVED.labels("update"),
    AwarenessUpdate: metrics.FRAMES_RECEIVED.labels("awareness"),
    QueryAwareness: metrics.FRAMES_RECEIVED.labels("query_awareness"),
}
_RECEIVED_INVALID = metrics.FRAMES_RECEIVED.labels("invalid")

# Updates depending on changes the server lacks that one connection may send before it
# is closed (4400). An honest client sends a few just after it reconnects (edits typed
# before its sync brings what they build on); each costs the room a reload.
MAX_WAITING_UPDATES = 8
_DROPPED_WAITING = metrics.REFUSED_FRAMES.labels("waiting_update")


class Session:
    """Hands one connection's frames to its room; raises CollabError to end the connection."""

    __slots__ = ("connection", "open", "read_only", "registry", "room", "waiting_updates")

    def __init__(
        self,
        registry: RoomRegistry,
        room: Room,
        connection: Connection,
        *,
        read_only: bool = False,
    ) -> None:
        self.registry = registry
        self.room = room
        self.connection = connection
        self.read_only = read_only
        self.open = False
        self.waiting_updates = 0

    def start(self) -> None:
        """Join the room and greet the client with our state vector and everyone's presence."""
        self.room.add_peer(self.connection)
        self.open = True
        self.registry.connections += 1
        metrics.CONNECTIONS.inc()
        for frame in self.room.greeting():
            self.connection.send(frame)

    async def receive(self, frame: bytes) -> None:
        """Handle one binary frame from the client."""
        if self.room.damaged:
            await self.registry.settled(self.room)
        config = self.registry.config
        if len(frame) > config.max_frame_bytes:
            raise TooLarge(f"frame of {len(frame)} bytes exceeds {config.max_frame_bytes}")
        try:
            message = parse(frame)
        except BadFrame:
            _RECEIVED_INVALID.inc()
            raise
        _RECEIVED[type(message)].inc()
        if isinstance(message, SyncUpdate):
            if self.read_only:
                self._refuse_write()
            else:
                self._accept_update(message.update)
        elif isinstance(message, SyncStep1):
            await self._answer_sync(message.state_vector)
        elif isinstance(message, SyncStep2):
            # Every client answers our SyncStep1, read-only ones too: theirs is ignored.
            if not self.read_only:
                self._accept_update(message.update)
        elif isinstance(message, AwarenessUpdate):
            await self._accept_awareness(message.payload, frame)
        elif isinstance(message, QueryAwareness):
            snapshot = self.room.awareness_snapshot()
            if snapshot is not None:
                self.connection.send(snapshot)

    def _refuse_write(self) -> None:
        # The y-websocket provider reports this and carries on receiving.
        logger.info(
            "refused an update from read-only connection %s on %s",
            self.connection.conn_id,
            self.room.doc_id,
        )
        metrics.REFUSED_FRAMES.labels("read_only").inc()
        self.connection.send(permission_denied_frame("read-only access"))

    def _accept_update(self, update: bytes) -> None:
        try:
            self.registry.accept_update(self.room, update, self.connection)
        except UpdateWaits:
            self.waiting_updates += 1
            if self.waiting_updates > MAX_WAITING_UPDATES:
                raise
            _DROPPED_WAITING.inc()
            logger.debug(
                "dropped an update of %s that depends on changes %s lacks; asked for them",
                self.connection.conn_id,
                self.room.doc_id,
            )

    async def _answer_sync(self, state_vector: bytes) -> None:
        # A joiner must receive everything any process relayed before its sync, and
        # nothing that is not durable yet.
        await self.registry.freshen(self.room)
        await self.registry.journal.barrier()
        # A refused update may have damaged the room while we waited.
        await self.registry.settled(self.room)
        if self.open:
            self.connection.send(self.room.sync_step2(state_vector))

    async def _accept_awareness(self, payload: bytes, frame: bytes) -> None:
        if len(payload) > self.registry.config.max_awareness_bytes:
            raise TooLarge("awareness update too large")
        self.room.apply_awareness(payload, self.connection)
        self.room.broadcast(frame, exclude=self.connection)
        self.registry.publish_awareness(self.room, payload)

    async def close(self) -> None:
        """Leave the room: remove our presence everywhere and release the room."""
        if not self.open:
            return
        self.open = False
        self.registry.connections -= 1
        metrics.CONNECTIONS.dec()
        payload = self.room.remove_peer(self.connection)
        if payload is not None:
            self.registry.publish_awareness(self.room, payload)
        await self.registry.release(self.room)
