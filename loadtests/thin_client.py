"""A y-websocket connection that costs the generator almost nothing: `ThinClient`.

Fan-out and idle scenarios hold hundreds or thousands of connections on one generator
core. A full client (`harness.LoadClient`: `websockets` + a pycrdt Doc) spends tens of
microseconds per received frame, so a generator made of them saturates long before a
fast server does. A thin client speaks just enough of RFC 6455 and y-websocket to be a
real, synced peer, straight on an asyncio Protocol:

- it sends SyncStep1 for an empty document and answers the server's SyncStep1 with an
  empty SyncStep2, as a fresh browser would; it never writes;
- it answers pings (the reference server drops peers that do not) and close frames;
- it applies nothing: every update frame is scanned for stamps (`<writer:seq:sent-ns>`,
  the text `LoadClient.insert_stamped` inserts, which a Yjs update carries as plain
  UTF-8) and each stamp becomes a delivery with the time the bytes were read.

It cannot check convergence (it holds no document); scenarios pair thin clients with full
ones, and use thin clients' stamp sets to detect lost deliveries.

With `keep=True` it only keeps what it reads (time, payload) and scans nothing: a late
joiner receiving a large document then costs the generator a copy, so twenty of them
joining at once are timed by when their bytes arrived, not by the order in which one
generator core got round to them. `replay()` scans the kept frames afterwards, and
`kept_updates()` gives the Yjs updates to rebuild the document with pycrdt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import time
import urllib.parse
from typing import cast

MESSAGE_SYNC = 0
SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2
# SyncStep1 with an empty state vector, and SyncStep2 with an empty update.
EMPTY_SYNC_STEP1 = bytes((MESSAGE_SYNC, SYNC_STEP1, 1, 0))
EMPTY_SYNC_STEP2 = bytes((MESSAGE_SYNC, SYNC_STEP2, 2, 0, 0))

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_STAMP_BYTES = re.compile(rb"<([A-Za-z0-9_.-]+):(\d+):(\d+)>")
_MAX_HEAD_BYTES = 16384


def encode_client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame, as RFC 6455 requires of clients."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    # XOR the whole payload at once as one big integer: no per-byte Python loop.
    key = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    return head + mask + masked


class ThinClient(asyncio.Protocol):
    """One y-websocket connection to `url` that counts stamps instead of applying updates.

    After `connect()`: `deliveries` holds (sent_ns, received_ns) per stamp read in an
    update frame, `seen` the (writer, seq) of each stamp, `redelivered` how many stamps
    came a second time, `update_frames` the update frames read.
    """

    def __init__(self, url: str, name: str, *, keep: bool = False) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "ws" or parsed.hostname is None:
            raise ValueError(f"a ws:// URL is needed, not {url!r}")
        self.url = url
        self.name = name
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.path = parsed.path or "/"
        self.started_ns = 0
        self.synced_ns = 0
        self.deliveries: list[tuple[int, int]] = []
        self.seen: set[tuple[str, int]] = set()
        self.redelivered = 0
        self.update_frames = 0
        self.frames_received = 0
        self.bytes_received = 0
        self.close_code: int | None = None
        self.error: str | None = None
        self.synced = asyncio.Event()
        self.closed = asyncio.Event()
        self.headers: dict[str, str] = {}
        self.keep = keep
        self.kept: list[tuple[int, bytes]] = []  # (received_ns, sync message) with `keep`
        self._transport: asyncio.Transport | None = None
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._head = bytearray()
        self._upgraded = False
        self._buffer = bytearray()
        self._close_sent = False

    # -- lifecycle ----------------------------------------------------------------------

    async def connect(self, *, timeout: float = 10) -> ThinClient:
        """Open the socket, upgrade, send SyncStep1 and wait for the server's SyncStep2."""
        self.started_ns = time.monotonic_ns()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: self, self.host, self.port)
            await self.synced.wait()
        return self

    @property
    def connect_ns(self) -> int:
        """From opening the TCP connection to reading the server's SyncStep2."""
        return self.synced_ns - self.started_ns if self.synced_ns else 0

    async def close(self, timeout: float = 5) -> None:
        """Send a close frame and wait (bounded) for the server to close the connection."""
        if self._transport is None or self._transport.is_closing():
            return
        self._send_close((1000).to_bytes(2, "big"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), timeout)
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self._transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self._upgraded:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HEAD_BYTES:
                    self._fail("no end of the handshake response")
                return
            head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            self._head.clear()
            if not self._upgrade(head):
                return
            data = rest
        self.bytes_received += len(data)
        self._buffer += data
        self._parse(now)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = repr(exc)
        self.closed.set()

    # -- internals ----------------------------------------------------------------------

    def _upgrade(self, head: bytes) -> bool:
        status, *lines = head.decode("latin-1").split("\r\n")
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if not status.startswith("HTTP/1.1 101"):
            self._fail(f"handshake refused: {status}")
            return False
        self._upgraded = True
        self._send(OP_BINARY, EMPTY_SYNC_STEP1)
        return True

    def _parse(self, now: int) -> None:
        """Handle every complete frame in the buffer; keep the partial one."""
        buffer = self._buffer
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length = second & 0x7F
            start = offset + 2
            if length == 126:
                if size - start < 2:
                    break
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            if second & 0x80:  # servers never mask
                self._fail("masked frame from the server")
                return
            if size - start < length:
                break
            if not first & 0x80:
                self._fail("fragmented frame (not expected from these servers)")
                return
            self._frame(first & 0x0F, bytes(buffer[start : start + length]), now)
            offset = start + length
        del buffer[:offset]

    def _frame(self, opcode: int, payload: bytes, now: int) -> None:
        self.frames_received += 1
        if opcode == OP_BINARY:
            self._message(payload, now)
        elif opcode == OP_PING:
            self._send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._send_close(payload[:2])  # the closing handshake's answer, unless we began it
            if self._transport is not None:
                self._transport.close()
        elif opcode in (OP_TEXT, OP_CONTINUATION):
            self._fail(f"unexpected frame opcode {opcode}")

    def _message(self, payload: bytes, now: int) -> None:
        if len(payload) < 2 or payload[0] != MESSAGE_SYNC:
            return  # awareness and the like: not this client's business
        kind = payload[1]
        if kind == SYNC_STEP1:
            self._send(OP_BINARY, EMPTY_SYNC_STEP2)
            return
        if kind == SYNC_UPDATE:
            self.update_frames += 1
        if self.keep:
            self.kept.append((now, payload))
        else:
            self._scan(payload, now)  # a late joiner's content arrives in its SyncStep2
        if kind == SYNC_STEP2 and not self.synced_ns:
            self.synced_ns = now
            self.synced.set()

    def replay(self) -> None:
        """Scan the kept frames for stamps, as if they had been scanned on arrival."""
        for received_ns, payload in self.kept:
            self._scan(payload, received_ns)

    def kept_stamps(self) -> int:
        """How many stamps the kept frames hold (a scan: call it rarely)."""
        return sum(len(_STAMP_BYTES.findall(payload)) for _, payload in self.kept)

    def time_to_count_ns(self, count: int) -> int | None:
        """When (monotonic ns) the stamps read reached `count`, after `replay()`."""
        if len(self.deliveries) < count:
            return None
        return max(received_ns for _, received_ns in self.deliveries[:count])

    def kept_updates(self) -> list[bytes]:
        """The Yjs updates of the kept SyncStep2 and update frames, in order."""
        return [_sync_payload(payload) for _, payload in self.kept]

    def _scan(self, payload: bytes, now: int) -> None:
        for match in _STAMP_BYTES.finditer(payload):
            key = (match[1].decode(), int(match[2]))
            if key in self.seen:
                self.redelivered += 1
                continue
            self.seen.add(key)
            self.deliveries.append((int(match[3]), now))

    def _send_close(self, payload: bytes) -> None:
        if not self._close_sent:
            self._close_sent = True
            self._send(OP_CLOSE, payload)

    def _send(self, opcode: int, payload: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode_client_frame(opcode, payload))

    def _fail(self, why: str) -> None:
        self.error = why
        if self._transport is not None:
            self._transport.abort()


def _sync_payload(message: bytes) -> bytes:
    """The update inside a sync message: [0, kind, varuint length, update]."""
    length = shift = 0
    index = 2
    while True:
        byte = message[index]
        length |= (byte & 0x7F) << shift
        index += 1
        if not byte & 0x80:
            break
        shift += 7
    return message[index : index + length]
