"""The real WebSocket edge in one test process: DocumentConsumer, Session, Room, RoomRegistry,
the journal on PostgreSQL and the fan-out on a real Redis, without the ASGI test harness.

A `Socket` is the client side of one connection (what the consumer sends it lands in a
pycrdt Doc); `open_socket` runs the consumer's own connect handler against it. Frames go
through `DocumentConsumer.websocket_receive`, so text frames, refusals and close codes
take exactly the production path; only the transport is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from channels.exceptions import StopConsumer
from channels_redis.pubsub import RedisPubSubChannelLayer
from collab.conf import CollabConfig
from collab.consumers import DocumentConsumer
from collab.registry import RoomRegistry
from collab.store import AsyncStore, DocumentStore
from pycrdt import Doc

from tests.fuzz.frames import MAX_DOCUMENT_BYTES, MAX_FRAME_BYTES, read_varint, step1_frame
from tests.support.processes import RedisServer

PREFIX = "collabfuzz"
_ids = itertools.count()


def make_registry(redis: RedisServer, **overrides: Any) -> RoomRegistry:
    """A registry like a worker's, with the fuzz limits, over PostgreSQL and Redis."""
    settings: dict[str, Any] = {
        "channel_prefix": PREFIX,
        "heal_interval_seconds": 0.2,
        "max_frame_bytes": MAX_FRAME_BYTES,
        "max_document_bytes": MAX_DOCUMENT_BYTES,
    }
    config = CollabConfig(**(settings | overrides))
    layer = RedisPubSubChannelLayer(hosts=[redis.url], prefix=PREFIX)
    store = AsyncStore(DocumentStore(using="postgres"))
    return RoomRegistry(store=store, layer=layer, config=config)


class Socket:
    """The client end of one in-process connection."""

    def __init__(self, registry: RoomRegistry, doc_id: str) -> None:
        self.registry = registry
        self.doc_id = doc_id
        self.doc: Doc[Any] = Doc()
        self.close_code: int | None = None
        self.close_reason = ""
        self.received = 0
        # The state vectors of the SyncStep1 frames received: the greeting, and the
        # server asking again for what it lacks (after it dropped an update that waited).
        self.asked: list[bytes] = []
        self.consumer: DocumentConsumer | None = None

    async def _deliver(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            frame = message["bytes"]
            self.received += 1
            if frame[0] == 0:  # SyncStep1, SyncStep2 or Update
                length, start = read_varint(frame, 2)
                if frame[1] == 0:
                    self.asked.append(frame[start : start + length])
                else:
                    self.doc.apply_update(frame[start : start + length])
        elif kind == "websocket.close":
            self.close_code = message.get("code", 1000)
            self.close_reason = message.get("reason", "")

    async def open(self, *, sync: bool = True) -> Socket:
        registry = self.registry

        async def factory() -> RoomRegistry:
            return registry

        consumer = DocumentConsumer(registry_factory=factory)
        consumer.scope = {
            "type": "websocket",
            "path": f"/ws/docs/{self.doc_id}",
            "headers": [],
            "query_string": b"",
            "url_route": {"kwargs": {"doc_id": self.doc_id}},
        }
        consumer.base_send = self._deliver
        self.consumer = consumer
        await consumer.websocket_connect({"type": "websocket.connect"})
        assert self.close_code is None, (self.close_code, self.close_reason)
        if sync:
            await self.send(step1_frame(self.doc.get_state()))
        return self

    async def send(self, frame: bytes | str) -> int | None:
        """Hand one frame to the consumer; the close code it answered with, if any."""
        assert self.consumer is not None
        message: dict[str, Any] = {"type": "websocket.receive"}
        message["text" if isinstance(frame, str) else "bytes"] = frame
        await self.consumer.websocket_receive(message)
        return self.close_code

    async def close(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(StopConsumer):
                await self.consumer.websocket_disconnect({"type": "websocket.disconnect"})
            self.consumer = None

    @property
    def closed(self) -> bool:
        return self.close_code is not None


async def settle(registries: list[RoomRegistry]) -> None:
    """Let queued sends run and every registry's journal commit what it holds."""
    for _ in range(3):
        for registry in registries:
            await registry.journal.barrier()
        await asyncio.sleep(0)


def new_doc_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"
