"""uvicorn's sans-I/O WebSocket protocol, plus a way for the application to drop a socket.

ASGI can only close a WebSocket with a close frame, and a client that stopped reading
never lets that frame out: the connection would stay open forever, holding its buffers.
This protocol puts `transport.abort` into the scope's extensions so that the
application can cut such a client off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

ABORT_EXTENSION = "collab.abort"


class AbortableWebSocketProtocol(WebSocketsSansIOProtocol):
    """Adds the `collab.abort` extension to every WebSocket scope."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:
            scope["extensions"][ABORT_EXTENSION] = self.transport.abort


def aborter(scope: dict[str, Any]) -> Callable[[], None] | None:
    """The function dropping this scope's connection, when the server offers one."""
    extension = scope.get("extensions", {}).get(ABORT_EXTENSION)
    return extension if callable(extension) else None
