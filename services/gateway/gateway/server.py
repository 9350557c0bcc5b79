"""Runs the gateway under uvicorn with a drain on SIGTERM and a handshake deadline."""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import cast

import uvicorn
from collab_common import logs
from collab_common.env import env_choice, env_str
from collab_common.handshake import handshake_deadline_protocol
from collab_common.wsprotocol import AbortableWebSocketProtocol

from gateway import metrics
from gateway.app import Gateway
from gateway.config import GatewayConfig
from gateway.relay import UPSTREAM_LOGGER

logger = logging.getLogger(__name__)


class GatewayServer(uvicorn.Server):
    """uvicorn.Server whose SIGTERM drains instead of closing everything at once."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway
        self._drain: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._drain is None and self.gateway.config.drain_seconds > 0:
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(self._start_drain)
            return
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        self.gateway.start_draining()
        await asyncio.sleep(self.gateway.config.drain_seconds)
        logger.info("drain period over: closing every connection with 1012")
        self.gateway.close_all()
        await asyncio.sleep(0.5)  # let relays send their close frames
        self.should_exit = True


def build_server(config: GatewayConfig) -> GatewayServer:
    """The configured server, ready to `run()`."""
    gateway = Gateway(config)
    uvicorn_config = uvicorn.Config(
        gateway,
        host=config.host,
        port=config.port,
        http=handshake_deadline_protocol(
            config.handshake_timeout_seconds,
            metrics.REFUSALS.labels("handshake_timeout").inc,
        ),
        ws=AbortableWebSocketProtocol,
        ws_per_message_deflate=False,
        ws_max_size=2 * config.max_frame_bytes,
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips=config.forwarded_allow_ips,
        server_header=False,
        access_log=False,  # request lines carry tokens in query strings
        log_config=None,  # uvicorn logs through the root handler: same format, redacted
        timeout_graceful_shutdown=5,
    )
    return GatewayServer(uvicorn_config, gateway)


def quiet_secret_bearing_loggers() -> None:
    """Keep loggers that write secrets at DEBUG above it, even when COLLAB_LOG_LEVEL=DEBUG.

    websockets logs every handshake header (cookies) and the first and last bytes of
    every frame (document content): both sides of a relay, the client side on uvicorn's
    logger (whose protocols read the level when a connection opens), the editor side on
    the relay's own. httpcore logs every response header (a login's Set-Cookie).
    """
    logs.keep_above_debug("uvicorn.error", UPSTREAM_LOGGER)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def main() -> None:
    """Entry point of `python -m gateway`."""
    logs.configure(
        cast(logs.LogFormat, env_choice("COLLAB_LOG_FORMAT", "plain", ("plain", "json"))),
        (env_str("COLLAB_LOG_LEVEL", "INFO") or "INFO").upper(),
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health check otherwise
    quiet_secret_bearing_loggers()
    server = build_server(GatewayConfig.from_env())
    logger.info("gateway listening on http://%s:%d/", server.config.host, server.config.port)
    server.run()
