"""The WebSocket edge: accept, acquire the room, hand frames to the session, release."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer
from collab_common.logs import conn_id_var, doc_id_var
from collab_common.ratelimit import TokenBucket
from collab_common.wsprotocol import aborter, sender_now

from collab import metrics
from collab.access import check_access
from collab.connection import Connection
from collab.docids import validate_doc_id
from collab.errors import (
    BadFrame,
    CollabError,
    Forbidden,
    InternalError,
    RateLimited,
    SlowConsumer,
    Unauthenticated,
    Unavailable,
)
from collab.registry import RoomRegistry
from collab.runtime import get_registry
from collab.session import Session

logger = logging.getLogger(__name__)


class DocumentConsumer(AsyncConsumer):
    """One y-websocket connection to one document."""

    def __init__(
        self, registry_factory: Callable[[], Awaitable[RoomRegistry]] = get_registry
    ) -> None:
        super().__init__()
        self.registry_factory = registry_factory
        self.conn_id = uuid.uuid4().hex[:12]
        self.doc_id = ""
        self.session: Session | None = None
        self.bucket: TokenBucket | None = None
        self.closing = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Rooms, not sockets, join the channel layer: a socket has no channel of its own.
        # Channels' loop (await_many_dispatch) would also keep a task per socket waiting
        # on `receive`; one plain loop does the same for a few KB less per connection.
        self.scope = scope
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' default dispatch recycles database connections on every frame (a
        # thread hop each); frames here never touch the database directly.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        elif message["type"] == "websocket.connect":
            await self.websocket_connect(message)
        elif message["type"] == "websocket.disconnect":
            await self.websocket_disconnect(message)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        """Accept, then join the document's room (close codes need an accepted socket)."""
        registry = await self.registry_factory()
        # The instance header lets operators and tests see which process serves a socket.
        await self.base_send(
            {
                "type": "websocket.accept",
                "headers": [(b"x-collab-instance", registry.origin.encode())],
            }
        )
        conn_id_var.set(self.conn_id)
        try:
            self.doc_id = validate_doc_id(self.scope["url_route"]["kwargs"]["doc_id"])
            doc_id_var.set(self.doc_id)
            grant = check_access(registry.config, self.scope, self.doc_id)
            if registry.connections >= registry.config.max_connections:
                raise Unavailable("this server is full; retry shortly")
            connection = Connection(
                self.base_send,
                conn_id=self.conn_id,
                max_queued_bytes=registry.config.send_queue_bytes,
                on_overflow=self._overflowed,
                abort=aborter(self.scope),
                send_now=sender_now(self.scope),
            )
            try:
                room = await registry.acquire(self.doc_id)
            except CollabError:
                raise
            except Exception as error:
                logger.error("cannot load document %s: %s", self.doc_id, error)
                raise Unavailable("the document cannot be loaded now") from None
            read_only = grant is not None and not grant.can_write
            self.bucket = TokenBucket(registry.config.rate_per_second, registry.config.rate_burst)
            self.session = Session(registry, room, connection, read_only=read_only)
            self.session.start()
        except CollabError as error:
            await self._refuse(error)
            return
        logger.debug("connection %s joined document %s", self.conn_id, self.doc_id)

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        """Hand a binary frame to the session; a bad one ends only this connection."""
        if self.session is None or self.closing:
            return
        frame = message.get("bytes")
        try:
            # First, before any decoding: a flood costs one clock read a frame until closed.
            if self.bucket is not None and not self.bucket.take():
                raise RateLimited()
            if frame is None:
                raise BadFrame("text frames are not part of the protocol")
            await self.session.receive(frame)
        except CollabError as error:
            await self._refuse(error)
        except Exception:
            # Never a silent drop: the client gets a close code and leaves its room.
            logger.exception("failed to handle a frame of %s", self.doc_id)
            await self._refuse(InternalError())

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Leave the room and end the consumer."""
        await self._leave()
        raise StopConsumer()

    async def _leave(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            await session.close()

    async def _refuse(self, error: CollabError) -> None:
        if self.closing:
            return
        self.closing = True
        logger.info("closing connection: %d %s", error.close_code, error.detail)
        session = self.session
        if session is None:
            metrics.REFUSED_CONNECTIONS.labels(error.label).inc()
        else:
            metrics.REFUSED_FRAMES.labels(error.label).inc()
        if isinstance(error, Unauthenticated | Forbidden):
            metrics.AUTH_FAILURES.labels(str(error.http_status)).inc()
        # Leaving may wait: the last one out of a room unloads it once the journal is
        # durable, which a database outage delays. The client hears why meanwhile.
        leaving = asyncio.ensure_future(self._leave())
        reason = error.detail
        try:
            if session is not None:
                await session.connection.close(error.close_code, reason)
            else:
                await self.base_send(
                    {"type": "websocket.close", "code": error.close_code, "reason": reason[:120]}
                )
        finally:
            await leaving

    def _overflowed(self) -> None:
        # Called from inside a fan-out loop: close from a task of its own.
        asyncio.get_running_loop().create_task(
            self._refuse(SlowConsumer("the client does not read fast enough"))
        )
