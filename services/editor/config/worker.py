"""The gunicorn worker class: uvicorn, tuned for many long-lived WebSocket connections."""

from __future__ import annotations

from typing import Any

from collab_common import redaction
from collab_common.env import env_int
from collab_common.wsprotocol import AbortableWebSocketProtocol
from uvicorn_worker import UvicornWorker


def _ws_max_size() -> int:
    # Frames up to twice the protocol limit reach the application, which closes the
    # socket with 4413 and a reason; anything larger is cut off by the server (1009).
    return 2 * env_int("COLLAB_MAX_FRAME_BYTES", 2 * 1024 * 1024, minimum=1024)


class EditorWorker(UvicornWorker):
    """uvicorn with the sans-I/O WebSocket protocol and no per-message compression.

    permessage-deflate keeps zlib state for every connection (tens of KB each) while
    Yjs updates are small binary deltas that barely compress; it is off on purpose.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn logs each WebSocket handshake with its query string, which may hold a token.
        redaction.install()

    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "auto",
        "http": "auto",
        "ws": AbortableWebSocketProtocol,
        "ws_per_message_deflate": False,
        "ws_max_size": _ws_max_size(),
        "lifespan": "on",
        "proxy_headers": True,
        "server_header": False,
    }
