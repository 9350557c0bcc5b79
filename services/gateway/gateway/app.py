"""The gateway's ASGI application: its own probes and metrics, relays for everything else."""

from __future__ import annotations

import asyncio
import logging
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import metrics
from gateway.config import GatewayConfig
from gateway.limits import AddressLimiter
from gateway.proxy import proxy_http, send_json
from gateway.relay import RelaySession
from gateway.upstreams import UpstreamPool

logger = logging.getLogger(__name__)


class Gateway:
    """Routes WebSockets to editors by document, proxies HTTP, answers its own probes."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.pool = UpstreamPool(config)
        self.limiter = AddressLimiter(config.max_connections_per_ip)
        # One client serves every visitor: it must never remember a response's cookies,
        # or it would hand one user's session to the next request without a Cookie header.
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=config.dial_timeout_seconds), cookies=no_cookies
        )
        self.draining = False
        # Set when the drain grace period is over: every relay closes with 1012.
        self.closing = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await RelaySession(self, scope, receive, send).run()
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/healthz":
            await send_json(send, 200, {"status": "ok"})
        elif path == "/readyz":
            ready = bool(self.pool.healthy) and not self.draining
            body = {
                "ready": ready,
                "healthy_upstreams": len(self.pool.healthy),
                "draining": self.draining,
            }
            await send_json(send, 200 if ready else 503, body)
        elif path == "/metrics":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                }
            )
            await send({"type": "http.response.body", "body": generate_latest()})
        else:
            await proxy_http(self, scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.pool.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.pool.stop()
                await self.http.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start_draining(self) -> None:
        """Fail readiness and refuse new connections; existing ones stay for the grace period."""
        if not self.draining:
            logger.info("draining: readiness fails, new connections are refused")
            self.draining = True
            metrics.DRAINING.set(1)

    def close_all(self) -> None:
        """End every relay with 1012 so clients reconnect through another gateway."""
        self.closing.set()
