"""A pycrdt peer on Channels' WebsocketCommunicator, for in-process consumer tests."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.testing import WebsocketCommunicator
from pycrdt import (
    Awareness,
    Doc,
    Text,
    TransactionEvent,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    handle_sync_message,
    read_message,
)


class Peer:
    """A client of the consumer that speaks y-websocket through the ASGI test harness."""

    def __init__(self, application: Any, doc_id: str) -> None:
        self.communicator = WebsocketCommunicator(application, f"/ws/docs/{doc_id}")
        self.doc: Doc = Doc()
        self.text = self.doc.get("text", type=Text)
        self.awareness = Awareness(self.doc)
        self.frames: list[bytes] = []
        self.close_code: int | None = None
        self._outbox: list[bytes] = []
        self._remote = False
        self.doc.observe(self._on_change)

    def _on_change(self, event: TransactionEvent) -> None:
        if not self._remote:
            self._outbox.append(create_update_message(event.update))

    async def connect(self) -> Peer:
        connected, _ = await self.communicator.connect(timeout=5)
        assert connected
        await self.communicator.send_to(bytes_data=create_sync_message(self.doc))
        await self.pump_until(lambda: any(f[:2] == b"\x00\x01" for f in self.frames))
        return self

    async def push(self) -> None:
        """Send every local edit made since the last push."""
        while self._outbox:
            await self.communicator.send_to(bytes_data=self._outbox.pop(0))

    async def send_raw(self, data: bytes | str) -> None:
        if isinstance(data, str):
            await self.communicator.send_to(text_data=data)
        else:
            await self.communicator.send_to(bytes_data=data)

    async def set_presence(self, state: dict[str, Any] | None) -> None:
        self.awareness.set_local_state(state)
        payload = self.awareness.encode_awareness_update([self.awareness.client_id])
        await self.communicator.send_to(bytes_data=create_awareness_message(payload))

    def remote_presence(self) -> dict[int, Any]:
        return {
            cid: state
            for cid, state in self.awareness.states.items()
            if cid != self.awareness.client_id
        }

    async def receive_one(self, timeout: float) -> bool:
        """Handle one incoming event; False when nothing came within `timeout`."""
        try:
            message = (
                await self.communicator.output_queue.get()
                if timeout is None
                else (await asyncio.wait_for(self.communicator.output_queue.get(), timeout))
            )
        except TimeoutError:
            return False
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            return True
        frame = message.get("bytes")
        if frame is None:
            return True
        self.frames.append(frame)
        if frame[0] == 0:
            self._remote = True
            try:
                reply = handle_sync_message(frame[1:], self.doc)
            finally:
                self._remote = False
            if reply is not None:
                await self.communicator.send_to(bytes_data=reply)
        elif frame[0] == 1:
            self.awareness.apply_awareness_update(read_message(frame[1:]), "remote")
        return True

    async def pump_until(self, predicate: Any, timeout: float = 5) -> None:
        """Process incoming frames until `predicate()` holds, or fail after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"condition not met within {timeout}s")
            await self.receive_one(min(remaining, 0.05))

    async def drain(self, quiet: float = 0.2) -> None:
        """Process frames until none arrive for `quiet` seconds."""
        while await self.receive_one(quiet):
            pass

    async def close(self) -> None:
        await self.communicator.disconnect()
