"""A y-websocket client on pycrdt and websockets: the Python peer of the tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import websockets
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


class YClient:
    """One document connection; edits made on `doc` are sent, remote ones applied."""

    def __init__(self, url: str, *, name: str = "client") -> None:
        self.url = url
        self.name = name
        self.doc: Doc = Doc()
        self.text = self.doc.get("text", type=Text)
        self.awareness = Awareness(self.doc)
        self.synced = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.received_frames: list[bytes] = []
        self._applying_remote = False
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self.ws: Any = None
        self.doc.observe(self._on_local_change)

    def _on_local_change(self, event: TransactionEvent) -> None:
        if not self._applying_remote:
            self._outbox.put_nowait(create_update_message(event.update))

    async def connect(
        self,
        *,
        wait_synced: bool = True,
        timeout: float = 10,
        headers: dict[str, str] | None = None,
    ) -> YClient:
        """Open the socket, start the handshake and (by default) wait for SyncStep2."""
        self.synced.clear()
        self.closed.clear()
        self.close_code = None
        self.ws = await websockets.connect(
            self.url, max_size=None, compression=None, additional_headers=headers
        )
        self._tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._write()),
        ]
        try:
            await self.ws.send(create_sync_message(self.doc))
        except websockets.ConnectionClosed:
            if wait_synced:
                raise
        if wait_synced:
            await self._wait_synced(timeout)
        return self

    async def _wait_synced(self, timeout: float) -> None:
        # A refused socket (a full worker closes with 1013) must fail at once and say
        # why, not after the whole timeout.
        synced = asyncio.ensure_future(self.synced.wait())
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait({synced, closed}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            synced.cancel()
            closed.cancel()
        if self.synced.is_set():
            return
        if self.closed.is_set():
            raise ConnectionError(
                f"{self.url} closed before sync: {self.close_code} {self.close_reason}"
            )
        raise TimeoutError(f"{self.url} did not sync within {timeout} s")

    async def reconnect(self, url: str | None = None, *, timeout: float = 10) -> YClient:
        """Reconnect as the y-websocket provider does, keeping the document and its edits."""
        for task in self._tasks:
            task.cancel()
        if url is not None:
            self.url = url
        return await self.connect(timeout=timeout)

    @property
    def upstream(self) -> str:
        """The editor a gateway relays this socket to (the gateway's handshake header)."""
        return str(self.ws.response.headers.get("x-collab-upstream", ""))

    @property
    def instance(self) -> str:
        """The server process serving this socket (from the handshake's response header)."""
        return str(self.ws.response.headers.get("x-collab-instance", ""))

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, str):
                    continue
                self.received_frames.append(frame)
                if frame[0] == 0:
                    self._applying_remote = True
                    try:
                        reply = handle_sync_message(frame[1:], self.doc)
                    finally:
                        self._applying_remote = False
                    if frame[1] == 1:
                        self.synced.set()
                    if reply is not None:
                        await self.ws.send(reply)
                elif frame[0] == 1:
                    self.awareness.apply_awareness_update(read_message(frame[1:]), "remote")
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.ws.close_code is not None:
                self.close_code = self.ws.close_code
                self.close_reason = self.ws.close_reason or ""
            self.closed.set()

    async def _write(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                frame = await self._outbox.get()
                await self.ws.send(frame)

    async def send_raw(self, frame: bytes | str) -> None:
        """Send a frame as is (for malformed-input tests)."""
        await self.ws.send(frame)

    def insert(self, text: str, index: int | None = None) -> None:
        """Insert text into the shared Y.Text (at the end by default)."""
        self.text.insert(len(self.text) if index is None else index, text)

    async def set_presence(self, state: dict[str, Any] | None) -> None:
        """Publish our awareness state (None announces that we left)."""
        self.awareness.set_local_state(state)
        payload = self.awareness.encode_awareness_update([self.awareness.client_id])
        await self.ws.send(create_awareness_message(payload))

    def remote_presence(self) -> dict[int, dict[str, Any]]:
        """Awareness states of everyone but us."""
        return {
            client_id: state
            for client_id, state in self.awareness.states.items()
            if client_id != self.awareness.client_id
        }

    async def flushed(self, timeout: float = 10) -> None:
        """Wait until every local edit has been handed to the socket."""
        deadline = time.monotonic() + timeout
        while not self._outbox.empty():
            if time.monotonic() > deadline:
                raise TimeoutError("outbox did not drain")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Close the socket and stop the client's tasks."""
        if self.ws is not None:
            await self.ws.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def wait_until(
    predicate: Callable[[], bool], *, timeout: float = 10, interval: float = 0.02, what: str = ""
) -> float:
    """Poll `predicate` until it holds; return the seconds it took or fail after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


async def clients_on_distinct_workers(url: str, wanted: int, attempts: int = 200) -> list[YClient]:
    """Connect to `url` until clients sit on `wanted` different server processes.

    A socket landing on a process already chosen is closed at once, so that no process
    fills up (and refuses) while the kernel keeps handing connections to the same one.
    """
    chosen: dict[str, YClient] = {}
    for _ in range(attempts):
        client = await YClient(url).connect()
        if client.instance in chosen:
            await client.close()
            continue
        chosen[client.instance] = client
        if len(chosen) == wanted:
            return list(chosen.values())
    for client in chosen.values():
        await client.close()
    raise AssertionError(f"{attempts} connections never spread over {wanted} processes")
