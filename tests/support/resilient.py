"""A y-websocket client that keeps editing through faults, as the browser provider does.

`ResilientWriter` is a `YClient` that never gives up: when its socket closes (or a
connection attempt fails) it backs off, reconnects, and resyncs, keeping its local
document and every edit the server has not confirmed. Like the `y-websocket` provider:

- the document lives in the client, not in the connection: edits made while
  disconnected stay in it and reach the server through the sync handshake (the server's
  SyncStep1 is answered with a SyncStep2 holding everything the server lacks);
- reconnects back off exponentially, 100 ms after a connection that was up, then
  200, 400, ... up to 2.5 s after attempts that never completed a sync;
- with several URLs (several gateways behind a load balancer), each new attempt goes
  to the next one.

While `editing`, it inserts a unique token (`<name>.<n>;`) at a random token boundary
every `interval` seconds, connected or not, and remembers every token in `inserted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass

import websockets

from tests.support.yclient import YClient

# Errors a connection attempt may end with while servers die, drain or refuse.
CONNECT_ERRORS = (OSError, TimeoutError, websockets.InvalidHandshake, websockets.ConnectionClosed)
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 2.5


def split_tokens(text: str) -> list[str]:
    """The tokens of a text written by writers (`a.0;b.3;...`), in order."""
    return [token for token in text.split(";") if token]


@dataclass(frozen=True, slots=True)
class Disconnect:
    """One end of a synced connection, as the writer saw it."""

    at: float  # time.monotonic()
    url: str
    upstream: str  # the editor the gateway relayed to ("" when connected directly)
    code: int | None
    reason: str


class ResilientWriter(YClient):
    """A client that keeps inserting unique tokens and reconnects on every close."""

    def __init__(
        self,
        name: str,
        urls: list[str],
        *,
        interval: float = 0.1,
        seed: int | None = None,
        sync_timeout: float = 5.0,
    ) -> None:
        if not urls:
            raise ValueError("a writer needs at least one URL")
        super().__init__(urls[0], name=name)
        self.urls = list(urls)
        self.interval = interval
        self.sync_timeout = sync_timeout
        self.rng = random.Random(seed if seed is not None else name)
        self.inserted: list[str] = []
        self.inserted_at: dict[str, float] = {}  # token -> time.monotonic() of the insert
        self.editing = False
        self.online = False  # connected and synced right now
        self.online_since = 0.0
        self.connects = 0  # connections that completed a sync
        self.failed_attempts = 0
        self.disconnects: list[Disconnect] = []
        self.current_upstream = ""  # base URL of the editor serving the latest connection
        # The server process (X-Collab-Instance) of the latest connection; only known when
        # connected straight to an editor (the gateway does not pass the header on).
        self.current_process = ""
        # token -> (editor, process) serving the writer when it inserted the token, or
        # None when it was offline then.
        self.inserted_on: dict[str, tuple[str, str] | None] = {}
        self._attempt = 0
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._editor: asyncio.Task[None] | None = None

    # Life cycle -----------------------------------------------------------------------

    def start(self, *, editing: bool = True) -> ResilientWriter:
        """Start connecting (and, by default, editing) in background tasks."""
        self._runner = asyncio.create_task(self._connect_forever(), name=f"{self.name}-conn")
        if editing:
            self.start_editing()
        return self

    def start_editing(self) -> None:
        if self._editor is None:
            self.editing = True
            self._editor = asyncio.create_task(self._edit_forever(), name=f"{self.name}-edit")

    async def stop_editing(self) -> None:
        """Stop inserting; the connection (and resync) goes on."""
        self.editing = False
        if self._editor is not None:
            self._editor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._editor
            self._editor = None

    async def wait_online(self, timeout: float = 10) -> None:
        """Wait until the writer is connected and synced (fails with a clear message)."""
        deadline = time.monotonic() + timeout
        while not self.online:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"writer {self.name} not connected after {timeout}s "
                    f"({self.failed_attempts} failed attempts, last disconnects "
                    f"{self.disconnects[-3:]})"
                )
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Stop editing and reconnecting, and close the socket."""
        self._stopping = True
        await self.stop_editing()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        await self._discard_connection()

    # State ----------------------------------------------------------------------------

    def tokens(self) -> list[str]:
        """Every token in this client's copy of the document, in document order."""
        return split_tokens(str(self.text))

    def token_counts(self) -> Counter[str]:
        return Counter(self.tokens())

    # Internals ------------------------------------------------------------------------

    async def _edit_forever(self) -> None:
        while True:
            token = f"{self.name}.{len(self.inserted)}"
            text = str(self.text)
            # Only at token boundaries, so that every token stays whole in every copy.
            boundaries = [0] + [index + 1 for index, char in enumerate(text) if char == ";"]
            self.text.insert(self.rng.choice(boundaries), token + ";")
            self.inserted.append(token)
            self.inserted_at[token] = time.monotonic()
            self.inserted_on[token] = (
                (self.current_upstream, self.current_process) if self.online else None
            )
            await asyncio.sleep(self.interval)

    async def _connect_forever(self) -> None:
        failures = 0
        while not self._stopping:
            url = self.urls[self._attempt % len(self.urls)]
            self._attempt += 1
            if not await self._open(url):
                failures += 1
                self.failed_attempts += 1
                await asyncio.sleep(min(FIRST_BACKOFF * 2**failures, MAX_BACKOFF))
                continue
            failures = 0
            self.connects += 1
            self.online = True
            self.online_since = time.monotonic()
            # The editor serving us: the gateway names it; a direct URL is its own.
            self.current_upstream = self.upstream or "http" + url[2:].split("/ws/", 1)[0]
            self.current_process = "" if self.upstream else self.instance
            await self.closed.wait()
            self.online = False
            self.disconnects.append(
                Disconnect(
                    time.monotonic(), url, self.current_upstream, self.close_code, self.close_reason
                )
            )
            await self._discard_connection()
            await asyncio.sleep(FIRST_BACKOFF)

    async def _open(self, url: str) -> bool:
        """One connection attempt: True once synced, False (cleaned up) otherwise."""
        self.url = url
        try:
            await asyncio.wait_for(self.connect(wait_synced=False), self.sync_timeout)
            synced = asyncio.ensure_future(self.synced.wait())
            closed = asyncio.ensure_future(self.closed.wait())
            try:
                await asyncio.wait(
                    {synced, closed},
                    timeout=self.sync_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                synced.cancel()
                closed.cancel()
            if self.synced.is_set() and not self.closed.is_set():
                return True
        except CONNECT_ERRORS:
            pass
        await self._discard_connection()
        return False

    async def _discard_connection(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.ws is not None:
            ws, self.ws = self.ws, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
