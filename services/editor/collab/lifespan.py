"""ASGI lifespan: on shutdown, make every pending update durable before the process exits."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from collab import runtime

logger = logging.getLogger(__name__)


async def lifespan(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """At startup begin sampling process health; at shutdown flush the room registry."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            runtime.start_process_monitoring()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await runtime.shutdown()
            except Exception:
                logger.exception("flushing at shutdown failed")
            await send({"type": "lifespan.shutdown.complete"})
            return
