"""The gunicorn worker class: uvicorn, tuned for many long-lived WebSocket connections."""

from __future__ import annotations

from typing import Any

from collab_common import redaction
from collab_common.env import env_float, env_int
from collab_common.handshake import handshake_deadline_protocol
from collab_common.wsprotocol import AbortableWebSocketProtocol
from uvicorn_worker import UvicornWorker


def _ws_max_size() -> int:
    # Frames up to twice the protocol limit reach the application, which closes the
    # socket with 4413 and a reason; anything larger is cut off by the server (1009).
    return 2 * env_int("COLLAB_MAX_FRAME_BYTES", 2 * 1024 * 1024, minimum=1024)


def _handshake_timeout_seconds() -> float:
    # Read here, not in Django's settings: request heads are parsed by the server.
    return env_float("COLLAB_HANDSHAKE_TIMEOUT_SECONDS", 10.0, minimum=0.1)


def _count_dropped_handshake() -> None:
    # Imported on first use, in a worker: the gunicorn master imports this module before
    # it empties the metrics folder, and must not open metric files of its own.
    from collab import metrics

    metrics.REFUSED_CONNECTIONS.labels("handshake_timeout").inc()


class EditorWorker(UvicornWorker):
    """uvicorn with the sans-I/O WebSocket protocol and no per-message compression.

    Its HTTP protocol (httptools, as uvicorn's "auto" picks) closes connections whose
    request head is not complete within COLLAB_HANDSHAKE_TIMEOUT_SECONDS (slowloris).

    permessage-deflate keeps zlib state for every connection (tens of KB each) while
    Yjs updates are small binary deltas that barely compress; it is off on purpose.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn logs each WebSocket handshake with its query string, which may hold a token.
        redaction.install()

    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "auto",
        "http": handshake_deadline_protocol(_handshake_timeout_seconds(), _count_dropped_handshake),
        "ws": AbortableWebSocketProtocol,
        "ws_per_message_deflate": False,
        "ws_max_size": _ws_max_size(),
        "lifespan": "on",
        "proxy_headers": True,
        "server_header": False,
    }
