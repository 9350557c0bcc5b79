"""uvicorn's sans-I/O WebSocket protocol, plus two extensions for the application.

- `collab.abort`: ASGI can only close a WebSocket with a close frame, and a client that
  stopped reading never lets that frame out: the connection would stay open forever,
  holding its buffers. `transport.abort` lets the application cut such a client off.
- `collab.send_now`: writes an already encoded binary message (`encode_binary`) at once
  when the socket can take it, and says False when it cannot (not open, or the
  transport paused writing because the client reads too slowly). A room sends every
  update to every peer: encoding the frame once for all of them, and writing it
  without an ASGI `send` coroutine and a task per peer, is most of a delivery's cost.
  Safe because server frames are unmasked and no extension (permessage-deflate) is
  negotiated: the bytes `websockets` would produce are the same for every socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

ABORT_EXTENSION = "collab.abort"
SEND_NOW_EXTENSION = "collab.send_now"


class AbortableWebSocketProtocol(WebSocketsSansIOProtocol):
    """Adds the `collab.abort` extension to every WebSocket scope."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:
            scope["extensions"][ABORT_EXTENSION] = self.transport.abort
            scope["extensions"][SEND_NOW_EXTENSION] = self.send_now

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.close" and self.close_timer is not None:
            # uvicorn closes the transport when the client has not answered the close in
            # time; a close waits for the write buffer to drain, which a client that
            # never reads never lets happen: abort in that case, close otherwise.
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self._close_or_abort)
        if self.handshake_complete and hasattr(self, "response"):
            # The handshake's request and response (headers and all, a few KB) are kept
            # by uvicorn for the life of the socket but never read again.
            del self.request
            del self.response

    def _close_or_abort(self) -> None:
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    def send_now(self, encoded: bytes) -> bool:
        """Write one encoded binary message if the socket is open and writable."""
        if (
            self.close_sent
            or self.conn.state is not State.OPEN
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(encoded)
        return True


def encode_binary(data: bytes) -> bytes:
    """A complete, unmasked, unfragmented binary frame carrying `data` (a server's frame)."""
    return Frame(Opcode.BINARY, data).serialize(mask=False, extensions=[])


def sender_now(scope: dict[str, Any]) -> Callable[[bytes], bool] | None:
    """The function writing a binary message at once, when the server offers one."""
    extension = scope.get("extensions", {}).get(SEND_NOW_EXTENSION)
    return extension if callable(extension) else None


def aborter(scope: dict[str, Any]) -> Callable[[], None] | None:
    """The function dropping this scope's connection, when the server offers one."""
    extension = scope.get("extensions", {}).get(ABORT_EXTENSION)
    return extension if callable(extension) else None
